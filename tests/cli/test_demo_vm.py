"""`vpsnap serve --demo` starts demo-web as a managed VM, and finds it again after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from vpsnap.demo import seed_demo, start_demo_vm
from vpsnap.domain.model import LaunchSpec, PowerAction, PowerState
from vpsnap.drivers.machines import ManagedMachines
from vpsnap.runtime import Runtime, qemu_img_for
from vpsnap.settings import Settings

pytestmark = pytest.mark.qemu


async def start_demo(settings: Settings) -> PowerState | None:
    runtime = Runtime.build(settings)
    # As `serve --demo` does: the start is a job, run by the embedded worker.
    async with runtime.embedded():
        await seed_demo(
            runtime, qemu_img_for(settings), disk_bytes=16 * 1024**2, data_bytes=1024**2
        )
        return await start_demo_vm(runtime)


async def stop_demo(settings: Settings) -> None:
    runtime = Runtime.build(settings)
    try:
        vps = await runtime.services.accounts.find_vps("demo", "demo-web")
        assert vps is not None
        assert vps.machine == LaunchSpec(memory_mib=64, cpus=1)
        await runtime.driver.change_power(vps, PowerAction.STOP)
    finally:
        await runtime.close()


def test_demo_web_runs_and_a_second_start_reattaches(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir: Path = tmp_path_factory.mktemp("demo")
    settings = Settings(data_dir=data_dir)
    machines = ManagedMachines(data_dir)
    try:
        assert asyncio.run(start_demo(settings)) is PowerState.RUNNING
        [(vps_id, pid)] = list(machines.running())

        assert asyncio.run(start_demo(settings)) is PowerState.RUNNING
        assert list(machines.running()) == [(vps_id, pid)]  # the same VM, not a second one
    finally:
        asyncio.run(stop_demo(settings))
    assert list(machines.running()) == []


def test_without_qemu_system_demo_web_is_disk_only(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir: Path = tmp_path_factory.mktemp("demo")
    settings = Settings(data_dir=data_dir, qemu_system="/nonexistent/qemu-system-x86_64")
    assert asyncio.run(start_demo(settings)) is None
    assert list(ManagedMachines(data_dir).running()) == []


def test_demo_vm_can_be_switched_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir: Path = tmp_path_factory.mktemp("demo")
    assert asyncio.run(start_demo(Settings(data_dir=data_dir, demo_vm=False))) is None
    assert list(ManagedMachines(data_dir).running()) == []
