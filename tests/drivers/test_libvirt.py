"""LibvirtDriver beyond the shared contracts (test_contract_libvirt.py): paused domains, what
lands on the disks, names, power actions in detail, and how libvirt failures reach the user."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from vpsnap.domain.errors import (
    DiskUnusable,
    HypervisorError,
    SnapshotNameTaken,
    VmConfigChanged,
    VpsNotReady,
)
from vpsnap.domain.model import Consistency, LibvirtDomain, PowerAction, PowerState
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers.libvirt import LibvirtDriver, from_libvirt_name, to_libvirt_name

from . import libvirt_lab
from .libvirt_lab import URI, LibvirtLab
from .support import make_vps

if TYPE_CHECKING:
    from .support import DiskFactory

pytestmark = [pytest.mark.qemu, pytest.mark.libvirt]

A, B = 0xA1, 0xB2


async def running(lab: LibvirtLab, make_disks: DiskFactory) -> libvirt_lab.LabDomain:
    domain = lab.define(await make_disks(2))
    domain.dom.create()
    return domain


def qcow2_snapshots(disk: str) -> str:
    return subprocess.run(
        ["qemu-img", "snapshot", "-U", "-l", disk], capture_output=True, text=True, check=True
    ).stdout


# -- snapshots of live domains -------------------------------------------------------------------


async def test_paused_domain_is_snapshotted_and_restored_paused(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    domain = await running(lab, make_disks)
    domain.dom.suspend()
    vps = domain.vps()
    assert await libvirt_driver.power_state(vps) is PowerState.PAUSED
    await libvirt_lab.write(domain, A)
    taken = await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="p"))
    assert (taken.consistency, taken.includes_memory_state) == (Consistency.MEMORY, True)
    await libvirt_lab.write(domain, B)

    outcome = await libvirt_driver.restore_snapshot(vps, "p")

    assert (outcome.power_state_before, outcome.power_state_after) == (
        PowerState.PAUSED,
        PowerState.PAUSED,
    )
    assert await libvirt_lab.holds(domain, A)


async def test_live_delete_removes_it_from_libvirt_and_the_disks(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    domain = await running(lab, make_disks)
    vps = domain.vps()
    await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="keep"))
    await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="drop"))

    await libvirt_driver.delete_snapshot(vps, "drop")
    await libvirt_driver.delete_snapshot(vps, "drop")

    assert [p.name for p in await libvirt_driver.list_restore_points(vps)] == ["keep"]
    for disk in domain.disks:
        listing = qcow2_snapshots(disk)
        assert " keep " in listing
        assert " drop " not in listing


# -- names -----------------------------------------------------------------------------------


async def test_a_name_made_outside_vpsnap_is_taken_ignoring_case(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    domain = lab.define(await make_disks(1))
    domain.dom.snapshotCreateXML("<domainsnapshot><name>Before-Upgrade</name></domainsnapshot>")

    with pytest.raises(SnapshotNameTaken, match="Before-Upgrade already exists on disk"):
        await libvirt_driver.create_snapshot(domain.vps(), SnapshotRequest(name="before-upgrade"))
    assert [p.name for p in await libvirt_driver.list_restore_points(domain.vps())] == [
        "Before-Upgrade"
    ]


async def test_numeric_names_are_kept_apart_from_qcow2_ids(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    # QEMU loads a snapshot by id first, so a snapshot literally named "2" could load id 2.
    assert (to_libvirt_name("2"), to_libvirt_name("a2"), to_libvirt_name("2-b")) == (
        "#2",
        "a2",
        "2-b",
    )
    assert (from_libvirt_name("#2"), from_libvirt_name("#x"), from_libvirt_name("2")) == (
        "2",
        "#x",
        "2",
    )
    domain = await running(lab, make_disks)
    vps = domain.vps()
    await libvirt_lab.write(domain, A)
    await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="2"))  # id 1 on the disks
    await libvirt_lab.write(domain, B)
    await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="x"))  # id 2

    await libvirt_driver.restore_snapshot(vps, "2")

    assert await libvirt_lab.holds(domain, A)
    assert [s.getName() for s in domain.dom.listAllSnapshots(0)].count("#2") == 1
    assert [p.name for p in await libvirt_driver.list_restore_points(vps)] == ["2", "x"]


# -- power -----------------------------------------------------------------------------------


async def test_power_actions_are_idempotent_and_reach_their_state(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    domain = lab.define(await make_disks(1))
    vps = domain.vps(by_name=True)  # a domain may be named instead of its UUID
    power = libvirt_driver.change_power

    started = await power(vps, PowerAction.START)
    assert (started.power_state_before, started.power_state_after) == (
        PowerState.STOPPED,
        PowerState.RUNNING,
    )
    assert (await power(vps, PowerAction.START)).power_state_after is PowerState.RUNNING
    assert (await power(vps, PowerAction.RESET)).power_state_after is PowerState.RUNNING
    pid_before = _qemu_pid(domain.name)
    assert (await power(vps, PowerAction.RESTART, force=True)).power_state_after is (
        PowerState.RUNNING
    )
    assert _qemu_pid(domain.name) != pid_before  # a real stop and start, not a reset

    stopped = await power(vps, PowerAction.STOP)
    assert stopped.power_state_after is PowerState.STOPPED
    assert (await power(vps, PowerAction.STOP)).power_state_after is PowerState.STOPPED
    assert (await power(vps, PowerAction.SHUTDOWN)).power_state_after is PowerState.STOPPED
    with pytest.raises(VpsNotReady, match="nothing to reset"):
        await power(vps, PowerAction.RESET)
    # restart of a stopped domain starts it
    assert (await power(vps, PowerAction.RESTART)).power_state_after is PowerState.RUNNING

    domain.dom.suspend()
    resumed = await power(vps, PowerAction.START)
    assert (resumed.power_state_before, resumed.power_state_after) == (
        PowerState.PAUSED,
        PowerState.RUNNING,
    )


async def test_graceful_shutdown_ignored_by_the_guest_is_not_ready_after_the_timeout(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    domain = await running(lab, make_disks)  # no OS: nothing answers the ACPI power button
    started = time.monotonic()

    with pytest.raises(VpsNotReady, match="did not power off within 2s"):
        await libvirt_driver.change_power(domain.vps(), PowerAction.SHUTDOWN)

    assert time.monotonic() - started < 10
    assert domain.dom.isActive()


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["vpsnap-test-never-defined", "the-uuid"])
async def test_a_missing_domain_is_a_clear_hypervisor_error(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory, reference: str
) -> None:
    if reference == "the-uuid":
        gone = lab.define(await make_disks(1, prefix="gone"))
        reference = gone.uuid
        gone.dom.undefine()
    vps = dataclasses.replace(
        lab.define(await make_disks(1)).vps(), machine=LibvirtDomain(URI, reference)
    )

    for call in (
        libvirt_driver.power_state(vps),
        libvirt_driver.list_restore_points(vps),
        libvirt_driver.create_snapshot(vps, SnapshotRequest(name="s")),
    ):
        with pytest.raises(VmConfigChanged) as caught:
            await call
        # Permanent until the provider registers the domain again: 409, not a retryable 503;
        # the domain's name or UUID is the operator's business (the log has it).
        assert "undefined or renamed" in caught.value.detail
        assert reference not in caught.value.detail
        assert reference in (caught.value.log_detail or "")
        assert caught.value.code == "vm_config_changed"


async def test_a_page_of_power_states_answers_each_domain_on_its_own(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory, tmp_path: Path
) -> None:
    here = lab.define(await make_disks(1)).vps()
    up = (await running(lab, make_disks)).vps()
    gone = dataclasses.replace(here, machine=LibvirtDomain(URI, "no-such-domain"))
    unreachable = dataclasses.replace(
        here, machine=LibvirtDomain(f"qemu:///system?socket={tmp_path}/no.sock", "x")
    )

    states = await libvirt_driver.power_states([here, gone, up, unreachable, here])

    # A missing domain and an unreachable libvirtd fail only their own VPS, with the error
    # power_state raises for it.
    assert states[0] is states[4] is PowerState.STOPPED
    assert states[2] is PowerState.RUNNING
    assert isinstance(states[1], VmConfigChanged)
    assert isinstance(states[3], HypervisorError)
    assert states[3].code == "hypervisor_unavailable"


async def test_an_unreachable_libvirt_is_a_hypervisor_error(
    libvirt_driver: LibvirtDriver, lab: LibvirtLab, make_disks: DiskFactory, tmp_path: Path
) -> None:
    uri = f"qemu:///system?socket={tmp_path}/no-such.sock"
    vps = dataclasses.replace(
        lab.define(await make_disks(1)).vps(), machine=LibvirtDomain(uri, "whatever")
    )

    with pytest.raises(HypervisorError, match="cannot be reached") as caught:
        await libvirt_driver.power_state(vps)
    assert caught.value.code == "hypervisor_unavailable"  # libvirtd may come back: retry
    assert "cannot connect to libvirt at qemu:///system" in (caught.value.log_detail or "")


async def test_a_disk_libvirt_cannot_snapshot_internally_fails_the_snapshot_cleanly(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory, tmp_path: Path
) -> None:
    [qcow2] = await make_disks(1)
    raw = tmp_path / "data.raw"
    await asyncio.to_thread(
        subprocess.run, ["qemu-img", "create", "-q", "-f", "raw", str(raw), "16M"], check=True
    )
    domain = lab.define((qcow2,))
    xml = domain.dom.XMLDesc(0).replace(
        "</devices>",
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{raw}'/><target dev='hdb' bus='ide'/></disk></devices>",
    )
    lab.conn.defineXML(xml)

    # Stopped: libvirt snapshots every disk, and a raw one cannot take an internal snapshot.
    with pytest.raises(DiskUnusable, match=r"\(hdb: not qcow2\)") as caught:
        await libvirt_driver.create_snapshot(domain.vps(), SnapshotRequest(name="s"))
    assert caught.value.extensions == {"devices": ["hdb"]}
    assert await libvirt_driver.list_restore_points(domain.vps()) == []
    assert " s " not in qcow2_snapshots(qcow2)


async def test_the_connection_is_reopened_after_libvirtd_restarts(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    pid = await asyncio.to_thread(_libvirtd_we_started)
    domain = await running(lab, make_disks)
    vps = domain.vps()
    await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="before"))

    await asyncio.to_thread(_restart_libvirtd, pid)
    lab.reconnect()

    # The first call after the restart meets the dead connection and reopens it.
    await libvirt_driver.probe()
    assert await libvirt_driver.power_state(vps) is PowerState.RUNNING
    await libvirt_driver.create_snapshot(vps, SnapshotRequest(name="after"))
    assert [p.name for p in await libvirt_driver.list_restore_points(vps)] == ["before", "after"]


def _libvirtd_we_started() -> int:
    pid_file = Path("/run/libvirtd.pid")
    if Path("/run/systemd/system").exists() or not pid_file.exists():
        pytest.skip("restarts only a libvirtd that scripts/libvirtd started (no systemd here)")
    return int(pid_file.read_text().strip())


def _restart_libvirtd(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "libvirtd did not stop"
        time.sleep(0.1)
    subprocess.run([str(libvirt_lab.ROOT / "scripts" / "libvirtd")], check=True)


def _qemu_pid(name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())


async def test_blocking_libvirt_calls_leave_the_event_loop_free(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> None:
    domain = await running(lab, make_disks)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    try:
        await libvirt_driver.create_snapshot(domain.vps(), SnapshotRequest(name="s"))
    finally:
        ticker.cancel()
    assert ticks > 1


class _HungConnection:
    """Stands in for a libvirtd that accepted the connection and then stopped answering."""

    def isAlive(self) -> bool:  # noqa: N802 - libvirt's method name
        return True

    def lookupByUUIDString(self, _uuid: str) -> None:  # noqa: N802
        time.sleep(1.5)

    def close(self) -> None:
        pass


async def test_a_hung_libvirtd_is_bounded_by_the_timeouts() -> None:
    driver = LibvirtDriver(
        status_timeout=0.1, call_timeout=0.2, opener=lambda _uri: _HungConnection()
    )
    vps = dataclasses.replace(
        make_vps(("/x.qcow2",)),
        machine=LibvirtDomain(URI, "6f1c3a52-0000-4000-8000-000000000001"),
    )

    assert await driver.power_state(vps) is PowerState.UNKNOWN
    assert await driver.power_states([vps, vps]) == [PowerState.UNKNOWN, PowerState.UNKNOWN]
    with pytest.raises(HypervisorError, match=r"did not answer within 0\.2s"):
        await driver.create_snapshot(vps, SnapshotRequest(name="s"))
