"""In-memory ``HypervisorDriver`` for fast service unit tests, with fault injection.

Never the default or demo driver: it touches no disk, so nothing it reports is real. It follows
``QemuDriver``'s semantics, which the shared driver contract tests hold it to: a VPS without a
machine is disk images only (a "running" one has its disks locked), a VPS with a machine that
runs is snapshotted live, and a restore keeps its power state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from vpsnap.domain.clock import SystemClock
from vpsnap.domain.errors import (
    DiskUnusable,
    MemorySnapshotUnsupported,
    SnapshotNameTaken,
    SnapshotNotFound,
    VmConfigChanged,
    VpsNotReady,
)
from vpsnap.domain.model import (
    Consistency,
    LibvirtDomain,
    PowerAction,
    PowerState,
    QmpAttachment,
    VmConfig,
    VmFacts,
    Vps,
)
from vpsnap.domain.ports import (
    NOT_RUNNING_REASON,
    QUIESCE_NOT_REQUESTED_REASON,
    PowerOutcome,
    RestoreOutcome,
    RestorePoint,
    SnapshotRequest,
    TakenSnapshot,
)
from vpsnap.domain.rules import name_key

if TYPE_CHECKING:
    from vpsnap.domain.clock import Clock
    from vpsnap.domain.errors import DomainError
    from vpsnap.domain.ports import HypervisorDriver

Operation = Literal["probe", "list", "create", "delete", "restore", "power"]
_OPERATIONS: frozenset[str] = frozenset(get_args(Operation))

# The offline QemuDriver cannot touch disks a live VM holds locked; the fake refuses the same.
_BUSY_STATES = frozenset(
    {PowerState.RUNNING, PowerState.PAUSED, PowerState.STARTING, PowerState.STOPPING}
)


_NO_MACHINE = (
    "VPS {name} has no VM to power: it is registered with disk images only "
    "(`vpsnap admin vps add` with --memory-mib, --qmp-socket or a libvirt domain gives it one)."
)


FAKE_VM_CONFIG = VmConfig(memory_bytes=64 * 1024 * 1024, machine_type="pc-i440fx-7.2")


@dataclass(slots=True)
class _FakeVps:
    points: dict[str, RestorePoint] = field(default_factory=dict)
    saved_content: dict[str, str] = field(default_factory=dict)
    content: str = ""
    power_state: PowerState = PowerState.STOPPED
    guest_agent: bool = False
    vm_config: VmConfig = FAKE_VM_CONFIG
    uncovered_devices: tuple[str, ...] = ()


@dataclass(slots=True)
class _Gate:
    open: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)


class FakeDriver:
    """Keeps restore points and a "disk content" string per VPS id.

    ``write``/``content`` stand in for the guest's data: a snapshot records the content and a
    restore puts it back, so a test can check a restore really rolled back.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._vpses: dict[str, _FakeVps] = {}
        self._failures: dict[str, DomainError] = {}
        self._gates: dict[str, _Gate] = {}
        self.calls: list[tuple[str, str]] = []
        """(operation, vps id) of every call, in order, for tests that check what ran."""

    # -- test controls ---------------------------------------------------------------------

    def changes(self) -> list[tuple[str, str]]:
        """``calls`` without the reads (``list``, ``probe``): what could change a VM or disk."""
        return [(op, vps_id) for op, vps_id in self.calls if op not in ("list", "probe")]

    def write(self, vps_id: str, data: str) -> None:
        self._state(vps_id).content = data

    def content(self, vps_id: str) -> str:
        return self._state(vps_id).content

    def set_power_state(self, vps_id: str, state: PowerState) -> None:
        self._state(vps_id).power_state = state

    def set_guest_agent(self, vps_id: str, *, answering: bool) -> None:
        """Whether a guest agent answers inside the VM (quiesced snapshots freeze through it)."""
        self._state(vps_id).guest_agent = answering

    def set_vm(
        self,
        vps_id: str,
        *,
        config: VmConfig | None = None,
        uncovered_devices: tuple[str, ...] | None = None,
    ) -> None:
        """The running VM's RAM size / machine type, and its writable devices that are not
        registered disks (which RAM snapshots and restores refuse, as QemuDriver does)."""
        state = self._state(vps_id)
        if config is not None:
            state.vm_config = config
        if uncovered_devices is not None:
            state.uncovered_devices = uncovered_devices

    def fail_next(self, operation: Operation, error: DomainError) -> None:
        """Make the next call of ``operation`` raise ``error`` without changing anything."""
        self._failures[_checked(operation)] = error

    def block(self, operation: Operation) -> None:
        """Hold every call of ``operation`` at its start until ``release``."""
        self._gates.setdefault(_checked(operation), _Gate())

    def release(self, operation: Operation) -> None:
        gate = self._gates.pop(_checked(operation), None)
        if gate is not None:
            gate.open.set()

    async def wait_blocked(self, operation: Operation) -> None:
        """Return once a call of ``operation`` is waiting at its gate (set by ``block``)."""
        gate = self._gates.get(_checked(operation))
        if gate is None:
            raise RuntimeError(f"{operation} is not blocked; call block() first")
        await gate.reached.wait()

    # -- HypervisorDriver ------------------------------------------------------------------

    async def probe(self) -> None:
        await self._enter("probe", "")

    async def power_state(self, vps: Vps) -> PowerState:
        return self._state(vps.id).power_state

    async def power_states(
        self, vpses: Sequence[Vps], *, concurrency: int = 8
    ) -> list[PowerState | Exception]:
        del concurrency  # nothing to wait for
        # Through power_state, so that a test's driver that overrides it answers the same here.
        states: list[PowerState | Exception] = []
        for vps in vpses:
            try:
                states.append(await self.power_state(vps))
            except Exception as exc:  # that VPS's answer, as power_state raised it
                states.append(exc)
        return states

    async def vm_facts(self, vps: Vps) -> VmFacts | None:
        state = self._state(vps.id)
        if not _is_live(vps, state):
            return None
        return VmFacts(
            config=state.vm_config,
            uncovered_devices=state.uncovered_devices,
            live_snapshots_include_memory=isinstance(vps.machine, LibvirtDomain),
            restarts_for_disk_restore=not isinstance(vps.machine, QmpAttachment),
        )

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]:
        state = await self._enter("list", vps.id)
        self._require_disks(vps, state)
        # Stable sort: equal timestamps (a frozen test clock) keep creation order.
        return sorted(state.points.values(), key=lambda p: p.created_at or self._clock.now())

    # Checks run in the order QemuDriver meets them: it reads snapshot tables with -U (which
    # works next to a running VM) before it needs the write lock that a running VM holds.

    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot:
        state = await self._enter("create", vps.id)
        self._require_disks(vps, state)
        for existing in state.points:
            if name_key(existing) == name_key(request.name):
                raise SnapshotNameTaken(
                    f"a snapshot named {request.name} already exists on disk 1 of {vps.name}"
                )
        taken = TakenSnapshot(
            consistency=Consistency.CRASH,
            includes_memory_state=False,
            consistency_reason=NOT_RUNNING_REASON,
        )
        if _is_live(vps, state):
            # As over QMP: RAM only when asked, a freeze only when an agent answers.
            if request.include_memory_state:
                _refuse_uncovered(vps, state)
                taken = TakenSnapshot(
                    consistency=Consistency.MEMORY,
                    includes_memory_state=True,
                    vm_config=state.vm_config,
                )
            elif request.quiesce and state.guest_agent:
                taken = TakenSnapshot(Consistency.FILESYSTEM, includes_memory_state=False)
            else:
                taken = TakenSnapshot(
                    Consistency.CRASH,
                    includes_memory_state=False,
                    consistency_reason=QUIESCE_NOT_REQUESTED_REASON
                    if not request.quiesce
                    else "no guest agent answered",
                )
        else:
            self._require_unlocked(vps, state)
        state.points[request.name] = RestorePoint(
            name=request.name,
            disks=vps.disks,
            vm_state_size=_FAKE_VM_STATE_SIZE if taken.includes_memory_state else 0,
            created_at=self._clock.now(),
        )
        state.saved_content[request.name] = state.content
        return taken

    async def delete_snapshot(self, vps: Vps, name: str) -> None:
        state = await self._enter("delete", vps.id)
        self._require_disks(vps, state)
        if name not in state.points:
            return
        if not _is_live(vps, state):
            self._require_unlocked(vps, state)
        del state.points[name]
        del state.saved_content[name]

    async def restore_snapshot(
        self, vps: Vps, name: str, *, recorded: VmConfig | None = None
    ) -> RestoreOutcome:
        state = await self._enter("restore", vps.id)
        self._require_disks(vps, state)
        if name not in state.points:
            raise SnapshotNotFound(f"snapshot {name} does not exist on disk 1 of {vps.name}")
        if not _is_live(vps, state):
            self._require_unlocked(vps, state)
        elif state.points[name].vm_state_size:
            _refuse_uncovered(vps, state)
            if recorded is not None and recorded != state.vm_config:
                raise VmConfigChanged(
                    f"Snapshot {name} of {vps.name} holds the RAM state of a VM with "
                    f"{recorded.describe()}; the VM now has {state.vm_config.describe()}."
                )
        elif not state.points[name].vm_state_size and isinstance(vps.machine, QmpAttachment):
            # Disk-only restore means stop + roll back + start, and vpsnap cannot start an
            # attached VM.
            raise VpsNotReady(
                f"VPS {vps.name} is a running VM that vpsnap does not manage; stop it first."
            )
        state.content = state.saved_content[name]
        # Live or not, the VM ends in the power state it started in.
        return RestoreOutcome(
            power_state_before=state.power_state, power_state_after=state.power_state
        )

    async def change_power(
        self,
        vps: Vps,
        action: PowerAction,
        *,
        force: bool = False,  # noqa: ARG002 - a fake VM stops at once either way
    ) -> PowerOutcome:
        state = await self._enter("power", vps.id)
        if vps.machine is None:
            raise VpsNotReady(_NO_MACHINE.format(name=vps.name))
        before = state.power_state
        running = before in _BUSY_STATES
        if action is PowerAction.RESET and not running:
            raise VpsNotReady(f"VPS {vps.name} is not running: there is nothing to reset.")
        starts = action in (PowerAction.START, PowerAction.RESTART)
        if starts and not running and isinstance(vps.machine, QmpAttachment):
            raise VpsNotReady(f"VPS {vps.name} is not running: its owner must start it.")
        after = (
            PowerState.STOPPED
            if action in (PowerAction.SHUTDOWN, PowerAction.STOP)
            else PowerState.RUNNING
        )
        state.power_state = after
        return PowerOutcome(power_state_before=before, power_state_after=after)

    # -- helpers ---------------------------------------------------------------------------

    def _state(self, vps_id: str) -> _FakeVps:
        return self._vpses.setdefault(vps_id, _FakeVps())

    async def _enter(self, operation: str, vps_id: str) -> _FakeVps:
        self.calls.append((operation, vps_id))
        gate = self._gates.get(operation)
        if gate is not None:
            gate.reached.set()
            await gate.open.wait()
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error
        return self._state(vps_id)

    @staticmethod
    def _require_disks(vps: Vps, state: _FakeVps) -> None:
        if not vps.disks:
            raise DiskUnusable(f"VPS {vps.name} has no disks configured.")
        if state.power_state is PowerState.ERROR:
            raise DiskUnusable(
                f"Disk {len(vps.disks)} of {vps.name} is missing on the host: its image file "
                "does not exist.",
                log_detail=f"{vps.disks[-1]} does not exist",
            )

    @staticmethod
    def _require_unlocked(vps: Vps, state: _FakeVps) -> None:
        if state.power_state in _BUSY_STATES:
            raise VpsNotReady(
                f"Disk 1 of {vps.name} is in use by another process (most likely the running "
                "VM). Stop the VM before snapshotting or restoring it."
            )


_FAKE_VM_STATE_SIZE = 1024 * 1024


def _refuse_uncovered(vps: Vps, state: _FakeVps) -> None:
    if state.uncovered_devices:
        raise MemorySnapshotUnsupported(
            f"VPS {vps.name} has writable devices that are not among its snapshottable disks "
            f"({', '.join(state.uncovered_devices)}).",
            extensions={"devices": list(state.uncovered_devices)},
        )


def _is_live(vps: Vps, state: _FakeVps) -> bool:
    return vps.machine is not None and state.power_state in (PowerState.RUNNING, PowerState.PAUSED)


def _checked(operation: str) -> str:
    if operation not in _OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; one of {sorted(_OPERATIONS)}")
    return operation


if TYPE_CHECKING:
    # mypy proves the class satisfies the port; nothing runs.
    def _implements_port(driver: FakeDriver) -> HypervisorDriver:
        return driver
