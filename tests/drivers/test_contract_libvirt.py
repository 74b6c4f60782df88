"""The driver contracts, run against LibvirtDriver on a real libvirtd with two-disk domains."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from vpsnap.domain.model import Consistency, PowerAction, PowerState
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers.libvirt import LibvirtDriver

from . import libvirt_lab
from .contract import DriverContract, DriverEnv, LiveDriverContract
from .libvirt_lab import LibvirtLab

if TYPE_CHECKING:
    from .support import DiskFactory

pytestmark = [pytest.mark.qemu, pytest.mark.libvirt]


@pytest.fixture
async def driver_env(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> DriverEnv:
    return env_of(lab.define(await make_disks(2)), libvirt_driver)


def env_of(domain: libvirt_lab.LabDomain, driver: LibvirtDriver) -> DriverEnv:
    async def write(pattern: int) -> None:
        await libvirt_lab.write(domain, pattern)

    async def holds(pattern: int) -> bool:
        return await libvirt_lab.holds(domain, pattern)

    return DriverEnv(driver=driver, vps=domain.vps(), write=write, holds=holds)


class TestLibvirtDriverContract(DriverContract):
    pass


@pytest.fixture
async def live_env(
    lab: LibvirtLab, libvirt_driver: LibvirtDriver, make_disks: DiskFactory
) -> DriverEnv:
    # A guest-agent channel with nothing behind it: the VM has no OS.
    env = env_of(lab.define(await make_disks(2), agent=True), libvirt_driver)
    await libvirt_driver.change_power(env.vps, PowerAction.START)
    return env


class TestLibvirtDriverLiveContract(LiveDriverContract):
    # libvirt takes an internal snapshot of a running domain only together with its RAM
    # ("internal snapshot of a running VM must include the memory state"), so where the
    # contract expects a disk-only live snapshot, libvirt's truthful answer is a RAM snapshot.

    async def test_disk_snapshot_of_a_running_vm_keeps_it_running(
        self, live_env: DriverEnv
    ) -> None:
        env = live_env
        taken = await env.driver.create_snapshot(
            env.vps, SnapshotRequest(name="live", quiesce=False)
        )

        assert taken.consistency is Consistency.MEMORY
        assert taken.includes_memory_state is True
        assert await env.driver.power_state(env.vps) is PowerState.RUNNING
        [point] = await env.driver.list_restore_points(env.vps)
        assert (point.name, point.disks) == ("live", env.vps.disks)
        assert point.vm_state_size > 0

    async def test_quiesce_without_an_answering_agent_is_crash_consistent(
        self, live_env: DriverEnv
    ) -> None:
        # No freeze is attempted around a RAM snapshot (the guest would come back frozen on
        # every restore of it), so the missing agent changes nothing and costs no timeout.
        env = live_env
        started = asyncio.get_running_loop().time()
        taken = await env.driver.create_snapshot(env.vps, SnapshotRequest(name="q", quiesce=True))
        assert taken.consistency is Consistency.MEMORY
        assert asyncio.get_running_loop().time() - started < 5
        assert [p.name for p in await env.driver.list_restore_points(env.vps)] == ["q"]
