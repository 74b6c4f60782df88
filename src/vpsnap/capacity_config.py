"""The operator's capacity file (TOML) → ``CapacityConfig``, validated by a pydantic model.

Keys are spelled as in the API (``snapshotSlots``, ``unitPrice``, ``currencyCode``). Every
error names the file and the key (``capacity.toml: snapshotSlots.max: …``), and unknown keys
are errors too: a typo must never silently change what customers pay. ``docs/capacity.md`` is
the reference; ``examples/capacity.toml`` a complete example.

The models below say what is valid; their validators raise the messages operators read, and
``_first_problem`` turns pydantic's first error into ``<file>: <key>: <message>``.

Loading reads a file synchronously: it runs once while the runtime is built, before the event
loop serves anything.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from vpsnap.domain.capacity import (
    BILLING_CYCLES,
    BUILTIN_CAPACITY,
    CENT,
    MAX_SNAPSHOT_SLOTS,
    CapacityConfig,
    Plan,
    Price,
    SlotOption,
    is_currency_code,
)
from vpsnap.domain.errors import CapacityConfigError

# Far above any real price, and small enough that cent arithmetic stays exact.
MAX_AMOUNT = Decimal("999999999.99")
# The `plan` column of a VPS holds at most 100 characters.
_PLAN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def load_capacity_config(path: Path | None) -> CapacityConfig:
    """The configuration in ``path``, or the built-in default when no file is configured."""
    if path is None:
        return BUILTIN_CAPACITY
    try:
        with path.open("rb") as handle:
            # Decimal, never float: "1.10" must stay exactly 1.10.
            data = tomllib.load(handle, parse_float=Decimal)
    except OSError as exc:
        raise CapacityConfigError(f"{path}: cannot read the capacity file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CapacityConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_capacity_config(data, source=str(path))


def parse_capacity_config(data: Mapping[str, Any], *, source: str) -> CapacityConfig:
    """Validate parsed TOML; raises ``CapacityConfigError`` naming ``source`` and the key."""
    try:
        model = _CapacityFile.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        # As a reader walks a table: an unknown key (a typo) is what to fix first, before
        # whatever it leaves missing.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        key, message = _first_problem(first)
        raise CapacityConfigError(f"{source}: {key}: {message}") from None
    option = model.snapshotSlots
    return CapacityConfig(
        snapshot_slots=(
            SlotOption(
                min=option.min,
                max=option.max,
                step=option.step,
                unit_price=option.unitPrice.price(),
                label=option.label,
            )
            if option is not None
            else None
        ),
        plans=tuple(
            Plan(id=p.id, name=p.name, price=p.price.price(), snapshot_slots=p.snapshotSlots)
            for p in model.plans
        ),
        default_snapshot_slots=model.defaultSnapshotSlots,
        source=source,
    )


# -- the model -----------------------------------------------------------------------------------


def _problem(message: str, *at: str | int) -> PydanticCustomError:
    """An error with our message; ``at`` continues its location below the validated value."""
    return PydanticCustomError("capacity", "{message}", {"message": message, "at": at})


def _count(value: object, minimum: int) -> int:
    # bool is an int in Python; `min = true` is a typo, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _problem(f"must be an integer, not {_kind(value)}")
    if value < minimum:
        raise _problem(f"must be at least {minimum}, got {value}")
    if value > MAX_SNAPSHOT_SLOTS:
        raise _problem(
            f"must be at most {MAX_SNAPSHOT_SLOTS} (a qcow2 image holds no more snapshots), "
            f"got {value}"
        )
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _problem("must be a non-empty string")
    return value


def _amount(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _problem(f'must be a number or a string like "1.00", not {_kind(value)}')
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise _problem(f"{value!r} is not a number") from None
    if not amount.is_finite():
        raise _problem(f"{value!r} is not a finite number")
    if amount < 0:
        raise _problem(f"must not be negative, got {amount}")
    if amount > MAX_AMOUNT:
        raise _problem(f"must be at most {MAX_AMOUNT}, got {amount}")
    if amount != amount.quantize(CENT):
        raise _problem(f"has more than two decimals ({value!r}); prices are in cents")
    return amount


def _currency(value: str) -> str:
    if not is_currency_code(value):
        raise _problem(
            f"must be an ISO 4217 code of three capital letters (like EUR), got {value!r}"
        )
    return value


def _cycle(value: str) -> str:
    if value not in BILLING_CYCLES:
        raise _problem(f"must be one of {', '.join(BILLING_CYCLES)}; got {value!r}")
    return value


def _plan_id(value: str) -> str:
    if _PLAN_ID_RE.fullmatch(value) is None:
        raise _problem(f"must be 1-100 letters, digits, '.', '_' or '-'; got {value!r}")
    return value


Count = Annotated[int, BeforeValidator(lambda v: _count(v, 0))]
Step = Annotated[int, BeforeValidator(lambda v: _count(v, 1))]
Text = Annotated[str, BeforeValidator(_text)]
Amount = Annotated[Decimal, BeforeValidator(_amount)]


class _Table(BaseModel):
    # Unknown keys are errors; TOML values are taken as they are (no coercion: "3" is no 3).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Price(_Table):
    amount: Amount
    currencyCode: Annotated[Text, AfterValidator(_currency)]  # noqa: N815 - the file's keys
    billingCycle: Annotated[Text, AfterValidator(_cycle)]  # noqa: N815

    def price(self) -> Price:
        return Price(self.amount, self.currencyCode, self.billingCycle)


class _SlotOption(_Table):
    label: Text = "Snapshot slots"
    min: Count
    max: Count
    step: Step = 1
    unitPrice: _Price  # noqa: N815

    @model_validator(mode="after")
    def _range(self) -> _SlotOption:
        if self.min > self.max:
            raise _problem(f"must not be above max ({self.min} > {self.max})", "min")
        if (self.max - self.min) % self.step:
            # Otherwise the advertised maximum could never be bought.
            raise _problem(
                f"must be min plus a multiple of step ({self.min} + k * {self.step}), "
                f"got {self.max}",
                "max",
            )
        return self


class _Plan(_Table):
    id: Annotated[Text, AfterValidator(_plan_id)]
    name: Text
    price: _Price
    snapshotSlots: Count = 0  # noqa: N815


class _CapacityFile(_Table):
    defaultSnapshotSlots: Count = 0  # noqa: N815
    snapshotSlots: _SlotOption | None = None  # noqa: N815
    plans: list[_Plan] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_plans(self) -> _CapacityFile:
        seen: set[str] = set()
        for index, plan in enumerate(self.plans):
            if plan.id in seen:
                raise _problem(f"plan id {plan.id!r} is used twice", "plans", index, "id")
            seen.add(plan.id)
        return self


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class of the table at ``loc`` (for the keys allowed there)."""
    model: type[BaseModel] | None = _CapacityFile
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return model


def _key(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _first_problem(error: ErrorDetails) -> tuple[str, str]:
    """``(key, message)`` of one pydantic error, in the file's words."""
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "capacity":
        return _key(loc + tuple(ctx.get("at", ()))), str(ctx["message"])
    if kind == "missing":
        return _key(loc), "is required"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = ", ".join(sorted(model.model_fields)) if model else "?"
        return _key(loc), f"unknown key (allowed here: {allowed})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return _key(loc), f"must be a table, not {_kind(error['input'])}"
    if kind == "list_type":
        return _key(loc), f"must be an array of tables ([[plans]]), not {_kind(error['input'])}"
    return _key(loc), str(error["msg"])


def _kind(value: object) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", Decimal: "a number"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
