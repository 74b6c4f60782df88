"""Issue 9 with real QEMU: RAM snapshots that must cover every writable device (kind 2), RAM
restores into a changed VM and multi-step operations that fail half-way (kind 3), and every
QEMU run state mapped on purpose.

The VMs run no OS; what matters is what QEMU does with their RAM and disks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from typing import TYPE_CHECKING

import pytest

from vpsnap.domain.errors import (
    DiskUnusable,
    HypervisorError,
    MemorySnapshotUnsupported,
    RestoreIncomplete,
    VmConfigChanged,
    VpsNotReady,
)
from vpsnap.domain.model import (
    Consistency,
    LaunchSpec,
    PowerAction,
    PowerState,
    QmpAttachment,
    Vps,
)
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers import live
from vpsnap.drivers.machines import ManagedMachines, bind_sockets, launch_arguments
from vpsnap.drivers.qemu import LiveTimeouts, QemuDriver
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.drivers.qmp import open_monitor

from .support import DISK_SIZE, DiskFactory, make_vps
from .vm_support import VmData

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.qemu

A, B = 0xA1, 0xB2
SMALL = LaunchSpec(memory_mib=32, cpus=1)
LARGER = LaunchSpec(memory_mib=48, cpus=1)


@pytest.fixture
def driver(qemu_img: QemuImg, machines: ManagedMachines, live_timeouts: LiveTimeouts) -> QemuDriver:
    return QemuDriver(qemu_img, machines, live_timeouts)


async def raw_image(directory: Path, name: str = "data.raw") -> str:
    path = directory / name
    await asyncio.to_thread(path.write_bytes, b"")
    await asyncio.to_thread(os.truncate, path, 8 * 1024 * 1024)
    return str(path)


def with_raw_drive(spec: LaunchSpec, raw: str, drive_id: str = "data0") -> LaunchSpec:
    """The issue's VM: an extra writable raw drive passed with --qemu-arg."""
    return dataclasses.replace(
        spec,
        extra_args=(
            *spec.extra_args,
            "-drive",
            f"if=virtio,format=raw,file={raw},id={drive_id}",
        ),
    )


async def started(driver: QemuDriver, vps: Vps) -> Vps:
    outcome = await driver.change_power(vps, PowerAction.START)
    assert outcome.power_state_after is PowerState.RUNNING
    return vps


def managed_data(qemu_img: QemuImg, machines: ManagedMachines, vps: Vps) -> VmData:
    socket = str(machines.dir_for(vps.id).qmp_socket)
    return VmData(qemu_img, vps.disks, socket, is_running=lambda: machines.pid(vps.id) is not None)


async def hmp(socket: str, command: str) -> str:
    async with open_monitor(socket, 10) as monitor:
        return await monitor.human(command)


# -- kind 2: RAM state covers every writable device, or is refused ------------------------------


async def test_premise_qemus_own_savevm_refuses_an_uncovered_raw_drive(
    driver: QemuDriver, make_disks: DiskFactory, machines: ManagedMachines, tmp_path: Path
) -> None:
    # If this starts failing, QEMU changed its own check; vpsnap's stays.
    vps = make_vps(await make_disks(1), machine=with_raw_drive(SMALL, await raw_image(tmp_path)))
    await started(driver, vps)
    reply = await hmp(str(machines.dir_for(vps.id).qmp_socket), "savevm whole-vm")
    assert "Device 'data0' is writable but does not support snapshots" in reply


async def test_a_memory_snapshot_with_an_uncovered_writable_drive_is_refused(
    driver: QemuDriver,
    make_disks: DiskFactory,
    qemu_img: QemuImg,
    tmp_path: Path,
) -> None:
    raw = await raw_image(tmp_path)
    vps = make_vps(await make_disks(2), machine=with_raw_drive(SMALL, raw))
    await started(driver, vps)

    # Before the fix vpsnap's snapshot-save named only the registered disks, QEMU checked only
    # those, and the snapshot completed without data0.
    with pytest.raises(MemorySnapshotUnsupported) as caught:
        await driver.create_snapshot(vps, SnapshotRequest(name="ram", include_memory_state=True))

    assert caught.value.code == "memory_snapshot_unsupported"
    assert caught.value.extensions == {"devices": ["data0"]}
    assert "data0" in caught.value.detail
    assert raw not in caught.value.detail  # the guest-visible id, never the host path
    assert raw in (caught.value.log_detail or "")
    assert await driver.list_restore_points(vps) == []  # nothing was touched
    for disk in vps.disks:
        assert (await qemu_img.info(disk)).snapshots == ()
    # A disk-only snapshot stays possible: it claims the registered disks only.
    taken = await driver.create_snapshot(vps, SnapshotRequest(name="disks", quiesce=False))
    assert (taken.consistency, taken.includes_memory_state) == (Consistency.CRASH, False)
    facts = await driver.vm_facts(vps)
    assert facts is not None
    assert facts.uncovered_devices == ("data0",)
    assert facts.config is not None
    assert facts.config.memory_bytes == 32 * 1024 * 1024
    assert facts.restarts_for_disk_restore is True


async def test_read_only_and_empty_drives_need_no_cover(
    driver: QemuDriver, make_disks: DiskFactory, tmp_path: Path
) -> None:
    raw = await raw_image(tmp_path)
    spec = dataclasses.replace(
        SMALL,
        extra_args=(
            "-drive",
            f"if=virtio,format=raw,file={raw},id=ro0,readonly=on",
            "-drive",
            "if=ide,media=cdrom,id=cd0",
        ),
    )
    vps = await started(driver, make_vps(await make_disks(1), machine=spec))

    facts = await driver.vm_facts(vps)
    assert facts is not None
    assert facts.uncovered_devices == ()
    taken = await driver.create_snapshot(vps, SnapshotRequest(name="r", include_memory_state=True))
    assert taken.includes_memory_state is True


async def test_an_unregistered_writable_qcow2_disk_is_uncovered_too(
    driver: QemuDriver, make_disks: DiskFactory
) -> None:
    # qcow2 could be snapshotted, but vpsnap snapshots only the registered disks: the RAM would
    # not match the extra disk's data either.
    [registered, extra] = await make_disks(2)
    spec = dataclasses.replace(
        SMALL, extra_args=("-drive", f"if=virtio,format=qcow2,file={extra},id=extra0")
    )
    vps = await started(driver, make_vps((registered,), machine=spec))
    with pytest.raises(MemorySnapshotUnsupported, match="extra0"):
        await driver.create_snapshot(vps, SnapshotRequest(name="r", include_memory_state=True))


async def test_a_memory_restore_into_a_vm_that_gained_a_writable_drive_is_refused(
    driver: QemuDriver,
    make_disks: DiskFactory,
    machines: ManagedMachines,
    qemu_img: QemuImg,
    tmp_path: Path,
) -> None:
    vps = await started(driver, make_vps(await make_disks(2), machine=SMALL))
    data = managed_data(qemu_img, machines, vps)
    await data.write(A)
    taken = await driver.create_snapshot(
        vps, SnapshotRequest(name="ram", include_memory_state=True)
    )
    await data.write(B)
    await driver.change_power(vps, PowerAction.STOP)
    grown = dataclasses.replace(vps, machine=with_raw_drive(SMALL, await raw_image(tmp_path)))
    await started(driver, grown)

    with pytest.raises(MemorySnapshotUnsupported, match="data0"):
        await driver.restore_snapshot(grown, "ram", recorded=taken.vm_config)

    assert await data.holds(B)  # nothing rolled back
    assert await driver.power_state(grown) is PowerState.RUNNING


# -- kind 3: check before touching; a half-done restore leaves a defined state ------------------


async def attached(
    machines: ManagedMachines, make_disks: DiskFactory, spec: LaunchSpec, *, paused: bool = False
) -> Vps:
    """A VM "someone else" runs (QEMU started directly), registered by its QMP socket."""
    owner = make_vps(await make_disks(2, prefix="owned"), vps_id="owner-vm")
    return await run_owner_vm(machines, owner, spec, paused=paused)


async def run_owner_vm(
    machines: ManagedMachines, owner: Vps, spec: LaunchSpec, *, paused: bool = False
) -> Vps:
    machine = machines.dir_for(owner.id)
    machine.path.mkdir(parents=True, exist_ok=True)
    with bind_sockets(machine) as sockets:
        args = launch_arguments(owner, spec, machine, sockets) + (["-S"] if paused else [])
        proc = await asyncio.create_subprocess_exec(
            "qemu-system-x86_64", *args, stderr=asyncio.subprocess.PIPE, pass_fds=sockets.fds
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    return make_vps(owner.disks, vps_id="attached", machine=QmpAttachment(str(machine.qmp_socket)))


async def owner_restarts(machines: ManagedMachines, vps: Vps, spec: LaunchSpec) -> Vps:
    """The owner quits QEMU and starts it again on the same disks with another config."""
    assert isinstance(vps.machine, QmpAttachment)
    async with open_monitor(vps.machine.qmp_socket, 10) as monitor:
        await monitor.execute("quit")
    assert await machines.wait_exit("owner-vm", 10)
    owner = make_vps(vps.disks, vps_id="owner-vm")
    return await run_owner_vm(machines, owner, spec)


async def test_issue_reproduction_ram_restore_into_a_vm_with_more_ram_is_refused_untouched(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory, qemu_img: QemuImg
) -> None:
    vps = await attached(machines, make_disks, SMALL)
    assert isinstance(vps.machine, QmpAttachment)
    data = VmData(qemu_img, vps.disks, vps.machine.qmp_socket, is_running=lambda: True)
    await data.write(A)
    taken = await driver.create_snapshot(
        vps, SnapshotRequest(name="ram", include_memory_state=True)
    )
    assert taken.vm_config is not None
    assert taken.vm_config.memory_bytes == 32 * 1024 * 1024
    assert taken.vm_config.machine_type.startswith("pc-")
    vps = await owner_restarts(machines, vps, LARGER)
    await data.write(B)

    with pytest.raises(VmConfigChanged) as caught:
        await driver.restore_snapshot(vps, "ram", recorded=taken.vm_config)

    assert caught.value.code == "vm_config_changed"
    assert "32 MiB" in caught.value.detail
    assert "48 MiB" in caught.value.detail
    assert caught.value.extensions["snapshotVm"]["memoryMib"] == 32
    assert caught.value.extensions["currentVm"]["memoryMib"] == 48
    # Nothing touched: the disks keep the newer data and the guest keeps running.
    assert await data.holds(B)
    assert await driver.power_state(vps) is PowerState.RUNNING


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
async def test_a_failed_ram_load_leaves_an_attached_vm_in_error_and_start_refuses_it(
    driver: QemuDriver,
    machines: ManagedMachines,
    make_disks: DiskFactory,
    qemu_img: QemuImg,
    paused: bool,
) -> None:
    # No recorded configuration (a snapshot of an older vpsnap, or a mismatch vpsnap cannot
    # see): QEMU rolls the disks back and then fails to load the RAM.
    vps = await attached(machines, make_disks, SMALL)
    assert isinstance(vps.machine, QmpAttachment)
    data = VmData(qemu_img, vps.disks, vps.machine.qmp_socket, is_running=lambda: True)
    await data.write(A)
    await driver.create_snapshot(vps, SnapshotRequest(name="ram", include_memory_state=True))
    vps = await owner_restarts(machines, vps, LARGER)
    await data.write(B)
    if paused:
        # A paused VM stays `paused` in QEMU's run state after a failed load: only vpsnap's
        # marker tells that its RAM is now half-loaded.
        await hmp(vps.machine.qmp_socket, "stop")

    with pytest.raises(RestoreIncomplete) as caught:
        await driver.restore_snapshot(vps, "ram")

    problem = caught.value
    assert problem.code == "restore_incomplete"
    assert problem.extensions == {
        "disksRestored": [1, 2],
        "memoryRestored": False,
        "powerStateAfter": "error",
    }
    assert "every disk" in problem.detail
    assert "Error -22" in (problem.log_detail or "")
    assert await data.holds(A)  # the disks were rolled back before the RAM failed
    # Truthful and safe: `error`, and `start` will not run the guest on half-loaded RAM.
    assert await driver.power_state(vps) is PowerState.ERROR
    with pytest.raises(VpsNotReady, match="partly restored"):
        await driver.change_power(vps, PowerAction.START)
    assert await driver.power_state(vps) is PowerState.ERROR
    # A reset boots the guest from its (restored) disks: the RAM no longer matters.
    await driver.change_power(vps, PowerAction.RESET)
    assert await driver.power_state(vps) is PowerState.PAUSED  # QEMU's prelaunch
    outcome = await driver.change_power(vps, PowerAction.START)
    assert outcome.power_state_after is PowerState.RUNNING


async def test_a_failed_ram_load_powers_a_managed_vm_off(
    driver: QemuDriver,
    machines: ManagedMachines,
    make_disks: DiskFactory,
    qemu_img: QemuImg,
) -> None:
    vps = await started(driver, make_vps(await make_disks(2), machine=SMALL))
    data = managed_data(qemu_img, machines, vps)
    await data.write(A)
    taken = await driver.create_snapshot(
        vps, SnapshotRequest(name="ram", include_memory_state=True)
    )
    await driver.change_power(vps, PowerAction.STOP)
    # The operator gives the VPS more RAM (its launch spec changes) and it is started again.
    bigger = await started(driver, dataclasses.replace(vps, machine=LARGER))

    with pytest.raises(VmConfigChanged, match="32 MiB of RAM"):
        await driver.restore_snapshot(bigger, "ram", recorded=taken.vm_config)
    assert await driver.power_state(bigger) is PowerState.RUNNING

    with pytest.raises(RestoreIncomplete) as caught:
        await driver.restore_snapshot(bigger, "ram")  # nothing recorded: QEMU finds out late
    assert caught.value.extensions["powerStateAfter"] == "stopped"
    assert "powered off" in caught.value.detail
    assert machines.pid(vps.id) is None
    assert await driver.power_state(bigger) is PowerState.STOPPED
    assert await data.holds(A)
    # Start boots it from the restored disks.
    assert (await driver.change_power(bigger, PowerAction.START)).power_state_after is (
        PowerState.RUNNING
    )


async def test_a_recorded_config_that_matches_restores_ram(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory, qemu_img: QemuImg
) -> None:
    vps = await started(driver, make_vps(await make_disks(2), machine=SMALL))
    data = managed_data(qemu_img, machines, vps)
    await data.write(A)
    taken = await driver.create_snapshot(
        vps, SnapshotRequest(name="ram", include_memory_state=True)
    )
    await data.write(B)
    outcome = await driver.restore_snapshot(vps, "ram", recorded=taken.vm_config)
    assert outcome.power_state_after is PowerState.RUNNING
    assert await data.holds(A)


# -- every QEMU run state is mapped on purpose ----------------------------------------------------


async def test_every_run_state_of_this_qemu_is_mapped_explicitly(
    driver: QemuDriver, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    vps = await started(driver, make_vps(await make_disks(1), machine=SMALL))
    async with open_monitor(str(machines.dir_for(vps.id).qmp_socket), 10) as monitor:
        schema = await monitor.execute("query-qmp-schema")
    # The RunState enum as this QEMU binary defines it (names are masked in the schema, so
    # find the enum that has "restore-vm" among its values).
    enums = [e["values"] for e in schema if e.get("meta-type") == "enum"]
    [run_states] = [values for values in enums if "restore-vm" in values and "running" in values]
    assert set(run_states) <= set(live.RUN_STATES), set(run_states) - set(live.RUN_STATES)
    # Anything newer than this table reads `unknown` and is never resumed.
    assert live.RUN_STATES.get("some-future-state") is None
    assert live.RUN_STATES["restore-vm"].power_state is PowerState.ERROR
    assert not live.RUN_STATES["restore-vm"].resumable
    assert not live.RUN_STATES["inmigrate"].resumable
    assert not live.RUN_STATES["postmigrate"].resumable


# -- the other multi-step sequences ---------------------------------------------------------------

FAILING_QEMU_IMG = """#!/bin/sh
# qemu-img that fails `snapshot {flag}` on one image (a disk that breaks half-way).
case " $* " in
  *" {flag} "*"{target}"*) echo "qemu-img: injected failure on {target}" >&2; exit 1 ;;
esac
exec qemu-img "$@"
"""


def failing_qemu_img(tmp_path: Path, flag: str, target: str) -> QemuImg:
    script = tmp_path / f"qemu-img-failing{flag}"
    script.write_text(FAILING_QEMU_IMG.format(flag=flag, target=target))
    script.chmod(0o755)
    return QemuImg(str(script), timeout=30)


async def test_managed_disk_restore_failing_on_the_second_disk_leaves_the_vm_off(
    make_disks: DiskFactory,
    machines: ManagedMachines,
    qemu_img: QemuImg,
    live_timeouts: LiveTimeouts,
    tmp_path: Path,
) -> None:
    disks = await make_disks(2)
    good = QemuDriver(qemu_img, machines, live_timeouts)
    vps = await started(good, make_vps(disks, machine=SMALL))
    data = managed_data(qemu_img, machines, vps)
    await data.write(A)
    await good.create_snapshot(vps, SnapshotRequest(name="disks", quiesce=False))
    await data.write(B)
    # quit → roll back disk 1 → disk 2 fails: the disks are at two points in time.
    broken = QemuDriver(failing_qemu_img(tmp_path, "-a", disks[1]), machines, live_timeouts)

    with pytest.raises(RestoreIncomplete) as caught:
        await broken.restore_snapshot(vps, "disks")

    assert caught.value.extensions == {
        "disksRestored": [1],
        "disksNotRestored": [2],
        "memoryRestored": False,
        "powerStateAfter": "stopped",
    }
    assert f"it rolled back disk 1 of {vps.name}, but not disk 2" in caught.value.detail
    assert disks[1] not in caught.value.detail
    # Not booted on mixed disks:
    assert machines.pid(vps.id) is None
    assert await good.power_state(vps) is PowerState.STOPPED
    assert await qemu_img.read_matches(disks[0], 0, 64 * 1024, A)
    assert await qemu_img.read_matches(disks[1], 1024 * 1024, 128 * 1024, B)
    # Restoring again (the cause gone) rolls every disk back.
    await good.restore_snapshot(vps, "disks")
    assert await data.holds(A)


async def test_managed_disk_restore_failing_before_any_disk_starts_the_vm_again(
    make_disks: DiskFactory,
    machines: ManagedMachines,
    qemu_img: QemuImg,
    live_timeouts: LiveTimeouts,
    tmp_path: Path,
) -> None:
    disks = await make_disks(2)
    good = QemuDriver(qemu_img, machines, live_timeouts)
    vps = await started(good, make_vps(disks, machine=SMALL))
    await good.create_snapshot(vps, SnapshotRequest(name="disks", quiesce=False))
    broken = QemuDriver(failing_qemu_img(tmp_path, "-a", disks[0]), machines, live_timeouts)

    with pytest.raises(HypervisorError) as caught:
        await broken.restore_snapshot(vps, "disks")

    assert not isinstance(caught.value, RestoreIncomplete)  # nothing changed
    assert await good.power_state(vps) is PowerState.RUNNING  # as before the restore


STARTS_ONCE = """#!/bin/sh
# qemu-system that starts the first VM and fails every later launch (a host out of memory).
if [ -e "{flag}" ]; then echo "qemu-system: cannot allocate memory" >&2; exit 1; fi
touch "{flag}"
exec qemu-system-x86_64 "$@"
"""


async def test_managed_disk_restore_whose_restart_fails_reports_the_restored_disks(
    make_disks: DiskFactory,
    qemu_img: QemuImg,
    live_timeouts: LiveTimeouts,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("vm")
    script = root / "qemu-once"
    script.write_text(STARTS_ONCE.format(flag=root / "started"))
    script.chmod(0o755)
    machines = ManagedMachines(root, qemu_system=str(script), timeout=30)
    driver = QemuDriver(qemu_img, machines, live_timeouts)
    vps = await started(driver, make_vps(await make_disks(1), machine=SMALL))
    try:
        await driver.create_snapshot(vps, SnapshotRequest(name="disks", quiesce=False))

        with pytest.raises(RestoreIncomplete) as caught:
            await driver.restore_snapshot(vps, "disks")

        assert caught.value.extensions["disksRestored"] == [1]
        assert caught.value.extensions["powerStateAfter"] == "stopped"
        assert "could not be started again" in caught.value.detail
        assert "cannot allocate memory" in (caught.value.log_detail or "")
        assert await driver.power_state(vps) is PowerState.STOPPED
    finally:
        for vps_id, _ in list(machines.running()):
            await machines.kill(vps_id)


async def test_offline_restore_failing_half_way_says_which_disks_were_rolled_back(
    make_disks: DiskFactory, qemu_img: QemuImg, tmp_path: Path
) -> None:
    disks = await make_disks(2)
    vps = make_vps(disks)
    await QemuDriver(qemu_img).create_snapshot(vps, SnapshotRequest(name="s"))
    broken = QemuDriver(failing_qemu_img(tmp_path, "-a", disks[1]))

    with pytest.raises(RestoreIncomplete) as caught:
        await broken.restore_snapshot(vps, "s")

    assert caught.value.extensions["disksRestored"] == [1]
    assert caught.value.extensions["disksNotRestored"] == [2]
    assert caught.value.extensions["powerStateAfter"] == "stopped"


async def test_offline_delete_failing_half_way_says_where_the_snapshot_still_is(
    make_disks: DiskFactory, qemu_img: QemuImg, tmp_path: Path
) -> None:
    disks = await make_disks(2)
    vps = make_vps(disks)
    good = QemuDriver(qemu_img)
    await good.create_snapshot(vps, SnapshotRequest(name="s"))
    broken = QemuDriver(failing_qemu_img(tmp_path, "-d", disks[1]))

    with pytest.raises(HypervisorError) as caught:
        await broken.delete_snapshot(vps, "s")

    detail = caught.value.detail
    assert f"gone from disk 1 of {vps.name} but still on disk 2 of {vps.name}" in detail
    assert caught.value.extensions["deletedFromDisks"] == [1]
    await good.delete_snapshot(vps, "s")  # deleting again finishes it
    assert await good.list_restore_points(vps) == []


async def test_live_delete_failing_half_way_says_where_the_snapshot_still_is(
    driver: QemuDriver, machines: ManagedMachines, make_disks: DiskFactory, qemu_img: QemuImg
) -> None:
    # Both disks get the snapshot while the VM is off; then its owner runs it with the second
    # disk read-only, where QEMU cannot delete it.
    owner = make_vps(await make_disks(2, prefix="owned"), vps_id="owner-vm")
    offline = QemuDriver(qemu_img)
    await offline.create_snapshot(owner, SnapshotRequest(name="s"))
    machine = machines.dir_for(owner.id)
    machine.path.mkdir(parents=True)
    with bind_sockets(machine) as sockets:
        args = [
            json.dumps({**json.loads(arg), "read-only": True})
            if arg.startswith("{") and "vd1" in arg
            else arg
            for arg in launch_arguments(owner, SMALL, machine, sockets)
        ]
        proc = await asyncio.create_subprocess_exec(
            "qemu-system-x86_64", *args, stderr=asyncio.subprocess.PIPE, pass_fds=sockets.fds
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    vps = make_vps(owner.disks, vps_id="attached", machine=QmpAttachment(str(machine.qmp_socket)))

    with pytest.raises(HypervisorError) as caught:
        await driver.delete_snapshot(vps, "s")

    detail = caught.value.detail
    assert f"gone from disk 1 of {vps.name} but still on disk 2 of {vps.name}" in detail
    [point] = await driver.list_restore_points(vps)
    assert point.disks == (vps.disks[1],)


async def test_offline_create_whose_rollback_fails_says_what_it_left(
    make_disks: DiskFactory, qemu_img: QemuImg, tmp_path: Path
) -> None:
    disks = await make_disks(2)
    vps = make_vps(disks)
    # Creating on disk 2 fails, and so does deleting it again from disk 1.
    script = tmp_path / "qemu-img-both"
    script.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -c "*"{disks[1]}"*|*" -d "*"{disks[0]}"*) '
        'echo "qemu-img: injected" >&2; exit 1 ;; esac\n'
        'exec qemu-img "$@"\n'
    )
    script.chmod(0o755)
    broken = QemuDriver(QemuImg(str(script), timeout=30))

    with pytest.raises(HypervisorError) as caught:
        await broken.create_snapshot(vps, SnapshotRequest(name="half"))

    detail = caught.value.detail
    assert f"could not be removed again from disk 1 of {vps.name}" in detail
    assert caught.value.extensions["leftOnDisks"] == [1]
    assert [p.name for p in await QemuDriver(qemu_img).list_restore_points(vps)] == ["half"]


async def test_a_raw_disk_is_disk_unusable_not_retryable(
    make_disks: DiskFactory, qemu_img: QemuImg, tmp_path: Path
) -> None:
    raw = tmp_path / "raw.img"
    await asyncio.to_thread(raw.write_bytes, b"\0" * DISK_SIZE)
    vps = make_vps((*(await make_disks(1)), str(raw)))
    with pytest.raises(DiskUnusable, match="Disk 2 of"):
        await QemuDriver(qemu_img).restore_snapshot(vps, "x")
