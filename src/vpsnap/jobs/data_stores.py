"""What a node's agent (embedded: the serve process) knows about its disks' filesystems.

- ``publish_data_stores``: a periodic task that measures, for every VPS of the node, the
  filesystems its disks are on (``statvfs``: free and total bytes) and how much its images take
  on disk, and stores that in the database, where the API (which in scale-out never sees a
  host's disks), the ``canCreate`` gate and ``/metrics`` read it.
- ``WriteGuard``: the job's own check with a real ``statvfs`` right before a snapshot is
  written, because a published observation can be a minute old.

Only paths vpsnap was given (the VPS's disks) are examined; a disk that cannot be examined
(missing, unreadable) is left out and refuses nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import InsufficientStorage
from vpsnap.domain.model import Vps
from vpsnap.domain.ports import Store, VpsFilter
from vpsnap.domain.storage import (
    DataStore,
    SpaceGuard,
    VpsStorage,
    describe_bytes,
    space_refusal,
)
from vpsnap.pacing import between_pages

log = structlog.get_logger("vpsnap.storage")

_PAGE = 500


def mount_point(path: str) -> str:
    """The mount point of the filesystem holding ``path`` (its real path: links resolved)."""
    current = Path(path).resolve()
    device = current.stat().st_dev
    while current.parent != current and current.parent.stat().st_dev == device:
        current = current.parent
    return str(current)


def measure(path: str, node: str, at: datetime) -> DataStore:
    """The filesystem of ``path`` now (``OSError`` when it cannot be examined)."""
    stats = os.statvfs(path)
    return DataStore(
        node=node,
        path=mount_point(path),
        total_bytes=stats.f_blocks * stats.f_frsize,
        # f_bavail, not f_bfree: what an unprivileged writer (QEMU) can still use.
        free_bytes=stats.f_bavail * stats.f_frsize,
        observed_at=at,
    )


def allocated_bytes(path: str) -> int:
    """Bytes the file takes on disk (a sparse qcow2 takes less than its size)."""
    return Path(path).stat().st_blocks * 512


def _observe(
    vpses: Iterable[Vps], node: str, at: datetime
) -> tuple[dict[str, DataStore], list[VpsStorage]]:
    stores: dict[str, DataStore] = {}
    usages: list[VpsStorage] = []
    for vps in vpses:
        paths: list[str] = []
        allocated = 0
        for disk in vps.disks:
            try:
                store = measure(disk, node, at)
                allocated += allocated_bytes(disk)
            except OSError:
                continue
            stores[store.path] = store
            paths.append(store.path)
        if paths:
            usages.append(VpsStorage(vps.id, node, tuple(dict.fromkeys(paths)), allocated, at))
    return stores, usages


async def publish_data_stores(store: Store, clock: Clock, node: str) -> int:
    """Measure the node's data stores and VPS allocations and store them, a page of VPSes at a
    time (paced, and a stop ends it between pages: ``vpsnap.pacing``); returns how many
    stores were seen."""
    stores: dict[str, DataStore] = {}
    after: str | None = None
    while True:
        async with store.transaction(read_only=True) as tx:
            page = await tx.list_vps(None, VpsFilter(node=node), after, _PAGE)
        # statvfs and stat can block on a slow or hung filesystem: never on the event loop.
        seen, usages = await asyncio.to_thread(_observe, page, node, clock.now())
        stores.update(seen)
        # One short write transaction per page: other writers (jobs, the API) wait for the
        # SQLite write lock at most one page's statements.
        async with store.transaction() as tx:
            await tx.save_vps_storage(usages)
        if len(page) < _PAGE:
            break
        after = page[-1].id
        await between_pages()
    async with store.transaction() as tx:
        for data_store in stores.values():
            await tx.save_data_store(data_store)
        await tx.remove_data_stores(node, list(stores))
    return len(stores)


def _current_stores(disks: tuple[str, ...], node: str, at: datetime) -> list[DataStore]:
    found: dict[str, DataStore] = {}
    for disk in disks:
        try:
            data_store = measure(disk, node, at)
        except OSError:
            continue
        found[data_store.path] = data_store
    return list(found.values())


@dataclass(frozen=True, slots=True)
class WriteGuard:
    """Refuses a snapshot right before it is written when the disks' filesystem would fall
    below the floor (``domain.storage``), measured this instant."""

    space: SpaceGuard
    clock: Clock

    async def before_write(self, vps: Vps, *, include_memory_state: bool) -> None:
        """Raise ``InsufficientStorage`` (nothing written yet) when space is short."""
        stores = await asyncio.to_thread(_current_stores, vps.disks, vps.node, self.clock.now())
        reason = space_refusal(vps, stores, self.space, include_memory_state=include_memory_state)
        if reason is None:
            return
        needed = self.space.needed(vps, include_memory_state=include_memory_state)
        # The operator's side of it, with the paths and numbers the tenant is not shown.
        log.warning(
            "snapshot_refused_for_space",
            vps_id=vps.id,
            stores={s.path: describe_bytes(s.free_bytes) for s in stores},
            needed=describe_bytes(needed),
            floor=describe_bytes(self.space.floor_bytes),
        )
        raise InsufficientStorage(reason, extensions={"neededBytes": needed})
