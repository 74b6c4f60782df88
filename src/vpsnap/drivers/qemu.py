"""QEMU hypervisor driver: qcow2 internal snapshots of VPSes whose VM is not running.

This is the offline half, done with ``qemu-img`` on the disk files. A running VM holds the write
lock on its disks, which surfaces as ``VpsNotReady``; snapshots of running VMs (over QMP) are a
separate, later piece that will sit next to these methods.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from vpsnap.domain.errors import (
    HypervisorError,
    SnapshotNameTaken,
    SnapshotNotFound,
    VpsNotReady,
)
from vpsnap.domain.model import Consistency, PowerAction, PowerState, Vps
from vpsnap.domain.ports import (
    PowerOutcome,
    RestoreOutcome,
    RestorePoint,
    SnapshotRequest,
    TakenSnapshot,
)
from vpsnap.domain.rules import name_key

if TYPE_CHECKING:
    from datetime import datetime

    from vpsnap.domain.ports import HypervisorDriver
    from vpsnap.drivers.qemu_img import ImageInfo, QemuImg

_log = structlog.get_logger(__name__)

_QCOW2 = "qcow2"


class QemuDriver:
    """``HypervisorDriver`` for stopped QEMU VMs with qcow2 disks."""

    def __init__(self, qemu_img: QemuImg) -> None:
        self._qemu_img = qemu_img

    async def probe(self) -> None:
        await self._qemu_img.version()

    async def power_state(self, vps: Vps) -> PowerState:
        # Without QMP the only thing to know offline is whether the disks are there at all.
        if not vps.disks:
            return PowerState.ERROR
        exists = await asyncio.gather(*(asyncio.to_thread(Path(d).exists) for d in vps.disks))
        return PowerState.STOPPED if all(exists) else PowerState.ERROR

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]:
        infos = await self._inspect(vps)
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

    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot:
        # A stopped VM has no RAM to save and no guest agent to quiesce, so include_memory_state
        # and quiesce do not change anything here: the result is always crash-consistent.
        name = request.name
        infos = await self._inspect(vps, require_qcow2=True)
        for disk, info in zip(vps.disks, infos, strict=True):
            # qcow2 would happily take a duplicate; vpsnap names are unique per VPS ignoring case.
            if any(name_key(s.name) == name_key(name) for s in info.snapshots):
                raise SnapshotNameTaken(f"a snapshot named {name} already exists on disk {disk}")

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

        return TakenSnapshot(consistency=Consistency.CRASH, includes_memory_state=False)

    async def delete_snapshot(self, vps: Vps, name: str) -> None:
        infos = await self._inspect(vps)
        for disk, info in zip(vps.disks, infos, strict=True):
            # Disks without it are fine: a re-run delete job finds some or all already gone.
            if info.snapshots_named(name):
                await self._qemu_img.delete_snapshot(disk, name)

    async def restore_snapshot(self, vps: Vps, name: str) -> RestoreOutcome:
        infos = await self._inspect(vps, require_qcow2=True)
        # Check every disk before reverting any, so a missing snapshot never leaves a VPS with
        # some disks rolled back and others not.
        for disk, info in zip(vps.disks, infos, strict=True):
            found = info.snapshots_named(name)
            if not found:
                raise SnapshotNotFound(f"snapshot {name} does not exist on disk {disk}")
            if len(found) > 1:
                raise HypervisorError(
                    f"disk {disk} has {len(found)} snapshots named {name}; "
                    "vpsnap will not guess which one to restore"
                )
        for disk in vps.disks:
            # apply_snapshot resolves the name to its id: qemu-img -a matches ids first.
            await self._qemu_img.apply_snapshot(disk, name)
        return RestoreOutcome(
            power_state_before=PowerState.STOPPED, power_state_after=PowerState.STOPPED
        )

    # -- helpers ---------------------------------------------------------------------------

    async def change_power(
        self,
        vps: Vps,
        action: PowerAction,  # noqa: ARG002 - the live half (QMP) acts on it
        *,
        force: bool = False,  # noqa: ARG002
    ) -> PowerOutcome:
        # Disk images alone have no VM to power. Managed and attached VMs are the live half's.
        raise VpsNotReady(
            f"VPS {vps.name} has no VM to power: it is registered with disk images only."
        )

    async def _inspect(self, vps: Vps, *, require_qcow2: bool = False) -> list[ImageInfo]:
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


if TYPE_CHECKING:
    # mypy proves the class satisfies the port; nothing runs.
    def _implements_port(driver: QemuDriver) -> HypervisorDriver:
        return driver
