"""Snapshots of stopped VMs: ``qemu-img`` on the qcow2 disk files.

A running VM holds the write lock on its disks, which surfaces as ``VpsNotReady``; the QEMU
driver (``vpsnap.drivers.qemu``) sends running VMs through QMP instead and uses this for the
rest.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from vpsnap.domain.errors import HypervisorError, SnapshotNameTaken, SnapshotNotFound
from vpsnap.domain.model import Consistency, PowerState, Vps
from vpsnap.domain.ports import (
    NOT_RUNNING_REASON,
    RestoreOutcome,
    RestorePoint,
    SnapshotRequest,
    TakenSnapshot,
)
from vpsnap.domain.rules import name_key

if TYPE_CHECKING:
    from datetime import datetime

    from vpsnap.drivers.qemu_img import DiskSnapshotInfo, ImageInfo, QemuImg

_log = structlog.get_logger(__name__)

_QCOW2 = "qcow2"


class DiskImages:
    """Snapshot operations on the disk images of a VPS whose VM is not running."""

    def __init__(self, qemu_img: QemuImg) -> None:
        self._qemu_img = qemu_img

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]:
        return restore_points(vps, await self.inspect(vps))

    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot:
        # A stopped VM has no RAM to save and no guest agent to quiesce, so include_memory_state
        # and quiesce do not change anything here: the result is always crash-consistent.
        name = request.name
        refuse_taken_name(vps, await self.inspect(vps, require_qcow2=True), name)

        done: list[str] = []
        for disk in vps.disks:
            try:
                await self._qemu_img.create_snapshot(disk, name)
            except BaseException as exc:
                # All disks or none: undo what this call created, including on this disk in case
                # qemu-img wrote the snapshot and then failed or was killed (the name was not
                # there before, so any snapshot with it now is ours).
                await self._roll_back_create(vps, name, done, failed_disk=disk, cause=exc)
                raise
            done.append(disk)

        return TakenSnapshot(
            consistency=Consistency.CRASH,
            includes_memory_state=False,
            consistency_reason=NOT_RUNNING_REASON,
        )

    async def delete_snapshot(self, vps: Vps, name: str) -> None:
        infos = await self.inspect(vps)
        for disk, info in zip(vps.disks, infos, strict=True):
            # Disks without it are fine: a re-run delete job finds some or all already gone.
            if info.snapshots_named(name):
                await self._qemu_img.delete_snapshot(disk, name)

    async def restore_snapshot(self, vps: Vps, name: str) -> RestoreOutcome:
        # Check every disk before reverting any, so a missing snapshot never leaves a VPS with
        # some disks rolled back and others not.
        restorable(vps, await self.inspect(vps, require_qcow2=True), name)
        for disk in vps.disks:
            # apply_snapshot resolves the name to its id: qemu-img -a matches ids first.
            await self._qemu_img.apply_snapshot(disk, name)
        return RestoreOutcome(
            power_state_before=PowerState.STOPPED, power_state_after=PowerState.STOPPED
        )

    # -- helpers ---------------------------------------------------------------------------

    async def inspect(self, vps: Vps, *, require_qcow2: bool = False) -> list[ImageInfo]:
        """``qemu-img info`` of every disk, in ``vps.disks`` order."""
        if not vps.disks:
            raise HypervisorError(f"VPS {vps.name} has no disks configured")
        results = await asyncio.gather(
            *(self._qemu_img.info(disk) for disk in vps.disks), return_exceptions=True
        )
        infos: list[ImageInfo] = []
        # gather waited for every qemu-img; report the first disk that failed, in disk order.
        for result in results:
            if isinstance(result, BaseException):
                raise result
            infos.append(result)
        if require_qcow2:
            for disk, info in zip(vps.disks, infos, strict=True):
                if info.format != _QCOW2:
                    raise HypervisorError(
                        f"disk {disk} is a {info.format} image; internal snapshots need qcow2 "
                        f"(convert it with: qemu-img convert -O qcow2 {disk} <new file>)"
                    )
        return infos

    async def _roll_back_create(
        self,
        vps: Vps,
        name: str,
        created: list[str],
        *,
        failed_disk: str,
        cause: BaseException,
    ) -> None:
        for disk in created:
            await self._delete_quietly(vps, disk, name, cause)
        try:
            info = await self._qemu_img.info(failed_disk)
        except Exception:
            # The disk that just failed may well be unreadable; nothing to undo can be seen.
            return
        if info.snapshots_named(name):
            await self._delete_quietly(vps, failed_disk, name, cause)

    async def _delete_quietly(self, vps: Vps, disk: str, name: str, cause: BaseException) -> None:
        try:
            await self._qemu_img.delete_snapshot(disk, name)
        except Exception as exc:
            # The original failure is what the caller must see; this one is attached to it.
            _log.warning(
                "snapshot_rollback_failed", vps_id=vps.id, disk=disk, snapshot=name, error=str(exc)
            )
            cause.add_note(
                f"rollback could not delete snapshot {name} from disk {disk}: {exc}; "
                "delete it by hand"
            )


@dataclass(slots=True)
class _MergedPoint:
    disks: list[str]
    vm_state_size: int
    created_at: datetime


def restore_points(vps: Vps, infos: list[ImageInfo]) -> list[RestorePoint]:
    """The snapshots of all disks merged by name, oldest first."""
    merged: dict[str, _MergedPoint] = {}
    for disk, info in zip(vps.disks, infos, strict=True):
        for snap in info.snapshots:
            point = merged.get(snap.name)
            if point is None:
                merged[snap.name] = _MergedPoint([disk], snap.vm_state_size, snap.created_at)
                continue
            # A name duplicated on one disk (made outside vpsnap) still lists the disk once.
            if disk not in point.disks:
                point.disks.append(disk)
            point.vm_state_size = max(point.vm_state_size, snap.vm_state_size)
            point.created_at = min(point.created_at, snap.created_at)
    ordered = sorted(merged.items(), key=lambda item: item[1].created_at)
    return [
        RestorePoint(
            name=name,
            disks=tuple(point.disks),
            vm_state_size=point.vm_state_size,
            created_at=point.created_at,
        )
        for name, point in ordered
    ]


def refuse_taken_name(vps: Vps, infos: list[ImageInfo], name: str) -> None:
    for disk, info in zip(vps.disks, infos, strict=True):
        # qcow2 would happily take a duplicate; vpsnap names are unique per VPS ignoring case.
        if any(name_key(s.name) == name_key(name) for s in info.snapshots):
            raise SnapshotNameTaken(f"a snapshot named {name} already exists on disk {disk}")


def restorable(vps: Vps, infos: list[ImageInfo], name: str) -> list[DiskSnapshotInfo]:
    """The one snapshot called ``name`` on each disk; raises unless every disk has exactly one."""
    found: list[DiskSnapshotInfo] = []
    for disk, info in zip(vps.disks, infos, strict=True):
        matches = info.snapshots_named(name)
        if not matches:
            raise SnapshotNotFound(f"snapshot {name} does not exist on disk {disk}")
        if len(matches) > 1:
            raise HypervisorError(
                f"disk {disk} has {len(matches)} snapshots named {name}; "
                "vpsnap will not guess which one to restore"
            )
        found.append(matches[0])
    return found
