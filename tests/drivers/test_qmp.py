"""The QMP session wrapper against a real QEMU: error mapping and job bookkeeping."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vpsnap.domain.errors import VmConfigChanged
from vpsnap.domain.model import LaunchSpec, PowerAction
from vpsnap.drivers import live
from vpsnap.drivers.qemu import QemuDriver
from vpsnap.drivers.qmp import MonitorGone, QemuRefused, open_monitor

from .support import DiskFactory, make_vps

if TYPE_CHECKING:
    from pathlib import Path

    from vpsnap.drivers.machines import ManagedMachines
    from vpsnap.drivers.qemu_img import QemuImg

pytestmark = pytest.mark.qemu


async def test_a_missing_socket_means_no_vm(tmp_path: Path) -> None:
    with pytest.raises(MonitorGone):
        async with open_monitor(str(tmp_path / "nothing.sock"), 2):
            pass


async def test_failed_job_reports_qemus_error_and_leaves_no_job(
    qemu_img: QemuImg, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    vps = make_vps(await make_disks(2), machine=LaunchSpec(64, 1))
    await QemuDriver(qemu_img, machines).change_power(vps, PowerAction.START)
    socket = str(machines.dir_for(vps.id).qmp_socket)

    async with open_monitor(socket, 10) as monitor:
        nodes = await live.disk_nodes(monitor, vps.disks)
        assert nodes == ("vd0", "vd1")
        await live.save_vm(monitor, nodes, "s", vmstate_node=nodes[0], timeout=30)
        with pytest.raises(QemuRefused, match="could not save the VM's RAM state") as saved:
            await live.save_vm(monitor, nodes, "s", vmstate_node=nodes[0], timeout=30)
        assert "already exists" in saved.value.qemu_error
        with pytest.raises(QemuRefused, match="refused to carry out the operation") as unknown:
            await monitor.execute("no-such-command")
        assert "no-such-command" in (unknown.value.log_detail or "")
        # Every job was dismissed: a re-run starts from a clean slate.
        assert await monitor.execute("query-jobs") == []


async def test_unknown_disk_is_named(
    qemu_img: QemuImg, make_disks: DiskFactory, machines: ManagedMachines
) -> None:
    vps = make_vps(await make_disks(1), machine=LaunchSpec(64, 1))
    await QemuDriver(qemu_img, machines).change_power(vps, PowerAction.START)
    async with open_monitor(str(machines.dir_for(vps.id).qmp_socket), 10) as monitor:
        with pytest.raises(VmConfigChanged, match="does not use disk 1 of the VPS") as caught:
            await live.disk_nodes(monitor, ["/elsewhere.qcow2"])
    assert "/elsewhere.qcow2" not in caught.value.detail
    assert "no qcow2 disk /elsewhere.qcow2" in (caught.value.log_detail or "")
