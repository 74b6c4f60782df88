"""Snapshot schedules (one per VPS): interval rules, names of scheduled snapshots, rotation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from vpsnap.domain.model import Snapshot, SnapshotOrigin, SnapshotStatus

MIN_INTERVAL_HOURS = 4
MAX_INTERVAL_HOURS = 24


@dataclass(frozen=True, slots=True)
class Schedule:
    vps_id: str
    enabled: bool
    interval_hours: int
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_run_status: str | None
    created_at: datetime
    updated_at: datetime


def clamp_interval(hours: float) -> int:
    """The contract: floored, then clamped to 4..24."""
    return min(max(math.floor(hours), MIN_INTERVAL_HOURS), MAX_INTERVAL_HOURS)


def scheduled_name(moment: datetime) -> str:
    """``auto-YYYYMMDD-HHMM`` in UTC."""
    return "auto-" + moment.strftime("%Y%m%d-%H%M")


def rotation_victim(snapshots: Iterable[Snapshot]) -> Snapshot | None:
    """The snapshot a scheduled run may delete to make room: the oldest *scheduled* one that
    is available. Manual snapshots are never chosen."""
    candidates = [
        s
        for s in snapshots
        if s.origin is SnapshotOrigin.SCHEDULED and s.status is SnapshotStatus.AVAILABLE
    ]
    return min(candidates, key=lambda s: (s.created_at, s.name), default=None)
