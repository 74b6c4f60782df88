"""The driver contracts, run against QemuDriver on real two-disk qcow2 VPSes (stopped, and
running as VMs vpsnap manages)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vpsnap.domain.model import LaunchSpec, PowerAction
from vpsnap.drivers.qemu import LiveTimeouts, QemuDriver

from .contract import DriverContract, DriverEnv, LiveDriverContract
from .support import DiskFactory, make_vps
from .vm_support import REGIONS, VmData

if TYPE_CHECKING:
    from vpsnap.drivers.machines import ManagedMachines
    from vpsnap.drivers.qemu_img import QemuImg

pytestmark = pytest.mark.qemu

VM = LaunchSpec(memory_mib=64, cpus=1)


@pytest.fixture
async def driver_env(qemu_img: QemuImg, make_disks: DiskFactory) -> DriverEnv:
    disks = await make_disks(2)
    vps = make_vps(disks)

    async def write(pattern: int) -> None:
        for disk, (offset, length) in zip(disks, REGIONS, strict=True):
            await qemu_img.write_pattern(disk, offset, length, pattern)

    async def holds(pattern: int) -> bool:
        results = [
            await qemu_img.read_matches(disk, offset, length, pattern)
            for disk, (offset, length) in zip(disks, REGIONS, strict=True)
        ]
        return all(results)

    return DriverEnv(driver=QemuDriver(qemu_img), vps=vps, write=write, holds=holds)


class TestQemuDriverContract(DriverContract):
    pass


@pytest.fixture
async def live_env(
    qemu_img: QemuImg,
    make_disks: DiskFactory,
    machines: ManagedMachines,
    live_timeouts: LiveTimeouts,
) -> DriverEnv:
    disks = await make_disks(2)
    vps = make_vps(disks, machine=VM)
    driver = QemuDriver(qemu_img, machines, live_timeouts)
    await driver.change_power(vps, PowerAction.START)
    data = VmData(
        qemu_img,
        disks,
        str(machines.dir_for(vps.id).qmp_socket),
        is_running=lambda: machines.pid(vps.id) is not None,
    )
    return DriverEnv(driver=driver, vps=vps, write=data.write, holds=data.holds)


class TestQemuDriverLiveContract(LiveDriverContract):
    pass
