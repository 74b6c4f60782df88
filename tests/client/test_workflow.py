"""``create_safely`` against a real server: every branch of making room, and the refusals that
say why and what to do."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.live_server import LiveServer
from vpsnap.cli.entry import cli as app
from vpsnap.client import (
    AsyncClient,
    CannotMakeRoom,
    Client,
    Conflict,
    Forbidden,
    SnapshotNameTaken,
    Step,
    VpsNotFound,
)

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def on_disk(disk: Path) -> list[str]:
    info = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(disk)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return [s["name"] for s in json.loads(info.stdout).get("snapshots", [])]


def listed(client: Client, vps: str) -> list[tuple[str, str]]:
    return [(s.name, s.status) for s in client.snapshots.list(vps).snapshots]


def test_with_a_free_slot_it_creates_waits_and_returns_the_snapshot(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(2)
    steps: list[Step] = []
    snapshot = client.snapshots.create_safely(
        vps, "before-upgrade", description="Before package upgrade", on_step=steps.append
    )
    assert (snapshot.name, snapshot.status) == ("before-upgrade", "available")
    assert snapshot.description == "Before package upgrade"
    assert snapshot.expires_at - snapshot.created_at == timedelta(hours=24)
    assert snapshot.job_id is not None
    assert client.jobs.get(snapshot.job_id).status == "completed"
    assert steps[0].action == "create"
    assert steps[-1] == Step("wait", f"snapshot.create {snapshot.job_id}: completed")
    assert listed(client, vps) == [("before-upgrade", "available")]
    assert on_disk(server.disk(vps)) == ["before-upgrade"]


def test_the_vps_is_found_by_id_name_or_primary_ip(client: Client, server: LiveServer) -> None:
    vps = server.add_vps(3, primary_ip="192.0.2.41")
    by_name = client.vps.get(vps)
    assert client.vps.get("192.0.2.41") == by_name
    assert client.vps.get(by_name.id) == by_name
    for index, ref in enumerate((by_name.id, vps.upper(), "192.0.2.41")):
        client.snapshots.create_safely(ref, f"via-{index}")
    assert [name for name, _ in listed(client, vps)] == ["via-0", "via-1", "via-2"]
    for unknown in ("no-such-vps", "192.0.2.254"):
        with pytest.raises(VpsNotFound, match=repr(unknown)):
            client.snapshots.create_safely(unknown, "x")


def test_delete_oldest_deletes_the_oldest_available_snapshot_first(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(2)
    client.snapshots.create_safely(vps, "a")
    client.snapshots.create_safely(vps, "b")
    steps: list[Step] = []
    snapshot = client.snapshots.create_safely(
        vps, "c", make_room="delete-oldest", on_step=steps.append
    )
    assert snapshot.status == "available"
    actions = [s.action for s in steps]
    assert actions.index("delete-oldest") < actions.index("create")
    assert "'a'" in steps[actions.index("delete-oldest")].message
    # The deletion's job was waited for: its completion was reported before the create.
    assert any("snapshot.delete" in s.message and "completed" in s.message for s in steps)
    assert listed(client, vps) == [("b", "available"), ("c", "available")]
    assert on_disk(server.disk(vps)) == ["b", "c"]


def test_buy_slot_previews_then_commits_one_more_slot(client: Client, server: LiveServer) -> None:
    vps = server.add_vps(1)
    client.snapshots.create_safely(vps, "a")
    steps: list[Step] = []
    client.snapshots.create_safely(vps, "b", make_room="buy-slot", on_step=steps.append)
    purchase = next(s for s in steps if s.action == "buy-slot")
    assert "1 → 2" in purchase.message
    assert "1.00 EUR now" in purchase.message
    listing = client.snapshots.list(vps)
    assert listing.limits.total_snapshots == 2
    assert [s.name for s in listing.snapshots] == ["a", "b"]
    option = client.vps.upgrade_options(vps).snapshot_slots
    assert option is not None
    assert option.current_value == 2


def test_a_vps_without_slots_can_only_buy_one(client: Client, server: LiveServer) -> None:
    vps = server.add_vps(0)
    with pytest.raises(CannotMakeRoom) as refused:
        client.snapshots.create_safely(vps, "x")
    assert refused.value.reason_code == "snapshots_not_included"
    assert "buy-slot" in refused.value.hint
    with pytest.raises(CannotMakeRoom) as nothing_to_delete:
        client.snapshots.create_safely(vps, "x", make_room="delete-oldest")
    assert nothing_to_delete.value.reason_code == "snapshots_not_included"
    assert "deleting frees none" in str(nothing_to_delete.value)

    snapshot = client.snapshots.create_safely(vps, "x", make_room="buy-slot")
    assert snapshot.status == "available"
    assert client.snapshots.list(vps).limits.total_snapshots == 1


def test_when_every_slot_is_used_it_fails_saying_why_and_what_to_do(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(1)
    client.snapshots.create_safely(vps, "only")
    with pytest.raises(CannotMakeRoom) as refused:
        client.snapshots.create_safely(vps, "another")
    error = refused.value
    assert isinstance(error, Conflict)
    assert error.reason_code == "snapshot_limit_reached"
    assert "all 1 snapshot slot(s)" in str(error)
    assert "only (available)" in str(error)
    assert 'make_room="delete-oldest" or make_room="buy-slot"' in error.hint
    assert listed(client, vps) == [("only", "available")]


def test_buy_slot_stops_at_the_most_slots_on_sale(client: Client, server: LiveServer) -> None:
    vps = server.add_vps(10)  # the built-in capacity configuration sells 0..10
    operations = [client.snapshots.create(vps, f"s{i}") for i in range(10)]
    for operation in operations:
        operation.wait(timeout=60)
    with pytest.raises(CannotMakeRoom) as refused:
        client.snapshots.create_safely(vps, "eleventh", make_room="buy-slot")
    assert refused.value.reason_code == "max_slots_reached"
    assert "the most that can be bought (10)" in str(refused.value)
    assert "delete-oldest" in refused.value.hint


def test_a_name_in_use_is_refused_before_anything_is_deleted(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(1)
    client.snapshots.create_safely(vps, "keep")
    with pytest.raises(SnapshotNameTaken, match="'keep'"):
        client.snapshots.create_safely(vps, "KEEP", make_room="delete-oldest")
    assert listed(client, vps) == [("keep", "available")]


def test_a_read_only_key_is_told_which_scope_it_lacks(server: LiveServer) -> None:
    with (
        Client(server.url, server.key("readonly")) as readonly,
        pytest.raises(Forbidden) as refused,
    ):
        readonly.snapshots.create_safely("demo-web", "x")
    assert "backup:vm" in str(refused.value)
    assert refused.value.required_scopes == ("backup:vm",)


def test_buying_a_slot_needs_write_vm(server: LiveServer) -> None:
    issued = CliRunner().invoke(
        app,
        [
            *("admin", "key", "create", "--account", "demo", "--scopes", "read:vm,backup:vm"),
            *("--data-dir", str(server.data_dir)),
        ],
    )
    assert issued.exit_code == 0, issued.stderr
    vps = server.add_vps(0)
    with Client(server.url, issued.stdout.strip()) as backup_only:
        with pytest.raises(Forbidden) as refused:
            backup_only.snapshots.create_safely(vps, "x", make_room="buy-slot")
        assert "write:vm" in str(refused.value)
        assert refused.value.request_id is not None
        assert refused.value.request_id.startswith("req_")
        assert backup_only.snapshots.list(vps).limits.total_snapshots == 0


def test_without_waiting_it_returns_the_snapshot_being_created_and_its_job(
    client: Client, server: LiveServer
) -> None:
    vps = server.add_vps(1)
    snapshot = client.snapshots.create_safely(vps, "slow-nowait", wait=False)
    assert snapshot.status == "creating"
    assert snapshot.job_id is not None
    assert client.jobs.wait(snapshot.job_id, timeout=30).status == "completed"
    assert listed(client, vps) == [("slow-nowait", "available")]


async def test_the_async_client_runs_the_same_workflow(server: LiveServer) -> None:
    vps = await asyncio.to_thread(server.add_vps, 1)
    steps: list[Step] = []

    async def record(step: Step) -> None:  # an async callback is awaited
        await asyncio.sleep(0)
        steps.append(step)

    async with AsyncClient(server.url, server.key()) as client:
        first = await client.snapshots.create_safely(vps, "a")
        second = await client.snapshots.create_safely(
            vps, "b", make_room="delete-oldest", on_step=record
        )
        listing = await client.snapshots.list(vps)
    assert (first.name, second.name) == ("a", "b")
    assert [s.name for s in listing.snapshots] == ["b"]
    assert steps[0].action == "delete-oldest"
