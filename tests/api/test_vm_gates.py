"""Issue 9, kinds 2 and 3 through the real app and real QEMU: the snapshot listing's gates say
what the running VM allows (``actions.canCreateWithMemory``, a snapshot's
``actions.canRestore``), and the jobs refuse the same with the same codes, touching nothing.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from tests.conftest import Api
from tests.drivers.support import make_vps
from tests.drivers.vm_support import read_shared, write_running
from vpsnap.domain.model import LaunchSpec, QmpAttachment
from vpsnap.drivers.machines import ManagedMachines, bind_sockets, launch_arguments
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.drivers.qmp import open_monitor
from vpsnap.services.accounts import NewVps

pytestmark = pytest.mark.qemu

A, B = 0xA1, 0xB2
REGION = (0, 64 * 1024)


@pytest.fixture(autouse=True)
def _needs_qemu_system() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is not on PATH; install qemu-system-x86")


async def listing(api: Api, vps_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def job_of(api: Api, response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return await api.wait_job(response.json()["operation"]["jobId"])


async def power(api: Api, vps_id: str, action: str) -> dict[str, Any]:
    return await job_of(
        api,
        await api.client.post(f"/api/v2/vps/{vps_id}/actions/{action}", headers=api.auth()),
    )


async def snapshot(api: Api, vps_id: str, name: str, *, memory: bool) -> dict[str, Any]:
    return await job_of(
        api,
        await api.client.post(
            f"/api/v2/vps/{vps_id}/snapshots",
            json={"name": name, "includeMemoryState": memory},
            headers=api.auth(),
        ),
    )


async def restore(api: Api, vps_id: str, name: str) -> dict[str, Any]:
    return await job_of(
        api,
        await api.client.post(
            f"/api/v2/vps/{vps_id}/snapshots/{name}/actions/restore", headers=api.auth()
        ),
    )


async def test_the_gates_follow_the_running_vm_and_the_jobs_agree(api: Api) -> None:
    raw = api.data_dir / "data.raw"
    await asyncio.to_thread(raw.write_bytes, b"\0" * (8 * 1024 * 1024))
    spec = LaunchSpec(64, 1, ("-drive", f"if=virtio,format=raw,file={raw},id=data0"))
    # A disk of its own: one disk file belongs to one VPS (issue 9, kind 4).
    own = api.data_dir / "raw-drive.qcow2"
    await QemuImg().create_image(own, 64 * 1024 * 1024)
    vps = await api.runtime.services.accounts.add_vps(
        NewVps(
            account_name="demo",
            name="raw-drive",
            disks=(str(own),),
            snapshot_slots=3,
            machine=spec,
        )
    )
    # Stopped: a snapshot "with RAM" is taken without it, so nothing to refuse.
    stopped = await listing(api, vps.id)
    assert stopped["actions"]["canCreateWithMemory"] == {
        "allowed": True,
        "reason": None,
        "code": None,
    }
    assert (await power(api, vps.id, "start"))["status"] == "completed"
    try:
        running = await listing(api, vps.id)
        gate = running["actions"]["canCreateWithMemory"]
        assert gate["allowed"] is False
        assert gate["code"] == "memory_snapshot_unsupported"
        assert "data0" in gate["reason"]
        assert str(raw) not in gate["reason"]
        assert running["actions"]["canCreate"]["allowed"] is True  # disk-only stays possible

        refused = await snapshot(api, vps.id, "ram", memory=True)
        assert refused["status"] == "failed"
        assert refused["error"]["code"] == gate["code"]
        disks = await snapshot(api, vps.id, "disks", memory=False)
        assert disks["status"] == "completed"
        [item] = (await listing(api, vps.id))["data"]
        assert item["name"] == "disks"
        assert item["actions"]["canRestore"]["allowed"] is True
    finally:
        await power(api, vps.id, "stop")


async def start_owner_vm(machines: ManagedMachines, disks: tuple[str, ...], mib: int) -> str:
    """A VM run by "someone else": QEMU started directly; returns its QMP socket."""
    owner = make_vps(disks, vps_id="owner")
    machine = machines.dir_for(owner.id)
    machine.path.mkdir(parents=True, exist_ok=True)
    with bind_sockets(machine) as sockets:
        proc = await asyncio.create_subprocess_exec(
            "qemu-system-x86_64",
            *launch_arguments(owner, LaunchSpec(mib, 1), machine, sockets),
            stderr=asyncio.subprocess.PIPE,
            pass_fds=sockets.fds,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    return str(machine.qmp_socket)


async def test_issue_reproduction_restore_into_an_attached_vm_given_more_ram(api: Api) -> None:
    # An attached VM: snapshot with memory at -m 32; the owner restarts QEMU with -m 48;
    # restore. Before: the disks were rolled back, the RAM load failed (Error -22), the API
    # showed `paused`, and `start` ran the guest on half-loaded RAM.
    machines = ManagedMachines(api.data_dir / "owner-vms")
    disk = str(api.data_dir / "attached.qcow2")  # its own: one disk file, one VPS
    await QemuImg().create_image(disk, 64 * 1024 * 1024)
    socket = await start_owner_vm(machines, (disk,), 32)
    vps = await api.runtime.services.accounts.add_vps(
        NewVps(
            account_name="demo",
            name="attached",
            disks=(disk,),
            snapshot_slots=2,
            machine=QmpAttachment(socket),
        )
    )
    try:
        await write_running(socket, disk, *REGION, A)
        taken = await snapshot(api, vps.id, "ram", memory=True)
        assert taken["status"] == "completed", taken
        async with open_monitor(socket, 10) as monitor:
            await monitor.execute("quit")
        assert await machines.wait_exit("owner", 10)
        await start_owner_vm(machines, (disk,), 48)
        await write_running(socket, disk, *REGION, B)
        # The owner changed the VM behind vpsnap's back: the gate says so once the node's
        # agent has seen it (its periodic refresh, VPSNAP_POWER_REFRESH_SECONDS).
        await api.runtime.observer().refresh_power_states()

        [item] = (await listing(api, vps.id))["data"]
        gate = item["actions"]["canRestore"]
        assert (gate["allowed"], gate["code"]) == (False, "vm_config_changed")
        assert "32 MiB" in gate["reason"]
        assert "48 MiB" in gate["reason"]

        job = await restore(api, vps.id, "ram")

        assert job["status"] == "failed"
        assert (job["error"]["code"], job["error"]["status"]) == ("vm_config_changed", 409)
        shown = await api.client.get(f"/api/v2/vps/{vps.id}", headers=api.auth())
        assert shown.json()["powerState"] == "running"
        assert await read_shared(disk, *REGION, B)  # nothing was rolled back
        [item] = (await listing(api, vps.id))["data"]
        assert item["status"] == "available"
    finally:
        for vps_id, _ in list(machines.running()):
            await machines.kill(vps_id)
