"""QemuDriver with real running VMs: what only QEMU shows (RAM state on disk, ignored power
buttons, re-attach, stale files, attached VMs, the guest agent)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import TYPE_CHECKING

import pytest

from tests.support import qemu_pids_under
from vpsnap.domain.errors import HypervisorError, VpsNotReady
from vpsnap.domain.model import (
    Consistency,
    LaunchSpec,
    PowerAction,
    PowerState,
    QmpAttachment,
    Vps,
)
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers.machines import ManagedMachines, bind_sockets, launch_arguments
from vpsnap.drivers.qemu import LiveTimeouts, QemuDriver
from vpsnap.drivers.qmp import open_monitor
from vpsnap.drivers.unix_sockets import MAX_ADDRESS_BYTES

from .support import DiskFactory, make_vps
from .vm_support import GuestAgentStandIn, VmData

if TYPE_CHECKING:
    from pathlib import Path

    from vpsnap.drivers.qemu_img import QemuImg

pytestmark = pytest.mark.qemu

VM = LaunchSpec(memory_mib=64, cpus=1)
QUIESCE_NO_AGENT = "no guest agent runs in the guest (its channel is not open)"


@pytest.fixture
def driver(qemu_img: QemuImg, machines: ManagedMachines, live_timeouts: LiveTimeouts) -> QemuDriver:
    return QemuDriver(qemu_img, machines, live_timeouts)


async def running_vps(driver: QemuDriver, make_disks: DiskFactory, count: int = 1) -> Vps:
    vps = make_vps(await make_disks(count), machine=VM)
    outcome = await driver.change_power(vps, PowerAction.START)
    assert outcome.power_state_after is PowerState.RUNNING
    return vps


async def attached_vps(
    machines: ManagedMachines,
    make_disks: DiskFactory,
    agent_socket: str | None = None,
    *,
    read_only_second_disk: bool = False,
) -> Vps:
    """A VM started "by someone else" (here: QEMU run directly), registered by its socket."""
    owner = make_vps(await make_disks(2, prefix="owned"), vps_id="owner-vm")
    machine = machines.dir_for(owner.id)
    machine.path.mkdir(parents=True)
    with bind_sockets(machine) as sockets:
        args = launch_arguments(owner, VM, machine, sockets)
        if read_only_second_disk:
            # A disk QEMU cannot write makes the snapshot transaction fail after the freeze.
            args = [_read_only(a) if "vd1" in a and a.startswith("{") else a for a in args]
        proc = await asyncio.create_subprocess_exec(
            "qemu-system-x86_64", *args, stderr=asyncio.subprocess.PIPE, pass_fds=sockets.fds
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    return make_vps(
        owner.disks,
        vps_id="attached",
        machine=QmpAttachment(str(machine.qmp_socket), agent_socket),
    )


def _read_only(blockdev: str) -> str:
    return json.dumps({**json.loads(blockdev), "read-only": True})


# -- RAM state, power buttons -----------------------------------------------------------------


async def test_ram_state_is_on_the_disk_as_qemu_img_shows_it(
    driver: QemuDriver, make_disks: DiskFactory
) -> None:
    vps = await running_vps(driver, make_disks, count=2)
    await driver.create_snapshot(vps, SnapshotRequest(name="ram", include_memory_state=True))

    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "--output=json", "-U", vps.disks[0], stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    [snap] = json.loads(out)["snapshots"]
    assert snap["name"] == "ram"
    assert snap["vm-state-size"] > 0
    # The RAM lives on the first disk only; the second has the disk state.
    [point] = await driver.list_restore_points(vps)
    assert point.disks == vps.disks
    assert await driver.power_state(vps) is PowerState.RUNNING


async def test_graceful_shutdown_ignored_by_the_guest_says_use_stop(
    driver: QemuDriver, make_disks: DiskFactory, live_timeouts: LiveTimeouts
) -> None:
    # No OS in the guest, so nothing handles the ACPI power button.
    vps = await running_vps(driver, make_disks)
    started = time.monotonic()
    with pytest.raises(VpsNotReady, match="Use stop"):
        await driver.change_power(vps, PowerAction.SHUTDOWN)
    assert time.monotonic() - started < live_timeouts.shutdown + 3
    assert await driver.power_state(vps) is PowerState.RUNNING

    with pytest.raises(VpsNotReady, match="Use stop"):
        await driver.change_power(vps, PowerAction.RESTART)
    outcome = await driver.change_power(vps, PowerAction.STOP)
    assert outcome.power_state_after is PowerState.STOPPED


async def test_paused_vm_stays_paused_through_a_restore_and_start_continues_it(
    driver: QemuDriver, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    vps = await running_vps(driver, make_disks)
    await driver.create_snapshot(vps, SnapshotRequest(name="disk", quiesce=False))
    async with open_monitor(str(machines.dir_for(vps.id).qmp_socket), 10) as monitor:
        await monitor.execute("stop")
    assert await driver.power_state(vps) is PowerState.PAUSED

    outcome = await driver.restore_snapshot(vps, "disk")
    assert (outcome.power_state_before, outcome.power_state_after) == (
        PowerState.PAUSED,
        PowerState.PAUSED,
    )

    started = await driver.change_power(vps, PowerAction.START)
    assert started.power_state_after is PowerState.RUNNING


async def test_power_of_a_vps_without_a_machine_is_refused(
    driver: QemuDriver, make_disks: DiskFactory
) -> None:
    vps = make_vps(await make_disks(1))
    with pytest.raises(VpsNotReady, match="disk images only"):
        await driver.change_power(vps, PowerAction.START)


# -- re-attach, stale files, no orphans ------------------------------------------------------


async def test_a_new_driver_on_the_same_data_dir_finds_the_running_vm(
    driver: QemuDriver,
    qemu_img: QemuImg,
    make_disks: DiskFactory,
    machines: ManagedMachines,
    live_timeouts: LiveTimeouts,
) -> None:
    vps = await running_vps(driver, make_disks)
    pid = machines.pid(vps.id)

    # What an API restart amounts to: nothing survives but the data dir.
    restarted_machines = ManagedMachines(machines.root.parent)
    restarted = QemuDriver(qemu_img, restarted_machines, live_timeouts)

    assert await restarted.power_state(vps) is PowerState.RUNNING
    again = await restarted.change_power(vps, PowerAction.START)
    assert again.power_state_before is PowerState.RUNNING
    assert restarted_machines.pid(vps.id) == pid  # re-attached, not started twice
    taken = await restarted.create_snapshot(vps, SnapshotRequest(name="after-restart"))
    assert taken.consistency is Consistency.CRASH
    assert [p.name for p in await restarted.list_restore_points(vps)] == ["after-restart"]


async def test_a_vm_killed_behind_our_back_is_stopped_and_starts_again(
    driver: QemuDriver, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    vps = await running_vps(driver, make_disks)
    pid = machines.pid(vps.id)
    assert pid is not None
    os.kill(pid, 9)
    for _ in range(100):
        if machines.pid(vps.id) is None:
            break
        await asyncio.sleep(0.05)

    machine = machines.dir_for(vps.id)
    assert machine.qmp_socket.exists()  # QEMU had no chance to clean up
    assert await driver.power_state(vps) is PowerState.STOPPED

    outcome = await driver.change_power(vps, PowerAction.START)
    assert outcome.power_state_after is PowerState.RUNNING
    assert machines.pid(vps.id) not in (None, pid)


async def test_a_stale_pidfile_naming_another_process_is_never_trusted(
    driver: QemuDriver, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    vps = make_vps(await make_disks(1), machine=VM)
    machine = machines.dir_for(vps.id)
    machine.path.mkdir(parents=True)
    # This test's own pid: alive, but not a QEMU of this directory.
    machine.pidfile.write_text(f"{os.getpid()}\n")
    machine.qmp_socket.write_text("")

    assert machines.pid(vps.id) is None
    assert await driver.power_state(vps) is PowerState.STOPPED
    stopped = await driver.change_power(vps, PowerAction.STOP)
    assert stopped.power_state_after is PowerState.STOPPED  # and pytest still lives

    await driver.change_power(vps, PowerAction.START)
    assert machines.pid(vps.id) not in (None, os.getpid())


async def test_a_data_dir_longer_than_a_unix_address_runs_vms_all_the_same(
    qemu_img: QemuImg,
    make_disks: DiskFactory,
    live_timeouts: LiveTimeouts,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # The data dir is the provider's choice; a unix socket address holds 107 bytes of path.
    # Before, a data dir of ~50 bytes or more refused every start ("would not fit").
    data_dir = tmp_path_factory.mktemp("vm") / ("a-provider-chose-a-deep-directory-" * 3)
    machines = ManagedMachines(data_dir, timeout=30.0)
    driver = QemuDriver(qemu_img, machines, live_timeouts)
    vps = make_vps(await make_disks(1), machine=VM)
    machine = machines.dir_for(vps.id)
    assert min(len(os.fsencode(p)) for p in machine.files()) > MAX_ADDRESS_BYTES
    try:
        started = await driver.change_power(vps, PowerAction.START)
        assert started.power_state_after is PowerState.RUNNING
        assert machine.qmp_socket.is_socket()
        assert machine.status_socket.is_socket()
        assert machine.guest_agent_socket.is_socket()
        # The status monitor, the job monitor (a live snapshot) and the agent channel's state
        # (asked by chardev id: no agent runs here, so no wait) over the long paths.
        assert await driver.power_state(vps) is PowerState.RUNNING
        taken = await driver.create_snapshot(vps, SnapshotRequest(name="deep", quiesce=True))
        assert taken.consistency_reason == QUIESCE_NO_AGENT
        # A restarted control plane finds the VM by its pid file.
        assert ManagedMachines(data_dir).pid(vps.id) == machines.pid(vps.id) is not None
        stopped = await driver.change_power(vps, PowerAction.STOP)
        assert stopped.power_state_after is PowerState.STOPPED
        assert [p for p in machine.files() if p.exists()] == []
    finally:
        for vps_id, _ in list(machines.running()):
            await machines.kill(vps_id)
    assert qemu_pids_under(data_dir) == []


async def test_a_pid_file_naming_a_process_that_only_mentions_the_directory_is_not_trusted(
    driver: QemuDriver, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    # A VM is recognised by its pid file as a whole argument of a QEMU command line; a process
    # whose arguments merely contain that path (here: a longer one) is someone else's.
    vps = make_vps(await make_disks(1), machine=VM)
    machine = machines.dir_for(vps.id)
    machine.path.mkdir(parents=True)
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)", "qemu-system", f"{machine.pidfile}.old"
    )
    try:
        machine.pidfile.write_text(f"{other.pid}\n")
        assert machines.pid(vps.id) is None
        assert await driver.power_state(vps) is PowerState.STOPPED
    finally:
        other.kill()
        await other.wait()


async def test_stop_leaves_no_process_and_no_files(
    driver: QemuDriver, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    vps = await running_vps(driver, make_disks)
    await driver.change_power(vps, PowerAction.STOP)

    assert qemu_pids_under(machines.root) == []
    assert [p for p in machines.dir_for(vps.id).files() if p.exists()] == []


async def test_a_failed_launch_reports_qemus_error_to_the_operator(
    qemu_img: QemuImg, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    driver = QemuDriver(qemu_img, machines)
    vps = make_vps(await make_disks(1), machine=LaunchSpec(64, 1, ("-no-such-option",)))
    with pytest.raises(HypervisorError, match="could not be started") as caught:
        await driver.change_power(vps, PowerAction.START)
    # QEMU's own words (with its command line) are for the operator's log only.
    assert "no-such-option" not in caught.value.detail
    assert "no-such-option" in (caught.value.log_detail or "")
    assert machines.pid(vps.id) is None


# -- attached VMs ------------------------------------------------------------------------------


async def test_attached_vm_live_snapshots_and_what_vpsnap_cannot_do(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory, qemu_img: QemuImg
) -> None:
    vps = await attached_vps(machines, make_disks)
    assert isinstance(vps.machine, QmpAttachment)
    data = VmData(qemu_img, vps.disks, vps.machine.qmp_socket, is_running=lambda: True)
    assert await driver.power_state(vps) is PowerState.RUNNING

    await data.write(0xA1)
    await driver.create_snapshot(vps, SnapshotRequest(name="disk", quiesce=False))
    await driver.create_snapshot(vps, SnapshotRequest(name="ram", include_memory_state=True))
    await data.write(0xB2)

    with pytest.raises(VpsNotReady, match="Stop the VM first"):
        await driver.restore_snapshot(vps, "disk")
    outcome = await driver.restore_snapshot(vps, "ram")
    assert outcome.power_state_after is PowerState.RUNNING
    assert await data.holds(0xA1)
    with pytest.raises(VpsNotReady, match="restart with force"):
        await driver.change_power(vps, PowerAction.RESTART)
    await driver.change_power(vps, PowerAction.RESTART, force=True)

    stopped = await driver.change_power(vps, PowerAction.STOP)
    assert stopped.power_state_after is PowerState.STOPPED
    with pytest.raises(VpsNotReady, match="its owner must start it"):
        await driver.change_power(vps, PowerAction.START)
    # Stopped, its disks are free: the offline path takes over.
    await driver.restore_snapshot(vps, "disk")
    assert [p.name for p in await driver.list_restore_points(vps)] == ["disk", "ram"]


async def test_a_busy_monitor_reads_as_unknown_quickly(
    driver: QemuDriver,
    machines: ManagedMachines,
    make_disks: DiskFactory,
    live_timeouts: LiveTimeouts,
) -> None:
    vps = await attached_vps(machines, make_disks)
    assert isinstance(vps.machine, QmpAttachment)
    async with open_monitor(vps.machine.qmp_socket, 10):
        # Someone else holds the only monitor of this VM.
        started = time.monotonic()
        assert await driver.power_state(vps) is PowerState.UNKNOWN
        assert time.monotonic() - started < live_timeouts.status + 1
    assert await driver.power_state(vps) is PowerState.RUNNING


async def test_status_reads_of_a_managed_vm_do_not_wait_for_its_job_monitor(
    driver: QemuDriver, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    vps = await running_vps(driver, make_disks)
    async with open_monitor(str(machines.dir_for(vps.id).qmp_socket), 10):
        assert await driver.power_state(vps) is PowerState.RUNNING


# -- guest agent -------------------------------------------------------------------------------


async def test_no_agent_in_the_guest_gives_a_crash_consistent_snapshot_at_once(
    driver: QemuDriver, make_disks: DiskFactory, live_timeouts: LiveTimeouts
) -> None:
    # The managed VM has the agent channel, but no OS opened it: QEMU says so, no waiting.
    vps = await running_vps(driver, make_disks)
    started = time.monotonic()
    taken = await driver.create_snapshot(vps, SnapshotRequest(name="q", quiesce=True))
    elapsed = time.monotonic() - started

    assert taken.consistency is Consistency.CRASH
    assert taken.consistency_reason == QUIESCE_NO_AGENT
    assert elapsed < live_timeouts.guest_agent
    assert [p.name for p in await driver.list_restore_points(vps)] == ["q"]

    unquiesced = await driver.create_snapshot(vps, SnapshotRequest(name="u", quiesce=False))
    assert unquiesced.consistency_reason == "quiesce was not requested"
    await driver.change_power(vps, PowerAction.STOP)
    offline = await driver.create_snapshot(vps, SnapshotRequest(name="off", quiesce=True))
    assert offline.consistency_reason is not None
    assert offline.consistency_reason.startswith("the VM was not running")


async def test_an_attached_vm_without_an_agent_channel_says_so(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory
) -> None:
    vps = await attached_vps(machines, make_disks)
    taken = await driver.create_snapshot(vps, SnapshotRequest(name="q", quiesce=True))
    assert taken.consistency is Consistency.CRASH
    assert taken.consistency_reason == "the VM was registered without a guest-agent channel"


async def test_an_agent_that_never_answers_costs_one_timeout(
    driver: QemuDriver,
    machines: ManagedMachines,
    make_disks: DiskFactory,
    tmp_path: Path,
    live_timeouts: LiveTimeouts,
) -> None:
    agent = GuestAgentStandIn(str(tmp_path / "qga.sock"), silent=True)
    async with agent.serving():
        vps = await attached_vps(machines, make_disks, agent.path)
        started = time.monotonic()
        taken = await driver.create_snapshot(vps, SnapshotRequest(name="q", quiesce=True))
        elapsed = time.monotonic() - started

    assert taken.consistency is Consistency.CRASH
    assert taken.consistency_reason == "the guest agent did not answer within 1 s"
    assert taken.freeze_window_ms is None
    assert live_timeouts.guest_agent <= elapsed < live_timeouts.guest_agent + 2
    # Only the handshake was tried: no freeze was sent, so none needs a thaw.
    assert agent.calls == ["guest-sync-delimited"]
    assert [p.name for p in await driver.list_restore_points(vps)] == ["q"]


async def test_an_answering_agent_freezes_and_thaws(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory, tmp_path: Path
) -> None:
    agent = GuestAgentStandIn(str(tmp_path / "qga.sock"))
    async with agent.serving():
        vps = await attached_vps(machines, make_disks, agent.path)
        taken = await driver.create_snapshot(vps, SnapshotRequest(name="fs", quiesce=True))

    assert taken.consistency is Consistency.FILESYSTEM
    assert taken.consistency_reason is None
    # The state is read before (a leftover freeze?) and after (really thawed?).
    assert agent.calls == [
        "guest-sync-delimited",
        "guest-fsfreeze-status",
        "guest-fsfreeze-freeze",
        "guest-fsfreeze-thaw",
        "guest-fsfreeze-status",
    ]
    assert taken.freeze_window_ms is not None and taken.freeze_window_ms > 0
    assert taken.thaw_confirmed is True
    assert taken.leftover_freeze_thawed is False


async def test_thaw_is_sent_when_the_snapshot_fails(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory, tmp_path: Path
) -> None:
    agent = GuestAgentStandIn(str(tmp_path / "qga.sock"))
    async with agent.serving():
        vps = await attached_vps(machines, make_disks, agent.path, read_only_second_disk=True)
        with pytest.raises(HypervisorError, match="refused to take the disk snapshot") as caught:
            await driver.create_snapshot(vps, SnapshotRequest(name="fs", quiesce=True))
    assert "read only" in (caught.value.log_detail or "")  # QEMU's reason, for the operator

    freeze = agent.calls.index("guest-fsfreeze-freeze")
    assert "guest-fsfreeze-thaw" in agent.calls[freeze:]
    assert agent.frozen is False
    assert await driver.list_restore_points(vps) == []  # the transaction left nothing


async def test_a_late_freeze_is_still_thawed_and_not_claimed(
    driver: QemuDriver,
    machines: ManagedMachines,
    make_disks: DiskFactory,
    tmp_path: Path,
    live_timeouts: LiveTimeouts,
) -> None:
    agent = GuestAgentStandIn(
        str(tmp_path / "qga.sock"), freeze_delay=live_timeouts.guest_freeze + 0.5
    )
    async with agent.serving():
        vps = await attached_vps(machines, make_disks, agent.path)
        taken = await driver.create_snapshot(vps, SnapshotRequest(name="late", quiesce=True))

    assert taken.consistency is Consistency.CRASH
    assert taken.consistency_reason == (
        "the guest agent did not finish freezing the guest's filesystems within 1 s"
    )
    # The late freeze reply was not taken for the thaw's answer (ids), and the thaw was
    # confirmed by reading the state back.
    assert agent.calls[-2:] == ["guest-fsfreeze-thaw", "guest-fsfreeze-status"]
    assert agent.frozen is False
    assert taken.thaw_confirmed is True


async def test_a_freeze_left_in_place_is_thawed_first_and_recorded(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory, tmp_path: Path
) -> None:
    # A dead agent's or a crashed vpsnap's freeze: the guest's writes hang until someone thaws.
    agent = GuestAgentStandIn(str(tmp_path / "qga.sock"), frozen=True)
    async with agent.serving():
        vps = await attached_vps(machines, make_disks, agent.path)
        taken = await driver.create_snapshot(vps, SnapshotRequest(name="fs", quiesce=True))

    assert agent.calls[:4] == [
        "guest-sync-delimited",
        "guest-fsfreeze-status",
        "guest-fsfreeze-thaw",
        "guest-fsfreeze-freeze",
    ]
    assert taken.leftover_freeze_thawed is True
    assert taken.consistency is Consistency.FILESYSTEM
    assert agent.frozen is False


async def test_a_refused_freeze_says_why_in_the_reason(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory, tmp_path: Path
) -> None:
    agent = GuestAgentStandIn(
        str(tmp_path / "qga.sock"),
        refuse_freeze="failed to freeze /srv: Device or resource busy",
    )
    async with agent.serving():
        vps = await attached_vps(machines, make_disks, agent.path)
        taken = await driver.create_snapshot(vps, SnapshotRequest(name="r", quiesce=True))

    assert taken.consistency is Consistency.CRASH
    assert taken.consistency_reason == (
        "the guest agent could not freeze: failed to freeze /srv: Device or resource busy"
    )
    # A failed freeze may have frozen some filesystems before it failed: thaw anyway.
    assert "guest-fsfreeze-thaw" in agent.calls
    assert [p.name for p in await driver.list_restore_points(vps)] == ["r"]


async def test_an_agent_that_dies_frozen_is_waited_for_and_told_to_thaw(
    driver: QemuDriver,
    machines: ManagedMachines,
    make_disks: DiskFactory,
    tmp_path: Path,
    live_timeouts: LiveTimeouts,
) -> None:
    agent = GuestAgentStandIn(str(tmp_path / "qga.sock"), dies_on_freeze=True)
    async with agent.serving():
        vps = await attached_vps(machines, make_disks, agent.path)

        async def restart_later() -> None:
            # The guest's init restarts the agent a while after the freeze went unanswered.
            await asyncio.sleep(live_timeouts.guest_freeze + 1.0)
            agent.restart()

        restarter = asyncio.create_task(restart_later())
        taken = await driver.create_snapshot(vps, SnapshotRequest(name="k", quiesce=True))
        await restarter

    assert taken.consistency is Consistency.CRASH
    assert taken.consistency_reason is not None
    assert "did not finish freezing" in taken.consistency_reason
    assert taken.thaw_confirmed is True
    assert agent.frozen is False


async def test_an_agent_that_never_comes_back_is_reported_not_thawed(
    driver: QemuDriver,
    machines: ManagedMachines,
    make_disks: DiskFactory,
    tmp_path: Path,
    live_timeouts: LiveTimeouts,
) -> None:
    agent = GuestAgentStandIn(str(tmp_path / "qga.sock"), dies_on_freeze=True)
    async with agent.serving():
        vps = await attached_vps(machines, make_disks, agent.path)
        started = time.monotonic()
        taken = await driver.create_snapshot(vps, SnapshotRequest(name="k", quiesce=True))
        elapsed = time.monotonic() - started

    assert taken.thaw_confirmed is False
    assert agent.frozen is True  # nothing could thaw it: the job result says so
    limit = live_timeouts.guest_freeze + live_timeouts.guest_agent_recovery
    assert limit <= elapsed < limit + 3
    assert [p.name for p in await driver.list_restore_points(vps)] == ["k"]
