"""The decisions of ``create_safely`` on states a demo server does not offer on demand (a VPS
that is not ready, every snapshot busy, slots sold in steps). Unit tests: no server."""

from __future__ import annotations

from typing import Any

import pytest

from vpsnap.client import CannotMakeRoom, QuantityOption, SnapshotList, VpsNotReady
from vpsnap.client._room import has_free_slot, oldest_to_delete
from vpsnap.client.models import Price

NO_ROOM = {"allowed": False, "reason": "All 2 slots are in use.", "code": "snapshot_limit_reached"}


def snapshot(name: str, status: str) -> dict[str, Any]:
    return {
        "displayId": name,
        "name": name,
        "description": None,
        "createdAt": "2026-04-27T10:00:00.000Z",
        "expiresAt": "2026-04-28T10:00:00.000Z",
        "includesMemoryState": False,
        "parentName": None,
        "status": status,
        "origin": "manual",
        "consistency": "crash",
    }


def listing(snapshots: list[dict[str, Any]], can_create: dict[str, Any]) -> SnapshotList:
    used = sum(s["status"] in ("creating", "available", "restoring") for s in snapshots)
    return SnapshotList.parse(
        "vps_1",
        {
            "data": snapshots,
            "limits": {"totalSnapshots": 2, "usedSnapshots": used, "remainingSnapshots": 0},
            "available": True,
            "reason": None,
            "actions": {"canCreate": can_create, "canRestore": NO_ROOM},
        },
    )


def test_a_vps_that_is_not_ready_is_reported_as_such() -> None:
    gate = {"allowed": False, "reason": "The service is suspended.", "code": "vps_not_ready"}
    with pytest.raises(VpsNotReady, match=r"^web: The service is suspended\.$"):
        has_free_slot("web", listing([], gate), "x")


def test_busy_snapshots_cannot_be_deleted_to_make_room() -> None:
    busy = listing([snapshot("a", "creating"), snapshot("b", "restoring")], NO_ROOM)
    assert has_free_slot("web", busy, "c") is False
    with pytest.raises(CannotMakeRoom) as refused:
        oldest_to_delete("web", busy)
    assert refused.value.reason_code == "all_snapshots_busy"
    assert "a (creating), b (restoring)" in str(refused.value)


def test_the_oldest_available_snapshot_is_the_one_deleted() -> None:
    mixed = listing([snapshot("a", "restoring"), snapshot("b", "available")], NO_ROOM)
    assert oldest_to_delete("web", mixed).name == "b"


@pytest.mark.parametrize(
    ("minimum", "maximum", "step", "total", "bought"),
    [(0, 10, 1, 3, 4), (0, 10, 2, 3, 4), (0, 10, 2, 4, 6), (2, 10, 2, 0, 2), (0, 10, 1, 10, None)],
)
def test_the_next_count_on_sale(
    minimum: int, maximum: int, step: int, total: int, bought: int | None
) -> None:
    option = QuantityOption(
        "snapshotSlots", "Slots", minimum, maximum, step, total, 0, Price("1.00", "EUR", "monthly")
    )
    assert option.next_value_above(total) == bought
