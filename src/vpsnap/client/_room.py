"""The decisions of ``create_safely`` (is there room, what to delete, how many slots to buy)
and the messages that say why room cannot be made and what the user can do. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from vpsnap.client.errors import (
    CannotMakeRoom,
    Forbidden,
    SnapshotNameTaken,
    error_class,
)
from vpsnap.client.models import ConfigResult, Snapshot, SnapshotList, UpgradeOptions

MakeRoom = Literal["fail", "delete-oldest", "buy-slot"]
MAKE_ROOM_CHOICES: tuple[str, ...] = get_args(MakeRoom)

_NO_ROOM_CODES = frozenset({"snapshot_limit_reached", "snapshots_not_included"})


@dataclass(frozen=True, slots=True)
class Step:
    """What ``create_safely`` is doing now, for a progress display or a log.

    ``action``: ``delete-oldest``, ``buy-slot``, ``create`` or ``wait`` (a job's status changed).
    """

    action: str
    message: str


def _clause(reason: str | None, default: str) -> str:
    """The server's reason (a sentence) as a clause of ours."""
    return (reason or default).rstrip(". ")


def _names(snapshots: tuple[Snapshot, ...], limit: int = 5) -> str:
    shown = ", ".join(f"{s.name} ({s.status})" for s in snapshots[:limit])
    return shown + (f", … {len(snapshots) - limit} more" if len(snapshots) > limit else "")


def has_free_slot(label: str, listing: SnapshotList, name: str) -> bool:
    """True when a snapshot can be created now, False when only a slot is missing; raises for
    anything that making room cannot fix."""
    gate = listing.actions.can_create
    if gate.code == "forbidden":
        raise Forbidden(
            f"this API key may not create snapshots of {label} "
            f"({_clause(gate.reason, 'missing scope')}). "
            "Use a key with the backup:vm scope.",
            extensions={"requiredScopes": ["backup:vm"]},
        )
    taken = listing.find(name)
    if taken is not None:
        raise SnapshotNameTaken(
            f"{label} already has a snapshot named {taken.name!r} ({taken.status}). "
            "Choose another name, or delete that snapshot first."
        )
    if gate.allowed:
        return True
    if gate.code in _NO_ROOM_CODES:
        return False
    code = gate.code or "conflict"
    raise error_class(code, 409)(
        f"{label}: {_clause(gate.reason, 'no snapshot can be taken now')}."
    )


def no_room(label: str, listing: SnapshotList) -> CannotMakeRoom:
    """The error of ``make_room="fail"``."""
    if not listing.available:
        return CannotMakeRoom(
            f"{label} has no snapshot slots: snapshots are not included in its plan.",
            'Buy a slot (make_room="buy-slot"), or ask your provider to add slots.',
            reason_code="snapshots_not_included",
        )
    total = listing.limits.total_snapshots
    return CannotMakeRoom(
        f"all {total} snapshot slot(s) of {label} are used: {_names(listing.snapshots)}.",
        'Delete a snapshot, or let vpsnap make room: make_room="delete-oldest" or '
        'make_room="buy-slot".',
        reason_code="snapshot_limit_reached",
    )


def oldest_to_delete(label: str, listing: SnapshotList) -> Snapshot:
    """The snapshot ``make_room="delete-oldest"`` deletes: the oldest *available* one (a busy
    snapshot cannot be deleted, and a failed one holds no slot)."""
    if not listing.available:
        raise CannotMakeRoom(
            f"{label} has no snapshot slots (not included in its plan): deleting frees none.",
            'Buy a slot (make_room="buy-slot"), or ask your provider to add slots.',
            reason_code="snapshots_not_included",
        )
    oldest = listing.oldest_available()
    if oldest is None:
        raise CannotMakeRoom(
            f"every snapshot slot of {label} holds a snapshot that is busy or being deleted: "
            f"{_names(listing.snapshots)}.",
            "Wait for their jobs to end, then try again.",
            reason_code="all_snapshots_busy",
        )
    return oldest


def slots_to_buy(label: str, listing: SnapshotList, options: UpgradeOptions) -> int:
    """The new total for ``make_room="buy-slot"``: the smallest count on sale above today's
    (``total + 1`` unless the operator sells slots in larger steps)."""
    option = options.snapshot_slots
    total = listing.limits.total_snapshots
    if option is None:
        raise CannotMakeRoom(
            f"{label} has no free snapshot slot, and this provider sells no snapshot slots.",
            'Delete a snapshot (make_room="delete-oldest"), or ask your provider.',
            reason_code="slots_not_sold",
        )
    target = option.next_value_above(total)
    if target is None:
        raise CannotMakeRoom(
            f"{label} already has {total} snapshot slot(s), the most that can be bought "
            f"({option.max}).",
            'Delete a snapshot instead (make_room="delete-oldest").',
            reason_code="max_slots_reached",
        )
    return target


def refused_purchase(label: str, preview: ConfigResult) -> CannotMakeRoom:
    gate = preview.can_commit
    return CannotMakeRoom(
        f"a snapshot slot cannot be bought for {label} now: {_clause(gate.reason, 'refused')}.",
        'Delete a snapshot (make_room="delete-oldest"), or try again later.',
        reason_code=gate.code or "conflict",
    )


def purchase_message(label: str, current: int, preview: ConfigResult) -> str:
    change = preview.price_change
    return (
        f"buying snapshot slots for {label}: {current} → {preview.snapshot_slots}, "
        f"{change.amount} {change.currency_code} now, "
        f"then {change.recurring_amount} {change.currency_code} {change.billing_cycle}"
    )
