"""PowerService and the vps.power job: queued behind snapshot jobs, refused without a machine."""

from __future__ import annotations

import pytest

from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.errors import HypervisorError, VpsNotFound, VpsNotReady
from vpsnap.domain.model import (
    JobStatus,
    JobType,
    LaunchSpec,
    PowerAction,
    PowerState,
    ServiceStatus,
)
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import World

VM = LaunchSpec(memory_mib=128, cpus=1)


async def test_start_runs_as_a_job_and_reports_both_power_states(world: World) -> None:
    vps = await world.add_vps(machine=VM)
    job = await world.runtime.services.power.request(world.principal, vps.id, PowerAction.START)
    assert job.type is JobType.VPS_POWER
    assert job.status is JobStatus.QUEUED
    assert job.payload == {"action": "start", "force": False}
    assert await world.run_all() == 1

    done = await world.job(job.id)
    assert done.status is JobStatus.COMPLETED
    assert done.result == {
        "action": "start",
        "powerStateBefore": "stopped",
        "powerStateAfter": "running",
    }
    assert await world.driver.power_state(vps) is PowerState.RUNNING


async def test_force_reaches_the_driver_and_restart_ends_running(world: World) -> None:
    vps = await world.add_vps(machine=VM)
    world.driver.set_power_state(vps.id, PowerState.RUNNING)
    job = await world.runtime.services.power.request(
        world.principal, vps.id, PowerAction.RESTART, force=True
    )
    assert job.payload == {"action": "restart", "force": True}
    await world.run_all()
    done = await world.job(job.id)
    assert done.result == {
        "action": "restart",
        "powerStateBefore": "running",
        "powerStateAfter": "running",
    }


async def test_a_power_action_waits_behind_a_snapshot_job_of_the_same_vps(world: World) -> None:
    vps = await world.add_vps(machine=VM)
    create = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("before")
    )
    power = await world.runtime.services.power.request(world.principal, vps.id, PowerAction.START)
    assert power.status is JobStatus.PENDING
    assert await world.run_all() == 2
    # The snapshot was taken of the stopped VM, then the VM started: arrival order.
    assert [op for op, vps_id in world.driver.changes() if vps_id == vps.id][-2:] == [
        "create",
        "power",
    ]
    assert (await world.job(create.id)).status is JobStatus.COMPLETED
    assert (await world.job(power.id)).status is JobStatus.COMPLETED


async def test_a_vps_without_a_machine_is_refused_before_any_job(world: World) -> None:
    vps = await world.add_vps()
    with pytest.raises(VpsNotReady, match="disk images only"):
        await world.runtime.services.power.request(world.principal, vps.id, PowerAction.START)
    assert await world.run_all() == 0


async def test_a_suspended_vps_is_refused(world: World) -> None:
    vps = await world.add_vps(machine=VM, status=ServiceStatus.SUSPENDED)
    with pytest.raises(VpsNotReady):
        await world.runtime.services.power.request(world.principal, vps.id, PowerAction.STOP)


async def test_another_accounts_vps_is_not_found(world: World) -> None:
    vps = await world.add_vps(machine=VM)
    stranger = await world.runtime.services.accounts.create_account("mallory")
    principal = Principal(stranger.id, frozenset({Scope.WRITE_ALL}))
    with pytest.raises(VpsNotFound):
        await world.runtime.services.power.request(principal, vps.id, PowerAction.STOP)


async def test_a_driver_failure_fails_the_job_with_its_problem(world: World) -> None:
    vps = await world.add_vps(machine=VM)
    world.driver.fail_next("power", HypervisorError("QMP did not answer"))
    job = await world.runtime.services.power.request(world.principal, vps.id, PowerAction.START)
    await world.run_all()
    done = await world.job(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error is not None
    assert done.error["code"] == "hypervisor_unavailable"
    assert await world.driver.power_state(vps) is PowerState.STOPPED


async def test_reset_of_a_stopped_vm_fails_the_job_as_not_ready(world: World) -> None:
    vps = await world.add_vps(machine=VM)
    job = await world.runtime.services.power.request(world.principal, vps.id, PowerAction.RESET)
    await world.run_all()
    done = await world.job(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error is not None
    assert done.error["code"] == "vps_not_ready"
