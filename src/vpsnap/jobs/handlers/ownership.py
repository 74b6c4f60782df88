"""What vpsnap may treat as its own on a disk (docs/how-snapshots-work.md, "Ownership").

Invariant: vpsnap deletes (or rolls back to) a snapshot on disk only when it can prove it wrote
it: a snapshot row with the hypervisor's creation date recorded when vpsnap made it, or an open
write intent of the job that was about to write it. A name alone proves nothing: anyone with
``qemu-img`` can make a snapshot of any name.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from vpsnap.domain.ports import RestorePoint
from vpsnap.domain.rules import name_key

# qcow2 keeps nanoseconds; both readers (the header reader and qemu-img's JSON) round to the
# same microsecond, and the database keeps microseconds. A millisecond absorbs any rounding.
_SAME_MOMENT = timedelta(milliseconds=1)


def find_point(points: Iterable[RestorePoint], name: str) -> RestorePoint | None:
    """The restore point called exactly ``name``."""
    return next((p for p in points if p.name == name), None)


def clashing_point(points: Iterable[RestorePoint], name: str) -> RestorePoint | None:
    """A restore point whose name equals ``name`` ignoring case (vpsnap's uniqueness rule)."""
    return next((p for p in points if name_key(p.name) == name_key(name)), None)


def same_moment(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= _SAME_MOMENT


def is_the_recorded_one(point: RestorePoint, recorded: datetime | None) -> bool:
    """Whether ``point`` is the snapshot vpsnap recorded making (creation date ``recorded``).

    Rows from before vpsnap recorded dates (None) are vpsnap's by the row alone.
    """
    return recorded is None or same_moment(point.created_at, recorded)
