"""Data stores (the filesystems that hold VPS disks) and the free-space guard.

QEMU pauses a guest when a write hits ENOSPC, and a snapshot with RAM state writes the whole
RAM into the qcow2 image, so vpsnap refuses a snapshot *before* it starts when the filesystem
would be left below a floor (docs/operations.md, "Disk space"):

    free - (RAM size if the snapshot includes memory state) - margin < floor  → refused

The API checks what the node's agent last published (``data_stores``); the job checks again
with a real ``statvfs`` right before it writes. A published observation older than
``stale_after`` is not trusted to refuse anything (the job's own check still runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vpsnap.domain.model import LaunchSpec, Vps


@dataclass(frozen=True, slots=True)
class DataStore:
    """One filesystem holding VPS disks on a node, as last observed (bytes)."""

    node: str
    path: str
    """Its mount point."""
    total_bytes: int
    free_bytes: int
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class VpsStorage:
    """Where a VPS's disks are and how much they take on disk (snapshots and saved RAM state
    live inside the qcow2 files, so they are included)."""

    vps_id: str
    node: str
    stores: tuple[str, ...]
    allocated_bytes: int
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class SpaceGuard:
    """The free-space rule (module docstring); sizes in bytes."""

    floor_bytes: int = 1024**3
    margin_bytes: int = 256 * 1024**2
    stale_after: timedelta = timedelta(minutes=5)

    def needed(self, vps: Vps, *, include_memory_state: bool) -> int:
        """Worst-case bytes a snapshot of ``vps`` writes: its RAM (with memory state) plus the
        margin (qcow2 metadata and the guest's writes while the job runs)."""
        return self.margin_bytes + (memory_bytes(vps) if include_memory_state else 0)

    def shortfall(self, free_bytes: int, needed: int) -> int:
        """How many bytes short of the floor the store would end up (0: enough)."""
        return max(0, self.floor_bytes - (free_bytes - needed))

    def is_fresh(self, store: DataStore, now: datetime) -> bool:
        return now - store.observed_at <= self.stale_after


def memory_bytes(vps: Vps) -> int:
    """The VM's RAM in bytes: the managed VM's own size, else the inventory's ``memoryGb``."""
    if isinstance(vps.machine, LaunchSpec):
        return vps.machine.memory_mib * 1024**2
    return int(vps.resources.memory_gb * 1024**3)


def describe_bytes(count: int) -> str:
    """``1.5 GiB``-style text for messages."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # pragma: no cover - the loop always returns


def space_refusal(
    vps: Vps,
    stores: list[DataStore],
    guard: SpaceGuard,
    *,
    include_memory_state: bool,
    now: datetime | None = None,
) -> str | None:
    """Why a snapshot of ``vps`` must be refused for lack of space on one of ``stores`` (the
    filesystems of its disks), or None. With ``now``, observations older than
    ``guard.stale_after`` are not trusted to refuse; without it every one counts (a ``statvfs``
    made this instant).

    The text is tenant-facing: it names neither paths nor the host's free space.
    """
    needed = guard.needed(vps, include_memory_state=include_memory_state)
    for store in stores:
        if now is not None and not guard.is_fresh(store, now):
            continue
        if guard.shortfall(store.free_bytes, needed) > 0:
            what = "RAM state included" if include_memory_state else "disks only"
            return (
                f"The storage holding the disks of {vps.name} is too low on free space for "
                f"this snapshot (it may need up to {describe_bytes(needed)}, {what}). Nothing "
                "was written. Delete snapshots you no longer need, or ask the operator to free "
                "space, then retry."
            )
    return None
