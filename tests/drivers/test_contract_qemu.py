"""The driver contract, run against QemuDriver on real two-disk qcow2 VPSes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vpsnap.drivers.qemu import QemuDriver

from .contract import DriverContract, DriverEnv
from .support import DiskFactory, make_vps

if TYPE_CHECKING:
    from vpsnap.drivers.qemu_img import QemuImg

pytestmark = pytest.mark.qemu

# Data lands at different places on each disk so a restore of only one disk cannot pass.
REGIONS = ((0, 64 * 1024), (1024 * 1024, 128 * 1024))


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
