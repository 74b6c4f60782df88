"""The operator's capacity file (TOML) → ``CapacityConfig``.

Keys are spelled as in the API (``snapshotSlots``, ``unitPrice``, ``currencyCode``). Every
error names the file and the key (``capacity.toml: snapshotSlots.max: …``), and unknown keys
are errors too: a typo must never silently change what customers pay. ``docs/capacity.md`` is
the reference; ``examples/capacity.toml`` a complete example.

Loading reads a file synchronously: it runs once while the runtime is built, before the event
loop serves anything.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

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

_TOP_KEYS = frozenset({"defaultSnapshotSlots", "snapshotSlots", "plans"})
_OPTION_KEYS = frozenset({"label", "min", "max", "step", "unitPrice"})
_PRICE_KEYS = frozenset({"amount", "currencyCode", "billingCycle"})
_PLAN_KEYS = frozenset({"id", "name", "price", "snapshotSlots"})


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
    reader = _Reader(source)
    reader.no_unknown_keys(data, _TOP_KEYS, "")
    default_slots = reader.count(data, "defaultSnapshotSlots", "", default=0)
    option = reader.option(data["snapshotSlots"]) if "snapshotSlots" in data else None
    plans = reader.plans(data.get("plans", []))
    return CapacityConfig(
        snapshot_slots=option,
        plans=plans,
        default_snapshot_slots=default_slots,
        source=source,
    )


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> CapacityConfigError:
        return CapacityConfigError(f"{self.source}: {key}: {message}")

    @staticmethod
    def key(prefix: str, name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    def table(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a table, not {_kind(value)}")
        return value

    def no_unknown_keys(self, table: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
        for name in table:
            if name not in known:
                allowed = ", ".join(sorted(known))
                raise self.fail(self.key(prefix, name), f"unknown key (allowed here: {allowed})")

    def required(self, table: Mapping[str, Any], name: str, prefix: str) -> object:
        if name not in table:
            raise self.fail(self.key(prefix, name), "is required")
        return table[name]

    def count(
        self,
        table: Mapping[str, Any],
        name: str,
        prefix: str,
        *,
        default: int | None = None,
        minimum: int = 0,
    ) -> int:
        key = self.key(prefix, name)
        if name not in table and default is not None:
            return default
        value = self.required(table, name, prefix)
        # bool is an int in Python; `min = true` is a typo, not 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, f"must be an integer, not {_kind(value)}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        if value > MAX_SNAPSHOT_SLOTS:
            raise self.fail(
                key,
                f"must be at most {MAX_SNAPSHOT_SLOTS} (a qcow2 image holds no more "
                f"snapshots), got {value}",
            )
        return value

    def text(self, table: Mapping[str, Any], name: str, prefix: str) -> str:
        value = self.required(table, name, prefix)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(self.key(prefix, name), "must be a non-empty string")
        return value

    def amount(self, table: Mapping[str, Any], prefix: str) -> Decimal:
        key = self.key(prefix, "amount")
        value = self.required(table, "amount", prefix)
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise self.fail(key, f'must be a number or a string like "1.00", not {_kind(value)}')
        try:
            amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
        except InvalidOperation:
            raise self.fail(key, f"{value!r} is not a number") from None
        if not amount.is_finite():
            raise self.fail(key, f"{value!r} is not a finite number")
        if amount < 0:
            raise self.fail(key, f"must not be negative, got {amount}")
        if amount > MAX_AMOUNT:
            raise self.fail(key, f"must be at most {MAX_AMOUNT}, got {amount}")
        if amount != amount.quantize(CENT):
            raise self.fail(key, f"has more than two decimals ({value!r}); prices are in cents")
        return amount

    def price(self, value: object, prefix: str) -> Price:
        table = self.table(value, prefix)
        self.no_unknown_keys(table, _PRICE_KEYS, prefix)
        amount = self.amount(table, prefix)
        currency = self.text(table, "currencyCode", prefix)
        if not is_currency_code(currency):
            raise self.fail(
                self.key(prefix, "currencyCode"),
                f"must be an ISO 4217 code of three capital letters (like EUR), got {currency!r}",
            )
        cycle = self.text(table, "billingCycle", prefix)
        if cycle not in BILLING_CYCLES:
            raise self.fail(
                self.key(prefix, "billingCycle"),
                f"must be one of {', '.join(BILLING_CYCLES)}; got {cycle!r}",
            )
        return Price(amount, currency, cycle)

    def option(self, value: object) -> SlotOption:
        prefix = "snapshotSlots"
        table = self.table(value, prefix)
        self.no_unknown_keys(table, _OPTION_KEYS, prefix)
        label = self.text(table, "label", prefix) if "label" in table else "Snapshot slots"
        low = self.count(table, "min", prefix)
        high = self.count(table, "max", prefix)
        step = self.count(table, "step", prefix, default=1, minimum=1)
        if low > high:
            raise self.fail(f"{prefix}.min", f"must not be above max ({low} > {high})")
        if (high - low) % step:
            # Otherwise the advertised maximum could never be bought.
            raise self.fail(
                f"{prefix}.max",
                f"must be min plus a multiple of step ({low} + k * {step}), got {high}",
            )
        unit_price = self.price(self.required(table, "unitPrice", prefix), f"{prefix}.unitPrice")
        return SlotOption(min=low, max=high, step=step, unit_price=unit_price, label=label)

    def plans(self, value: object) -> tuple[Plan, ...]:
        if not isinstance(value, list):
            raise self.fail("plans", f"must be an array of tables ([[plans]]), not {_kind(value)}")
        plans: list[Plan] = []
        seen: set[str] = set()
        for index, item in enumerate(value):
            prefix = f"plans[{index}]"
            table = self.table(item, prefix)
            self.no_unknown_keys(table, _PLAN_KEYS, prefix)
            plan_id = self.text(table, "id", prefix)
            if _PLAN_ID_RE.fullmatch(plan_id) is None:
                raise self.fail(
                    f"{prefix}.id",
                    f"must be 1-100 letters, digits, '.', '_' or '-'; got {plan_id!r}",
                )
            if plan_id in seen:
                raise self.fail(f"{prefix}.id", f"plan id {plan_id!r} is used twice")
            seen.add(plan_id)
            plans.append(
                Plan(
                    id=plan_id,
                    name=self.text(table, "name", prefix),
                    price=self.price(self.required(table, "price", prefix), f"{prefix}.price"),
                    snapshot_slots=self.count(table, "snapshotSlots", prefix, default=0),
                )
            )
        return tuple(plans)


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
