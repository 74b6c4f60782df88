"""QEMU hypervisor driver: qcow2 internal snapshots of stopped and running VMs, power actions.

A VPS's ``machine`` says how its VM is reached: none (disk images only, always stopped),
a ``LaunchSpec`` (a VM vpsnap starts itself, ``vpsnap.drivers.machines``) or a
``QmpAttachment`` (someone else's VM, reached through its QMP socket). While the VM's process
runs it holds its disks locked, so snapshots go through QMP (``vpsnap.drivers.live``);
otherwise through ``qemu-img`` on the files (``vpsnap.drivers.offline``). docs/vms.md has the
rules per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from vpsnap.domain.errors import (
    DomainError,
    HypervisorError,
    MemorySnapshotUnsupported,
    RestoreIncomplete,
    SnapshotAmbiguous,
    VmConfigChanged,
    VpsNotReady,
)
from vpsnap.domain.model import (
    Consistency,
    LaunchSpec,
    LibvirtDomain,
    PowerAction,
    PowerState,
    QmpAttachment,
    VmConfig,
    VmFacts,
    Vps,
)
from vpsnap.domain.ports import (
    QUIESCE_NOT_REQUESTED_REASON,
    PowerOutcome,
    RestoreOutcome,
    RestorePoint,
    SnapshotRequest,
    TakenSnapshot,
)
from vpsnap.drivers import live
from vpsnap.drivers.guest_agent import GuestAgent, Quiesce
from vpsnap.drivers.offline import (
    DiskImages,
    disk_label,
    disk_labels,
    note_leftover,
    raise_partial_delete,
    refuse_ambiguous,
    refuse_taken_name,
    restorable,
)
from vpsnap.drivers.qmp import Monitor, MonitorGone, QemuRefused, open_monitor

if TYPE_CHECKING:
    from vpsnap.domain.ports import HypervisorDriver
    from vpsnap.drivers.machines import ManagedMachines
    from vpsnap.drivers.qemu_img import ImageInfo, QemuImg

_log = structlog.get_logger(__name__)

_POLL_SECONDS = 0.1
_NO_MACHINE = (
    "VPS {name} has no VM to power: it is registered with disk images only "
    "(`vpsnap admin vps add` with --memory-mib or --qmp-socket gives it one)."
)


@dataclass(frozen=True, slots=True)
class LiveTimeouts:
    """How long vpsnap waits for a running VM (seconds)."""

    qmp: float = 10.0
    """Connecting to QMP and each ordinary command."""
    status: float = 1.0
    """A power-state read for the API: past this the state is reported ``unknown``."""
    guest_agent: float = 3.0
    """Each guest-agent exchange (sync, status, thaw): no answer means no agent."""
    guest_freeze: float = 10.0
    """The freeze itself: the guest first writes out its dirty data (seconds under write load)."""
    guest_agent_recovery: float = 30.0
    """An agent that stops answering after a freeze is retried this long to thaw the guest."""
    shutdown: float = 60.0
    """A graceful shutdown: the guest must power off within this, else "use stop"."""
    snapshot_job: float = 600.0
    """Saving or loading RAM state (grows with the VM's memory)."""


@dataclass(frozen=True, slots=True)
class _Vm:
    """Where the VM of a VPS is reached."""

    job_socket: str
    status_socket: str
    agent_socket: str | None
    agent_chardev: str | None  # its chardev id, when vpsnap started the VM
    launch: LaunchSpec | None  # None: attached, vpsnap cannot start it


class QemuDriver:
    """``HypervisorDriver`` for QEMU VMs with qcow2 disks.

    Without ``machines`` (no data dir), managed VMs cannot be started; disk-only and attached
    VPSes work as ever.
    """

    def __init__(
        self,
        qemu_img: QemuImg,
        machines: ManagedMachines | None = None,
        timeouts: LiveTimeouts | None = None,
    ) -> None:
        self._images = DiskImages(qemu_img)
        self._machines = machines
        self._timeouts = timeouts or LiveTimeouts()
        # QEMU serves one client per monitor socket; in-process callers queue here instead of
        # in the socket's backlog, where they would time out behind each other.
        self._socket_locks: dict[str, asyncio.Lock] = {}
        self._qemu_img = qemu_img

    async def probe(self) -> None:
        await self._qemu_img.version()

    # -- reading ---------------------------------------------------------------------------

    async def power_state(self, vps: Vps) -> PowerState:
        return await self._read_state(vps, self._timeouts.status)

    async def _decided_state(self, vps: Vps) -> PowerState:
        """A power state a job acts on or reports: given the monitor's full timeout, not the
        short one of a read for display (a VM that was just started may take a moment)."""
        return await self._read_state(vps, self._timeouts.qmp)

    async def power_states(
        self, vpses: Sequence[Vps], *, concurrency: int = 8
    ) -> list[PowerState | Exception]:
        results: list[PowerState | Exception | None] = [None] * len(vpses)
        vms: list[_Vm | None] = [None] * len(vpses)
        for i, vps in enumerate(vpses):
            try:
                vms[i] = self._vm(vps)
            except Exception as exc:  # that VPS's answer, as power_state raises it
                results[i] = exc
        # One thread hop for the page: whether each VM process runs (a pid file and /proc) and,
        # for every VPS without one, whether its disks exist. Before, each disk was a to_thread
        # of its own (issue 15: 10,000 hops per pass).
        unread = [i for i, result in enumerate(results) if result is None]
        offline = (
            await asyncio.to_thread(self._offline_states, [(vpses[i], vms[i]) for i in unread])
            if unread
            else []
        )
        live_ones: list[tuple[int, _Vm]] = []
        for i, state in zip(unread, offline, strict=True):
            vm = vms[i]
            if state is None and vm is not None:
                live_ones.append((i, vm))
            else:
                results[i] = state
        if live_ones:
            limit = asyncio.Semaphore(concurrency)

            async def ask(i: int, vm: _Vm) -> None:
                async with limit:
                    try:
                        results[i] = await self._live_state(vpses[i], vm, self._timeouts.status)
                    except Exception as exc:  # as above
                        results[i] = exc

            await asyncio.gather(*(ask(i, vm) for i, vm in live_ones))
        return [PowerState.UNKNOWN if r is None else r for r in results]

    def _offline_states(
        self, items: Sequence[tuple[Vps, _Vm | None]]
    ) -> list[PowerState | Exception | None]:
        """Blocking (``asyncio.to_thread``): per VPS, None when a VM process of it runs (its
        monitor answers for it), else its state from its disk files, or the error reading them
        raised."""
        out: list[PowerState | Exception | None] = []
        for vps, vm in items:
            try:
                if vm is not None and (vm.launch is None or self._process_alive(vps)):
                    out.append(None)
                else:
                    out.append(_disk_state(vps))
            except Exception as exc:  # that VPS's answer only
                out.append(exc)
        return out

    async def _read_state(self, vps: Vps, timeout: float) -> PowerState:
        vm = self._vm(vps)
        if vm is None or (vm.launch is not None and not self._process_alive(vps)):
            return await self._offline_state(vps)
        return await self._live_state(vps, vm, timeout)

    async def _live_state(self, vps: Vps, vm: _Vm, timeout: float) -> PowerState:
        """The state of a VM whose process runs (or an attached one), from its monitor."""
        try:
            async with self._monitor(vm.status_socket, timeout) as monitor:
                return await live.run_state(monitor)
        except MonitorGone:
            return await self._offline_state(vps)
        except HypervisorError as exc:
            # Busy (a snapshot holds an attached VM's only monitor) or stuck: say so, don't hang.
            _log.info("power_state_unknown", vps_id=vps.id, reason=exc.log_detail or exc.detail)
            return PowerState.UNKNOWN

    async def vm_facts(self, vps: Vps) -> VmFacts | None:
        vm = self._vm(vps)
        if vm is None or (vm.launch is not None and not self._process_alive(vps)):
            return None
        try:
            # The status monitor and its short timeout: the API lists snapshots with this.
            async with self._monitor(vm.status_socket, self._timeouts.status) as monitor:
                devices = await live.block_devices(monitor)
                config = await live.vm_config(monitor)
        except MonitorGone:
            return None
        return VmFacts(
            config=config,
            uncovered_devices=live.uncovered_writable(devices, vps.disks),
            restarts_for_disk_restore=vm.launch is not None,
        )

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]:
        # The snapshot table is read from the files even while the VM runs: QEMU writes it
        # synchronously, and reading needs no monitor (so listing never waits behind a job).
        return await self._images.list_restore_points(vps)

    # -- snapshots -------------------------------------------------------------------------

    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot:
        async with self._live_monitor(vps) as (vm, monitor):
            if monitor is None:
                return await self._images.create_snapshot(vps, request)
            assert vm is not None  # a monitor means a VM
            infos = await self._images.inspect(vps, require_qcow2=True)
            refuse_taken_name(vps, infos, request.name)
            devices = await live.block_devices(monitor)
            nodes = live.nodes_of(devices, vps.disks)
            if request.include_memory_state:
                _refuse_uncovered(vps, devices, "snapshot")
                return await self._save_vm(vps, monitor, nodes, request.name)
            return await self._snapshot_disks(vm, request, monitor, nodes)

    async def delete_snapshot(self, vps: Vps, name: str) -> None:
        async with self._live_monitor(vps) as (_, monitor):
            if monitor is None:
                await self._images.delete_snapshot(vps, name)
                return
            infos = await self._images.inspect(vps)
            holders = [
                disk
                for disk, info in zip(vps.disks, infos, strict=True)
                if info.snapshots_named(name)
            ]
            if not holders:
                return  # a re-run delete job finds it gone already
            refuse_ambiguous(vps, infos, name, "delete")
            nodes = dict(zip(vps.disks, await live.disk_nodes(monitor, vps.disks), strict=True))
            with_ram = any(s.vm_state_size for i in infos for s in i.snapshots_named(name))
            if with_ram:
                # One QEMU job over every holder; what it managed to delete before a failure
                # is found again by the re-run (delete only deletes what is still there).
                await live.delete_vm(
                    monitor,
                    [nodes[d] for d in holders],
                    name,
                    timeout=self._timeouts.snapshot_job,
                )
                return
            # Not atomic (QEMU has no transaction for deletes): one disk after the other, and a
            # failure says which disks it already left.
            done: list[str] = []
            for disk in holders:
                try:
                    await live.delete_disk_snapshot(monitor, [nodes[disk]], name)
                except DomainError as exc:
                    raise_partial_delete(vps, name, done, disk, exc)
                done.append(disk)

    async def restore_snapshot(
        self, vps: Vps, name: str, *, recorded: VmConfig | None = None
    ) -> RestoreOutcome:
        before = await self._decided_state(vps)
        async with self._live_monitor(vps) as (vm, monitor):
            if monitor is None:
                await self._images.restore_snapshot(vps, name)
                return RestoreOutcome(before, await self._decided_state(vps))
            assert vm is not None  # a monitor means a VM
            infos = await self._images.inspect(vps, require_qcow2=True)
            found = restorable(vps, infos, name)
            ram_disks = [d for d, s in zip(vps.disks, found, strict=True) if s.vm_state_size]
            if ram_disks:
                return await self._load_vm(
                    vps, vm, monitor, infos, name, ram_disk=ram_disks[0], recorded=recorded
                )
            if vm.launch is None:
                raise VpsNotReady(
                    f"VPS {vps.name} is a running VM that vpsnap does not manage, and snapshot "
                    f"{name} has no RAM state: its disks cannot be rolled back under it. Stop the "
                    "VM first (its owner starts it again), then restore."
                )
            await self._end_process(vps, monitor)
        # The monitor is closed: QEMU is gone, so its disks are free for qemu-img.
        return await self._restore_disks_and_start(vps, vm.launch, name, before)

    async def _load_vm(
        self,
        vps: Vps,
        vm: _Vm,
        monitor: Monitor,
        infos: list[ImageInfo],
        name: str,
        *,
        ram_disk: str,
        recorded: VmConfig | None,
    ) -> RestoreOutcome:
        """Disks and RAM back to ``name`` with ``snapshot-load``.

        QEMU rolls every disk back *before* it loads the RAM, and only then finds out whether
        the RAM fits the VM. So everything that can be checked is checked first (nothing touched
        on a refusal); a load that still fails leaves the VM in a defined state: a managed VM is
        powered off, an attached one is marked so it reads ``error`` and ``start`` refuses it.
        """
        before = await live.run_state(monitor)
        _refuse_id_lookalike(vps, infos, name)
        devices = await live.block_devices(monitor)
        nodes = dict(zip(vps.disks, live.nodes_of(devices, vps.disks), strict=True))
        _refuse_uncovered(vps, devices, "restore")
        if recorded is not None:
            current = await live.vm_config(monitor)
            if current != recorded:
                raise VmConfigChanged(
                    f"Snapshot {name} of {vps.name} holds the RAM state of a VM with "
                    f"{recorded.describe()}; the VM now has {current.describe()}. Nothing was "
                    "changed. Run the VM with the snapshot's configuration again, or stop it and "
                    "restore the disks only.",
                    extensions={
                        "snapshotVm": _config_json(recorded),
                        "currentVm": _config_json(current),
                    },
                )
        try:
            await live.load_vm(
                monitor,
                list(nodes.values()),
                name,
                vmstate_node=nodes[ram_disk],
                timeout=self._timeouts.snapshot_job,
            )
        except HypervisorError as exc:
            raise await self._after_failed_load(vps, vm, monitor, name, exc) from exc
        await live.clear_ram_invalid(monitor)
        return RestoreOutcome(before, await live.run_state(monitor))

    async def _after_failed_load(
        self, vps: Vps, vm: _Vm, monitor: Monitor, name: str, cause: HypervisorError
    ) -> RestoreIncomplete:
        """Leave the VM in a defined state after ``snapshot-load`` failed, and say so."""
        # QEMU reports a failure of the RAM part as "... while loading VM state": the disks were
        # all rolled back before it. Anything else may have stopped while rolling disks back.
        qemu_error = cause.qemu_error if isinstance(cause, QemuRefused) else ""
        disks_done = "while loading VM state" in qemu_error
        disks = (
            f"every disk of {vps.name} ({disk_labels(vps, vps.disks)}) was rolled back to it"
            if disks_done
            else f"the disks of {vps.name} may have been rolled back to it (all, some or none)"
        )
        if vm.launch is not None:
            await self._end_process(vps, monitor)
            after = PowerState.STOPPED
            left = (
                "The VM was powered off so that the guest cannot run on partly loaded memory; "
                "start it to boot from its disks."
            )
        else:
            try:
                await live.mark_ram_invalid(monitor, f"restore of {name} failed")
            except HypervisorError as exc:
                _log.error(
                    "ram_invalid_mark_failed", vps_id=vps.id, error=exc.log_detail or exc.detail
                )
            after = PowerState.ERROR
            left = (
                "The VM was left stopped and reads as error: start refuses to resume it. Reset "
                "it (or restart with force) to boot it from its disks, or restore a snapshot "
                "again."
            )
        return RestoreIncomplete(
            f"Restoring snapshot {name} stopped part-way: {disks}, but its RAM state could not "
            f"be loaded into the VM. {left}",
            extensions={
                "disksRestored": [i + 1 for i in range(len(vps.disks))] if disks_done else None,
                "memoryRestored": False,
                "powerStateAfter": after.value,
            },
            log_detail=cause.log_detail or cause.detail,
        )

    async def _restore_disks_and_start(
        self, vps: Vps, spec: LaunchSpec, name: str, before: PowerState
    ) -> RestoreOutcome:
        """The rest of a disk-only restore of a running managed VM: quit (done by the caller),
        roll every disk back, start again (paused again if it was)."""
        paused = before is PowerState.PAUSED
        try:
            await self._images.restore_snapshot(vps, name)
        except RestoreIncomplete:
            # Some disks are rolled back, others not: booting the guest on them would mix two
            # points in time. It stays off; the problem says which disks are where.
            raise
        except BaseException:
            # Nothing was rolled back: the VM must not stay off because of a failed restore.
            # Start it again on its disks as they are, and report the restore's own error.
            with contextlib.suppress(DomainError):
                await self._start_managed(vps, spec, paused=paused)
            raise
        try:
            await self._start_managed(vps, spec, paused=paused)
        except DomainError as exc:
            raise RestoreIncomplete(
                f"Snapshot {name} was restored on every disk of {vps.name}, but the VM could not "
                f"be started again ({exc.detail}). It is stopped; start it when the cause is "
                "fixed.",
                extensions={
                    "disksRestored": [i + 1 for i in range(len(vps.disks))],
                    "memoryRestored": False,
                    "powerStateAfter": PowerState.STOPPED.value,
                },
                log_detail=exc.log_detail or exc.detail,
            ) from exc
        return RestoreOutcome(before, await self._decided_state(vps))

    # -- power -----------------------------------------------------------------------------

    async def change_power(
        self, vps: Vps, action: PowerAction, *, force: bool = False
    ) -> PowerOutcome:
        vm = self._vm(vps)
        if vm is None:
            raise VpsNotReady(_NO_MACHINE.format(name=vps.name))
        before = await self._decided_state(vps)
        if vm.launch is not None:
            await self._power_managed(vps, vm.launch, action, force=force)
        else:
            await self._power_attached(vps, vm, action, force=force)
        return PowerOutcome(before, await self._decided_state(vps))

    async def _power_managed(
        self, vps: Vps, spec: LaunchSpec, action: PowerAction, *, force: bool
    ) -> None:
        async with self._live_monitor(vps) as (_, monitor):
            if monitor is None:
                if action in (PowerAction.START, PowerAction.RESTART):
                    await self._start_managed(vps, spec, paused=False)
                elif action is PowerAction.RESET:
                    raise VpsNotReady(f"VPS {vps.name} is not running: there is nothing to reset.")
                return  # shutdown / stop of a stopped VM: already done
            match action:
                case PowerAction.START:
                    await _resume(vps, monitor)
                case PowerAction.RESET:
                    await _reset(monitor)
                case PowerAction.STOP:
                    await self._end_process(vps, monitor)
                case PowerAction.SHUTDOWN:
                    await self._shut_down(vps, monitor)
                case PowerAction.RESTART if force:
                    await self._end_process(vps, monitor)
                case PowerAction.RESTART:
                    await self._shut_down(vps, monitor)
        if action is PowerAction.RESTART:
            await self._start_managed(vps, spec, paused=False)

    async def _power_attached(self, vps: Vps, vm: _Vm, action: PowerAction, *, force: bool) -> None:
        async with self._live_monitor(vps) as (_, monitor):
            if monitor is None:
                if action in (PowerAction.SHUTDOWN, PowerAction.STOP):
                    return
                raise VpsNotReady(
                    f"VPS {vps.name} is not running, and it is a VM vpsnap does not manage: its "
                    "owner must start it.",
                    log_detail=f"attached through {vm.job_socket}",
                )
            match action:
                case PowerAction.START:
                    await _resume(vps, monitor)
                case PowerAction.RESET:
                    await _reset(monitor)
                case PowerAction.RESTART if force:
                    # Stop+start is impossible without the process; a hard reset is the same
                    # for the guest, and a VM that was not running boots again.
                    await _reset(monitor)
                    await _resume(vps, monitor)
                case PowerAction.RESTART:
                    raise VpsNotReady(
                        f"VPS {vps.name} is a VM vpsnap does not manage: after a graceful "
                        "shutdown only its owner can start it again. Use restart with force "
                        "(a hard reset) or reset."
                    )
                case PowerAction.STOP:
                    await monitor.execute("quit")
                case PowerAction.SHUTDOWN:
                    await monitor.execute("system_powerdown")
        if action in (PowerAction.STOP, PowerAction.SHUTDOWN):
            limit = self._timeouts.qmp if action is PowerAction.STOP else self._timeouts.shutdown
            if not await self._wait_for(vps, PowerState.STOPPED, limit):
                raise VpsNotReady(_ignored_shutdown(vps, limit))

    # -- helpers ---------------------------------------------------------------------------

    def _vm(self, vps: Vps) -> _Vm | None:
        match vps.machine:
            case None:
                return None
            case LaunchSpec():
                machine = self._managed().dir_for(vps.id)
                return _Vm(
                    job_socket=str(machine.qmp_socket),
                    status_socket=str(machine.status_socket),
                    agent_socket=str(machine.guest_agent_socket),
                    agent_chardev=machine.guest_agent_chardev,
                    launch=vps.machine,
                )
            case QmpAttachment():
                return _Vm(
                    job_socket=vps.machine.qmp_socket,
                    status_socket=vps.machine.qmp_socket,
                    agent_socket=vps.machine.guest_agent_socket,
                    agent_chardev=None,
                    launch=None,
                )
            case LibvirtDomain():
                raise HypervisorError(
                    f"VPS {vps.name} is a libvirt domain; the QEMU driver cannot reach it."
                )

    def _managed(self) -> ManagedMachines:
        if self._machines is None:
            raise HypervisorError("This vpsnap has no data dir for VMs it starts itself.")
        return self._machines

    def _process_alive(self, vps: Vps) -> bool:
        return self._managed().pid(vps.id) is not None

    @contextlib.asynccontextmanager
    async def _monitor(self, socket_path: str, timeout: float) -> AsyncIterator[Monitor]:
        lock = self._socket_locks.setdefault(socket_path, asyncio.Lock())
        try:
            async with asyncio.timeout(timeout):
                await lock.acquire()
        except TimeoutError:
            raise HypervisorError(
                "The VM's monitor is busy with another operation.",
                log_detail=f"the QMP socket {socket_path} is busy with another operation",
            ) from None
        try:
            async with open_monitor(socket_path, timeout) as monitor:
                yield monitor
        finally:
            lock.release()

    @contextlib.asynccontextmanager
    async def _live_monitor(self, vps: Vps) -> AsyncIterator[tuple[_Vm | None, Monitor | None]]:
        """The job monitor of the VPS's VM while its process runs, else None."""
        vm = self._vm(vps)
        async with contextlib.AsyncExitStack() as stack:
            monitor: Monitor | None = None
            if vm is not None and (vm.launch is None or self._process_alive(vps)):
                with contextlib.suppress(MonitorGone):  # an attached VM that is not running
                    monitor = await stack.enter_async_context(
                        self._monitor(vm.job_socket, self._timeouts.qmp)
                    )
            yield vm, monitor

    async def _offline_state(self, vps: Vps) -> PowerState:
        return await asyncio.to_thread(_disk_state, vps)

    async def _snapshot_disks(
        self, vm: _Vm, request: SnapshotRequest, monitor: Monitor, nodes: tuple[str, ...]
    ) -> TakenSnapshot:
        freeze: contextlib.AbstractAsyncContextManager[Quiesce]
        if not request.quiesce:
            freeze = contextlib.nullcontext(Quiesce(reason=QUIESCE_NOT_REQUESTED_REASON))
        elif vm.agent_socket is None:
            freeze = contextlib.nullcontext(
                Quiesce(reason="the VM was registered without a guest-agent channel")
            )
        # A channel no agent has opened answers nothing: skip the wait for the agent's timeout.
        elif await live.agent_channel_open(monitor, vm.agent_socket, vm.agent_chardev) is False:
            freeze = contextlib.nullcontext(
                Quiesce(reason="no guest agent runs in the guest (its channel is not open)")
            )
        else:
            freeze = GuestAgent(
                vm.agent_socket,
                self._timeouts.guest_agent,
                freeze_timeout=self._timeouts.guest_freeze,
                recovery=self._timeouts.guest_agent_recovery,
            ).frozen_filesystems()
        async with freeze as quiesce:
            # One transaction: QEMU snapshots every disk or, on any error, none.
            await live.take_disk_snapshot(monitor, nodes, request.name)
        # Complete only now: the thaw (and its window) happens when the block exits.
        return TakenSnapshot(
            consistency=Consistency.FILESYSTEM if quiesce.frozen else Consistency.CRASH,
            includes_memory_state=False,
            consistency_reason=None if quiesce.frozen else quiesce.reason,
            freeze_window_ms=quiesce.window_ms,
            leftover_freeze_thawed=quiesce.leftover_thawed,
            thaw_confirmed=quiesce.thaw_confirmed,
        )

    async def _save_vm(
        self, vps: Vps, monitor: Monitor, nodes: tuple[str, ...], name: str
    ) -> TakenSnapshot:
        # No freeze around a RAM snapshot: RAM is consistent by itself, and a guest frozen at
        # save time would come back frozen on every restore of it. The configuration the RAM
        # fits is recorded with it, so a restore into a changed VM is refused up front.
        config = await live.vm_config(monitor)
        try:
            await live.save_vm(
                monitor, nodes, name, vmstate_node=nodes[0], timeout=self._timeouts.snapshot_job
            )
        except HypervisorError as exc:
            await self._undo_create(vps, monitor, nodes, name, exc)
            raise
        return TakenSnapshot(
            consistency=Consistency.MEMORY, includes_memory_state=True, vm_config=config
        )

    async def _undo_create(
        self,
        vps: Vps,
        monitor: Monitor,
        nodes: tuple[str, ...],
        name: str,
        cause: HypervisorError,
    ) -> None:
        # The name was free before, so whatever carries it now is this attempt's leftover.
        try:
            infos = await self._images.inspect(vps)
            leftover = [
                node for node, info in zip(nodes, infos, strict=True) if info.snapshots_named(name)
            ]
            await live.delete_disk_snapshot(monitor, leftover, name)
        except HypervisorError as exc:
            _log.warning(
                "snapshot_rollback_failed",
                vps_id=vps.id,
                snapshot=name,
                error=exc.log_detail or exc.detail,
            )
            note_leftover(vps, name, list(vps.disks), cause)

    async def _start_managed(self, vps: Vps, spec: LaunchSpec, *, paused: bool) -> None:
        await self._managed().launch(vps, spec)
        if paused:
            socket = str(self._managed().dir_for(vps.id).qmp_socket)
            async with self._monitor(socket, self._timeouts.qmp) as monitor:
                await monitor.execute("stop")

    async def _end_process(self, vps: Vps, monitor: Monitor) -> None:
        """Hard power-off of a managed VM: ``quit``, and SIGKILL if QEMU does not exit."""
        try:
            await monitor.execute("quit")
        except HypervisorError as exc:
            _log.warning("vm_quit_failed", vps_id=vps.id, error=exc.log_detail or exc.detail)
        if not await self._managed().wait_exit(vps.id, self._timeouts.qmp):
            await self._managed().kill(vps.id)

    async def _shut_down(self, vps: Vps, monitor: Monitor) -> None:
        await monitor.execute("system_powerdown")
        limit = self._timeouts.shutdown
        if not await self._managed().wait_exit(vps.id, limit):
            raise VpsNotReady(_ignored_shutdown(vps, limit))

    async def _wait_for(self, vps: Vps, state: PowerState, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.power_state(vps) is not state:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True


async def _resume(vps: Vps, monitor: Monitor) -> None:
    """``start`` of a VM whose process runs: continue it only where that is safe."""
    status = await live.status(monitor)
    if status.run_state == "running":
        return  # starting a running VM changes nothing
    if status.ram_invalid or not status.state.resumable:
        why = (
            "its RAM is only partly restored after a failed restore"
            if status.ram_invalid or status.run_state == "restore-vm"
            else f"it is in the hypervisor state {status.run_state!r}, which cannot be resumed"
        )
        raise VpsNotReady(
            f"VPS {vps.name} cannot be resumed: {why}. Reset it, or restart it with force, to "
            "boot it from its disks."
        )
    if status.run_state == "suspended":
        # The guest suspended itself to RAM; QEMU ignores `cont` there, a wake-up resumes it.
        await monitor.execute("system_wakeup")
    else:
        await monitor.execute("cont")


async def _reset(monitor: Monitor) -> None:
    """A hard reset: the guest boots again from its disks, so half-loaded RAM no longer
    matters (a stopped VM goes to ``prelaunch``, which ``start`` continues). Waits for QEMU to
    have carried it out, so what follows sees the reset VM."""
    await monitor.execute_until("system_reset", "RESET", timeout=monitor.timeout)
    await live.clear_ram_invalid(monitor)


def _refuse_uncovered(vps: Vps, devices: list[live.BlockDevice], verb: str) -> None:
    uncovered = live.uncovered_writable(devices, vps.disks)
    if uncovered:
        raise MemorySnapshotUnsupported(
            f"VPS {vps.name} has writable devices that are not among its snapshottable disks "
            f"({', '.join(uncovered)}): RAM state saved or loaded without them would not match "
            f"their data, so vpsnap does not {verb} with RAM state. Nothing was changed. A "
            "disk-only snapshot or restore (of the VPS's disks only) is possible.",
            extensions={"devices": list(uncovered)},
            log_detail="uncovered writable devices: "
            + ", ".join(
                f"{d.guest_id}={d.file} ({d.format})" for d in devices if d.guest_id in uncovered
            ),
        )


def _config_json(config: VmConfig) -> dict[str, object]:
    return {"memoryMib": config.memory_bytes // (1024 * 1024), "machineType": config.machine_type}


def _ignored_shutdown(vps: Vps, limit: float) -> str:
    return (
        f"VPS {vps.name} did not power off within {limit:g}s of the ACPI power button (the guest "
        "ignored it, or has no OS that handles it). Use stop to power it off hard."
    )


def _refuse_id_lookalike(vps: Vps, infos: list[ImageInfo], name: str) -> None:
    # snapshot-load finds the disk snapshot by id first, then by name (qcow2's goto), so a name
    # equal to another snapshot's id would load the wrong disk state under the right RAM.
    for disk, info in zip(vps.disks, infos, strict=True):
        if any(s.id == name and s.name != name for s in info.snapshots):
            raise SnapshotAmbiguous(
                f"Snapshot {name!r} cannot be restored with its RAM state: on "
                f"{disk_label(vps, disk)} another snapshot has the id {name}, and the hypervisor "
                "would load that one. Stop the VM and restore the disks only."
            )


if TYPE_CHECKING:
    # mypy proves the class satisfies the port; nothing runs.
    def _implements_port(driver: QemuDriver) -> HypervisorDriver:
        return driver


def _disk_state(vps: Vps) -> PowerState:
    """Blocking: the state of a VPS without a VM process — the only thing to know is whether
    its disks are there at all (``STOPPED``), or not (``ERROR``, also for none)."""
    if not vps.disks:
        return PowerState.ERROR
    return PowerState.STOPPED if all(Path(d).exists() for d in vps.disks) else PowerState.ERROR
