"""Snapshots of stopped VMs: ``qemu-img`` on the qcow2 disk files.

A running VM holds the write lock on its disks, which surfaces as ``VpsNotReady``; the QEMU
driver (``vpsnap.drivers.qemu``) sends running VMs through QMP instead and uses this for the
rest. Errors name disks as the customer knows them ("disk 2 of web-1", ``disk_label``); image
paths go to ``log_detail`` only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from vpsnap.domain.errors import (
    DiskUnusable,
    DomainError,
    RestoreIncomplete,
    SnapshotAmbiguous,
    SnapshotNameTaken,
    SnapshotNotFound,
)
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


def disk_label(vps: Vps, disk: str) -> str:
    """How a disk is named to the customer: its place among the VPS's disks, never its path."""
    try:
        index = vps.disks.index(disk)
    except ValueError:
        return f"a disk of {vps.name}"
    return f"disk {index + 1} of {vps.name}"


def sentence(text: str) -> str:
    """``text`` with its first letter upper case (``str.capitalize`` would lower a VPS name)."""
    return text[:1].upper() + text[1:]


def disk_labels(vps: Vps, disks: list[str] | tuple[str, ...]) -> str:
    """ "disks 1 and 2 of web-1" style (the customer's words for several disks)."""
    numbers = [str(vps.disks.index(d) + 1) for d in disks if d in vps.disks]
    if not numbers:
        return f"no disk of {vps.name}"
    if len(numbers) == 1:
        return f"disk {numbers[0]} of {vps.name}"
    return f"disks {', '.join(numbers[:-1])} and {numbers[-1]} of {vps.name}"


class DiskImages:
    """Snapshot operations on the disk images of a VPS whose VM is not running."""

    def __init__(self, qemu_img: QemuImg) -> None:
        self._qemu_img = qemu_img

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]:
        # A registered disk that is not qcow2 (any more: a damaged header reads as raw) cannot
        # say which snapshots it holds; "none" would be a wrong answer, so it is an error.
        return restore_points(vps, await self.inspect(vps, require_qcow2=True))

    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot:
        # A stopped VM has no RAM to save and no guest agent to quiesce, so include_memory_state
        # and quiesce do not change anything here: the result is always crash-consistent.
        name = request.name
        refuse_taken_name(vps, await self.inspect(vps, require_qcow2=True), name)

        done: list[str] = []
        for disk in vps.disks:
            try:
                await self._qemu_img.create_snapshot(disk, name, label=disk_label(vps, disk))
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
        holders = [
            d for d, info in zip(vps.disks, infos, strict=True) if info.snapshots_named(name)
        ]
        # Disks without it are fine: a re-run delete job finds some or all already gone.
        refuse_ambiguous(vps, infos, name, "delete")
        done: list[str] = []
        for disk in holders:
            try:
                await self._qemu_img.delete_snapshot(disk, name, label=disk_label(vps, disk))
            except DomainError as exc:
                raise_partial_delete(vps, name, done, disk, exc)
            done.append(disk)

    async def restore_snapshot(self, vps: Vps, name: str) -> RestoreOutcome:
        """Roll every disk back; all-or-nothing up to the first ``qemu-img -a`` that fails.

        Every disk is checked before any is reverted, so a missing or ambiguous snapshot leaves
        the VPS untouched. A failure after disk 1 was reverted raises ``RestoreIncomplete``
        naming the disks that were rolled back and those that were not.
        """
        restorable(vps, await self.inspect(vps, require_qcow2=True), name)
        await self.apply_all(vps, name)
        return RestoreOutcome(
            power_state_before=PowerState.STOPPED, power_state_after=PowerState.STOPPED
        )

    async def apply_all(self, vps: Vps, name: str) -> None:
        """``qemu-img snapshot -a`` on every disk, in order (the VM is not running, and stays
        so when this fails half-way)."""
        done: list[str] = []
        for disk in vps.disks:
            try:
                # apply_snapshot resolves the name to its id: qemu-img -a matches ids first.
                await self._qemu_img.apply_snapshot(disk, name, label=disk_label(vps, disk))
            except DomainError as exc:
                if not done:
                    raise  # nothing changed yet: the plain error says all there is
                raise RestoreIncomplete(
                    f"Restoring snapshot {name} of {vps.name} stopped part-way: it rolled back "
                    f"{disk_labels(vps, done)}, but not "
                    f"{disk_labels(vps, [d for d in vps.disks if d not in done])} "
                    f"({exc.detail}). The VM is stopped; its disks are not at one "
                    "point in time. Restore again once the cause is fixed (every disk is rolled "
                    "back again), before starting it.",
                    extensions={
                        "disksRestored": [vps.disks.index(d) + 1 for d in done],
                        "disksNotRestored": [
                            i + 1 for i, d in enumerate(vps.disks) if d not in done
                        ],
                        "memoryRestored": False,
                        "powerStateAfter": PowerState.STOPPED.value,
                    },
                    log_detail=exc.log_detail or exc.detail,
                ) from exc
            done.append(disk)

    # -- helpers ---------------------------------------------------------------------------

    async def inspect(self, vps: Vps, *, require_qcow2: bool = False) -> list[ImageInfo]:
        """``qemu-img info`` of every disk, in ``vps.disks`` order."""
        if not vps.disks:
            raise DiskUnusable(f"VPS {vps.name} has no disks configured.")
        results = await asyncio.gather(
            *(self._qemu_img.info(disk, label=disk_label(vps, disk)) for disk in vps.disks),
            return_exceptions=True,
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
                    raise DiskUnusable(
                        f"{sentence(disk_label(vps, disk))} is a {info.format} image; internal "
                        "snapshots need qcow2.",
                        log_detail=f"{disk} is {info.format}; convert it with: qemu-img convert "
                        f"-O qcow2 {disk} <new file>",
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
        left = [disk for disk in created if not await self._delete_quietly(vps, disk, name)]
        try:
            info = await self._qemu_img.info(failed_disk, label=disk_label(vps, failed_disk))
        except Exception:
            # The disk that just failed may well be unreadable; nothing to undo can be seen.
            info = None
        if (
            info is not None
            and info.snapshots_named(name)
            and not await self._delete_quietly(vps, failed_disk, name)
        ):
            left.append(failed_disk)
        if left:
            note_leftover(vps, name, left, cause)

    async def _delete_quietly(self, vps: Vps, disk: str, name: str) -> bool:
        """Delete this attempt's snapshot from one disk; False (logged) when that failed."""
        try:
            await self._qemu_img.delete_snapshot(disk, name, label=disk_label(vps, disk))
        except Exception as exc:
            _log.warning(
                "snapshot_rollback_failed",
                vps_id=vps.id,
                disk=disk,
                snapshot=name,
                error=getattr(exc, "log_detail", None) or str(exc),
            )
            return False
        return True


def note_leftover(vps: Vps, name: str, disks: list[str], cause: BaseException) -> None:
    """Say in the failure itself that the rollback of a failed create left ``name`` on
    ``disks`` (the tenant reads ``detail``; an exception note would reach nobody)."""
    text = (
        f" Snapshot {name} could not be removed again from {disk_labels(vps, disks)}; it is "
        "left there for the provider (or vpsnap's reconciliation) to remove."
    )
    if isinstance(cause, DomainError):
        cause.detail += text
        cause.extensions = {
            **cause.extensions,
            "leftOnDisks": [vps.disks.index(d) + 1 for d in disks],
        }
    else:
        cause.add_note(text.strip())


def raise_partial_delete(
    vps: Vps, name: str, done: list[str], failed: str, exc: DomainError
) -> None:
    """Re-raise a failed delete, saying which disks it already left (the code stays the
    cause's: a re-run delete finishes what is left, so whether retrying helps is the cause's
    to say)."""
    if done:
        exc.detail = (
            f"Deleting snapshot {name} stopped part-way: it is gone from "
            f"{disk_labels(vps, done)} but still on {disk_label(vps, failed)} ({exc.detail}). "
            "Deleting it again finishes the job."
        )
        exc.extensions = {
            **exc.extensions,
            "deletedFromDisks": [vps.disks.index(d) + 1 for d in done],
        }
    raise exc


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
            raise SnapshotNameTaken(
                f"a snapshot named {name} already exists on {disk_label(vps, disk)}"
            )


def refuse_ambiguous(vps: Vps, infos: list[ImageInfo], name: str, verb: str) -> None:
    """``SnapshotAmbiguous`` when a disk holds ``name`` more than once (made outside vpsnap)."""
    for disk, info in zip(vps.disks, infos, strict=True):
        matches = info.snapshots_named(name)
        if len(matches) > 1:
            raise SnapshotAmbiguous(
                f"{sentence(disk_label(vps, disk))} has {len(matches)} snapshots named "
                f"{name}; vpsnap will not guess which one to {verb}. The provider must rename "
                "or delete the extra ones.",
                log_detail=f"{disk}: snapshot ids {', '.join(s.id for s in matches)}",
            )


def restorable(vps: Vps, infos: list[ImageInfo], name: str) -> list[DiskSnapshotInfo]:
    """The one snapshot called ``name`` on each disk; raises unless every disk has exactly one."""
    refuse_ambiguous(vps, infos, name, "restore")
    found: list[DiskSnapshotInfo] = []
    for disk, info in zip(vps.disks, infos, strict=True):
        matches = info.snapshots_named(name)
        if not matches:
            raise SnapshotNotFound(f"snapshot {name} does not exist on {disk_label(vps, disk)}")
        found.append(matches[0])
    return found
