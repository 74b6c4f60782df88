"""Capacity: what the operator sells (plans, snapshot slots), what a change costs, and the
billing port a change is confirmed through.

Money is ``Decimal`` end to end (never float) and shown with exactly two decimals. Prices are
per billing cycle and are not prorated:

- ``recurring_amount``: what the VPS's slots cost per cycle *after* the change (slots beyond
  the ones its plan includes, times the unit price);
- ``additional_recurring_amount``: that minus what they cost now (negative when shrinking);
- ``amount``: what is charged now: the additional recurring amount when it is positive, else 0
  (shrinking never refunds the cycle already paid).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

from vpsnap.domain.errors import FieldError
from vpsnap.domain.model import Snapshot, Vps
from vpsnap.domain.rules import ALLOWED, Gate, service_gate

SNAPSHOT_SLOTS_KEY = "snapshotSlots"
CURRENCY_CODE_PATTERN = r"^[A-Z]{3}$"
_CURRENCY_RE = re.compile(CURRENCY_CODE_PATTERN)
# The cycles HostUp (WHMCS) bills in; a price in any other cycle is a configuration typo.
BILLING_CYCLES = (
    "monthly",
    "quarterly",
    "semiannually",
    "annually",
    "biennially",
    "triennially",
)
# A qcow2 image holds at most 65536 internal snapshots (QCOW_MAX_SNAPSHOTS): more slots than
# that could never be filled.
MAX_SNAPSHOT_SLOTS = 65536
CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def is_currency_code(value: str) -> bool:
    return _CURRENCY_RE.fullmatch(value) is not None


def format_amount(amount: Decimal) -> str:
    """Money as the API shows it: a string with exactly two decimals (``"3.00"``, ``"-2.00"``)."""
    rounded = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = ZERO  # never "-0.00"
    return str(rounded)


@dataclass(frozen=True, slots=True)
class Price:
    amount: Decimal
    currency_code: str
    billing_cycle: str


@dataclass(frozen=True, slots=True)
class Plan:
    """A product of the operator's; ``snapshot_slots`` are included in its price."""

    id: str
    name: str
    price: Price
    snapshot_slots: int


@dataclass(frozen=True, slots=True)
class SlotOption:
    """Snapshot slots for sale: any count ``min + k * step`` up to ``max``, ``unit_price`` each
    per cycle (beyond the slots the plan includes)."""

    min: int
    max: int
    step: int
    unit_price: Price
    label: str = "Snapshot slots"

    def allows(self, count: int) -> bool:
        return self.min <= count <= self.max and (count - self.min) % self.step == 0

    def refusal(self, count: int) -> str | None:
        """Why ``count`` cannot be bought, or None when it can."""
        if self.allows(count):
            return None
        if self.step == 1:
            return f"snapshotSlots must be between {self.min} and {self.max}; got {count}."
        return (
            f"snapshotSlots must be between {self.min} and {self.max} in steps of {self.step} "
            f"(starting at {self.min}); got {count}."
        )


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    """The operator's capacity configuration (see ``vpsnap.capacity_config`` for the file)."""

    snapshot_slots: SlotOption | None
    """None: the operator does not sell snapshot slots."""
    plans: tuple[Plan, ...] = ()
    default_snapshot_slots: int = 0
    """Slots included free of charge for a VPS on no plan (or on a plan not listed here)."""
    source: str = "built-in default"

    def plan(self, plan_id: str | None) -> Plan | None:
        if plan_id is None:
            return None
        return next((p for p in self.plans if p.id == plan_id), None)

    def included_slots(self, vps: Vps) -> int:
        plan = self.plan(vps.plan)
        return plan.snapshot_slots if plan is not None else self.default_snapshot_slots


BUILTIN_CAPACITY = CapacityConfig(
    snapshot_slots=SlotOption(
        min=0, max=10, step=1, unit_price=Price(Decimal("1.00"), "EUR", "monthly")
    ),
    plans=(),
    default_snapshot_slots=0,
)
"""Used when no capacity file is configured, so that the demo has something to buy."""


@dataclass(frozen=True, slots=True)
class PriceChange:
    amount: Decimal
    recurring_amount: Decimal
    additional_recurring_amount: Decimal
    currency_code: str
    billing_cycle: str


def recurring_cost(option: SlotOption, slots: int, *, included: int = 0) -> Decimal:
    """What ``slots`` snapshot slots cost per cycle when ``included`` of them are free."""
    return (max(slots - included, 0) * option.unit_price.amount).quantize(CENT)


def price_change(
    option: SlotOption, current: int, requested: int, *, included: int = 0
) -> PriceChange:
    """The price of going from ``current`` to ``requested`` slots (module docstring: meaning)."""
    before = recurring_cost(option, current, included=included)
    after = recurring_cost(option, requested, included=included)
    additional = after - before
    return PriceChange(
        amount=max(additional, ZERO),
        recurring_amount=after,
        additional_recurring_amount=additional,
        currency_code=option.unit_price.currency_code,
        billing_cycle=option.unit_price.billing_cycle,
    )


def slot_request_errors(
    option: SlotOption | None, resources: Mapping[str, object]
) -> list[FieldError]:
    """Field errors of a ``resources`` object (``/resources/<key>`` pointers); empty when valid."""
    errors = [
        FieldError(
            f"/resources/{_escape(key)}",
            f"Unknown resource {key!r}: only {SNAPSHOT_SLOTS_KEY!r} can be configured.",
            "unknown_field",
        )
        for key in resources
        if key != SNAPSHOT_SLOTS_KEY
    ]
    pointer = f"/resources/{SNAPSHOT_SLOTS_KEY}"
    if SNAPSHOT_SLOTS_KEY not in resources:
        errors.append(
            FieldError(pointer, f"{SNAPSHOT_SLOTS_KEY!r} is required.", "missing_required")
        )
        return errors
    value = resources[SNAPSHOT_SLOTS_KEY]
    # bool is an int in Python; `true` slots is a client bug, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(FieldError(pointer, "snapshotSlots must be an integer.", "invalid_type"))
    elif option is None:
        errors.append(
            FieldError(pointer, "This server does not sell snapshot slots.", "unknown_field")
        )
    else:
        refusal = option.refusal(value)
        if refusal is not None:
            errors.append(FieldError(pointer, refusal, "out_of_range"))
    return errors


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


# -- billing -------------------------------------------------------------------------------------

SLOTS_CHANGED_EVENT = "vps.snapshot_slots.changed"
SLOTS_CHANGE_ABORTED_EVENT = "vps.snapshot_slots.change_aborted"


@dataclass(frozen=True, slots=True)
class SlotChange:
    """One capacity change, as the billing system is told about it."""

    id: str
    """Unique per change; the billing side deduplicates on (event, id)."""
    vps_id: str
    account_id: str
    from_slots: int
    to_slots: int
    price_change: PriceChange
    occurred_at: datetime
    cancel_existing_invoice: bool = False


class BillingGateway(Protocol):
    """Where capacity changes are confirmed before they apply (the operator's billing)."""

    async def slots_changing(self, change: SlotChange) -> None:
        """Ask billing to accept ``change``; raise ``BillingUnavailable`` when it does not.

        Called before the change is applied and outside any database transaction.
        """
        ...

    async def slots_change_aborted(self, change: SlotChange, reason: str) -> None:
        """Tell billing that an accepted ``change`` was not applied after all (best effort:
        raise ``BillingUnavailable`` when the message could not be delivered)."""
        ...


# -- the commit gate ----------------------------------------------------------------------------


def commit_gate(vps: Vps, snapshots: Iterable[Snapshot], requested: int) -> Gate:
    """Whether ``requested`` slots can be committed on ``vps`` now (``canCommit``)."""
    gate = service_gate(vps)
    if not gate.allowed:
        return gate
    in_use = [s.name for s in snapshots if s.holds_slot]
    if requested < len(in_use):
        return Gate.refused(slots_in_use_reason(vps, in_use, requested), "snapshot_slots_in_use")
    return ALLOWED


def slots_in_use_reason(vps: Vps, in_use: list[str], requested: int) -> str:
    excess = len(in_use) - requested
    held = f"{len(in_use)} snapshot{'s' if len(in_use) != 1 else ''}"
    target = f"{requested} slot{'s' if requested != 1 else ''}"
    which = "it" if len(in_use) == 1 else f"at least {excess} of them"
    return (
        f"{vps.name} has {held} holding slots ({', '.join(in_use)}); delete {which} before "
        f"going down to {target}."
    )
