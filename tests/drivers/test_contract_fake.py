"""The driver contracts, run against the in-memory FakeDriver, and the fake's test controls."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from vpsnap.domain.errors import DiskUnusable, HypervisorError, VpsNotReady
from vpsnap.domain.model import LaunchSpec, PowerState
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers.fake import FakeDriver

from .contract import DriverContract, DriverEnv, LiveDriverContract
from .support import make_vps

if TYPE_CHECKING:
    from vpsnap.domain.model import Vps


def fake_env(vps: Vps, driver: FakeDriver | None = None) -> DriverEnv:
    driver = driver or FakeDriver()

    async def write(pattern: int) -> None:
        driver.write(vps.id, f"pattern-{pattern:02x}")

    async def holds(pattern: int) -> bool:
        return driver.content(vps.id) == f"pattern-{pattern:02x}"

    return DriverEnv(driver=driver, vps=vps, write=write, holds=holds)


@pytest.fixture
def driver_env() -> DriverEnv:
    return fake_env(make_vps(("/fake/disk0.qcow2", "/fake/disk1.qcow2")))


class TestFakeDriverContract(DriverContract):
    pass


@pytest.fixture
def live_env() -> DriverEnv:
    vps = make_vps(
        ("/fake/disk0.qcow2", "/fake/disk1.qcow2"), machine=LaunchSpec(memory_mib=64, cpus=1)
    )
    driver = FakeDriver()
    driver.set_power_state(vps.id, PowerState.RUNNING)
    return fake_env(vps, driver)


class TestFakeDriverLiveContract(LiveDriverContract):
    pass


# -- the fake's own test controls ----------------------------------------------------------------


def fake_vps() -> tuple[FakeDriver, Vps]:
    return FakeDriver(), make_vps(("/fake/disk0.qcow2",))


async def test_fail_next_fails_once_and_changes_nothing() -> None:
    driver, vps = fake_vps()
    driver.fail_next("create", HypervisorError("boom"))

    with pytest.raises(HypervisorError, match="boom"):
        await driver.create_snapshot(vps, SnapshotRequest(name="s"))
    assert await driver.list_restore_points(vps) == []

    await driver.create_snapshot(vps, SnapshotRequest(name="s"))
    assert [p.name for p in await driver.list_restore_points(vps)] == ["s"]


async def test_fail_next_is_per_operation() -> None:
    driver, vps = fake_vps()
    driver.fail_next("list", VpsNotReady("not now"))

    await driver.create_snapshot(vps, SnapshotRequest(name="s"))
    with pytest.raises(VpsNotReady):
        await driver.list_restore_points(vps)
    with pytest.raises(ValueError, match="unknown operation"):
        driver.fail_next("explode", HypervisorError("x"))  # type: ignore[arg-type]


async def test_block_holds_an_operation_until_released() -> None:
    driver, vps = fake_vps()
    driver.block("create")
    task = asyncio.create_task(driver.create_snapshot(vps, SnapshotRequest(name="held")))

    await asyncio.wait_for(driver.wait_blocked("create"), timeout=2)
    assert not task.done()
    assert await driver.list_restore_points(vps) == []  # other operations are not held

    driver.release("create")
    await asyncio.wait_for(task, timeout=2)
    assert [p.name for p in await driver.list_restore_points(vps)] == ["held"]


async def test_power_state_controls_what_is_allowed() -> None:
    driver, vps = fake_vps()
    await driver.create_snapshot(vps, SnapshotRequest(name="s"))

    driver.set_power_state(vps.id, PowerState.RUNNING)
    assert await driver.power_state(vps) is PowerState.RUNNING
    with pytest.raises(VpsNotReady):
        await driver.create_snapshot(vps, SnapshotRequest(name="t"))
    with pytest.raises(VpsNotReady):
        await driver.restore_snapshot(vps, "s")
    assert [p.name for p in await driver.list_restore_points(vps)] == ["s"]

    driver.set_power_state(vps.id, PowerState.ERROR)
    with pytest.raises(DiskUnusable):
        await driver.list_restore_points(vps)


async def test_calls_are_recorded() -> None:
    driver, vps = fake_vps()
    await driver.create_snapshot(vps, SnapshotRequest(name="s"))
    await driver.restore_snapshot(vps, "s")
    assert driver.calls == [("create", vps.id), ("restore", vps.id)]
