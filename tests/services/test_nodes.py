"""Nodes as the control plane sees them (issue 10): offline and drained nodes take no new work,
show `unknown` power states, and jobs that cannot start there fail after a while."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from vpsnap.domain.errors import NodeUnavailable
from vpsnap.domain.model import JobStatus, LaunchSpec, PowerAction, PowerState
from vpsnap.domain.ports import VpsFilter
from vpsnap.jobs.observer import NodeObserver
from vpsnap.scheduler.stale_jobs import fail_unstartable_jobs
from vpsnap.services.accounts import NewVps
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import World

REMOTE = "hv-2"


async def _remote_vps(world: World, name: str = "far") -> str:
    vps = await world.runtime.services.accounts.add_vps(
        NewVps(
            account_name=world.account.name,
            name=name,
            disks=(f"/fake/{name}.qcow2",),
            snapshot_slots=2,
            node=REMOTE,
            machine=LaunchSpec(memory_mib=64, cpus=1),
        )
    )
    return vps.id


def _agent(world: World, node: str = REMOTE) -> NodeObserver:
    return NodeObserver(world.store, world.driver, world.clock, node, "test", "agent-1")


async def test_a_node_whose_agent_never_reported_takes_no_work(world: World) -> None:
    vps_id = await _remote_vps(world)
    snapshots = world.runtime.services.snapshots

    listing = await snapshots.listing(world.principal, vps_id)
    assert (listing.can_create.allowed, listing.can_create.code) == (False, "node_unavailable")
    assert (listing.can_restore.allowed, listing.can_restore.code) == (False, "snapshot_not_found")
    with pytest.raises(NodeUnavailable) as caught:
        await snapshots.create(world.principal, vps_id, CreateSnapshot("x"))
    assert caught.value.extensions["retryAfter"] > 0
    with pytest.raises(NodeUnavailable):
        await world.runtime.services.power.request(world.principal, vps_id, PowerAction.START)
    # Nothing was recorded: no row, no job.
    assert await world.statuses(vps_id) == {}
    assert await world.run_all() == 0
    view = await world.runtime.services.inventory.get(world.principal, vps_id)
    assert view.power_state is PowerState.UNKNOWN


async def test_a_heartbeat_brings_the_node_online_and_silence_takes_it_offline(
    world: World,
) -> None:
    vps_id = await _remote_vps(world)
    agent = _agent(world)
    world.driver.set_power_state(vps_id, PowerState.RUNNING)
    await agent.heartbeat()
    await agent.refresh_power_states()
    inventory, snapshots = world.runtime.services.inventory, world.runtime.services.snapshots

    assert (await inventory.get(world.principal, vps_id)).power_state is PowerState.RUNNING
    assert (await snapshots.listing(world.principal, vps_id)).can_create.allowed
    job = await snapshots.create(world.principal, vps_id, CreateSnapshot("x"))
    assert job.node == REMOTE

    world.clock.advance(seconds=31)
    assert (await inventory.get(world.principal, vps_id)).power_state is PowerState.UNKNOWN
    listing = await snapshots.listing(world.principal, vps_id)
    assert listing.can_create.code == "node_unavailable"
    with pytest.raises(NodeUnavailable):
        await world.runtime.services.power.request(world.principal, vps_id, PowerAction.STOP)
    # The local (embedded) worker does not run another node's jobs: it waits for its agent.
    assert await world.run_all() == 0
    assert (await world.job(job.id)).status is JobStatus.QUEUED


async def test_a_drained_node_takes_no_new_work_and_says_why(world: World) -> None:
    vps = await world.add_vps()  # the embedded process's own node: online while it serves
    await world.runtime.observer().heartbeat()
    async with world.store.transaction() as tx:
        assert await tx.set_node_drained("local", True)
    listing = await world.runtime.services.snapshots.listing(world.principal, vps.id)
    assert listing.can_create.code == "node_unavailable"
    assert "maintenance" in (listing.can_create.reason or "")
    with pytest.raises(NodeUnavailable):
        await world.runtime.services.snapshots.create(world.principal, vps.id, CreateSnapshot("x"))
    # A heartbeat keeps the drain.
    await world.runtime.observer().heartbeat()
    async with world.store.transaction() as tx:
        node = await tx.get_node("local")
        assert node is not None and node.drained
        assert await tx.set_node_drained("local", False)
    await world.runtime.services.snapshots.create(world.principal, vps.id, CreateSnapshot("x"))


async def test_jobs_that_cannot_start_fail_after_the_timeout_and_give_back_their_slot(
    world: World,
) -> None:
    vps_id = await _remote_vps(world)
    await _agent(world).heartbeat()
    snapshots = world.runtime.services.snapshots
    first = await snapshots.create(world.principal, vps_id, CreateSnapshot("a"))
    second = await snapshots.create(world.principal, vps_id, CreateSnapshot("b"))
    assert (await snapshots.listing(world.principal, vps_id)).usage.used == 2
    nodes, timeout = world.runtime.services.nodes, timedelta(minutes=15)

    async def sweep() -> list[str]:
        return await fail_unstartable_jobs(
            world.store, world.runtime.events, world.clock, nodes, timeout
        )

    world.clock.advance(minutes=10)  # offline, but not for long enough
    assert await sweep() == []
    world.clock.advance(minutes=6)
    assert await sweep() == [first.id, second.id]

    for job in (first, second):
        failed = await world.job(job.id)
        assert failed.status is JobStatus.FAILED
        assert failed.error is not None and failed.error["code"] == "node_unavailable"
    assert await world.statuses(vps_id) == {}
    assert (await snapshots.listing(world.principal, vps_id)).usage.used == 0


async def test_an_online_node_keeps_its_old_jobs(world: World) -> None:
    vps_id = await _remote_vps(world)
    agent = _agent(world)
    await agent.heartbeat()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps_id, CreateSnapshot("a")
    )
    world.clock.advance(minutes=20)
    await agent.heartbeat()
    assert (
        await fail_unstartable_jobs(
            world.store,
            world.runtime.events,
            world.clock,
            world.runtime.services.nodes,
            timedelta(minutes=15),
        )
        == []
    )
    assert (await world.job(job.id)).status is JobStatus.QUEUED


async def test_node_stats_count_vpses_and_waiting_jobs(world: World) -> None:
    vps_id = await _remote_vps(world)
    await world.add_vps()
    await _agent(world).heartbeat()
    created = await world.runtime.services.snapshots.create(
        world.principal, vps_id, CreateSnapshot("a")
    )
    async with world.store.transaction(read_only=True) as tx:
        stats = await tx.node_stats()
        listed = await tx.list_vps(None, VpsFilter(node=REMOTE), None, 10)
    assert stats[REMOTE] == dataclasses.replace(
        stats[REMOTE], vps_count=1, queued_jobs=1, oldest_queued_at=created.created_at
    )
    assert stats["local"].vps_count == 1
    assert [v.id for v in listed] == [vps_id]


async def test_the_operator_report_and_drain_of_a_node_without_an_agent(world: World) -> None:
    from vpsnap.domain.errors import NotFound
    from vpsnap.domain.nodes import NodeState
    from vpsnap.services.nodes import NodeAdmin

    vps_id = await _remote_vps(world)
    await world.runtime.observer().heartbeat()
    admin = NodeAdmin(world.store, world.runtime.services.nodes)
    await admin.set_drained(REMOTE, True)  # VPSes there, no agent yet: remembered
    with pytest.raises(NotFound):
        await admin.set_drained("nowhere", True)

    report = {r.name: r for r in await admin.report()}
    assert report["local"].state is NodeState.ONLINE
    assert report[REMOTE].state is NodeState.OFFLINE
    assert report[REMOTE].vps_count == 1
    await _agent(world).heartbeat()  # the agent arrives: the node is drained
    assert {r.name: r.state for r in await admin.report()}[REMOTE] is NodeState.DRAINED
    with pytest.raises(NodeUnavailable):
        await world.runtime.services.snapshots.create(world.principal, vps_id, CreateSnapshot("x"))
    await admin.set_drained(REMOTE, False)
    assert {r.name: r.state for r in await admin.report()}[REMOTE] is NodeState.ONLINE
