"""`vpsnap admin account list`, `key list` (with last use), `vps update` and `vps remove` on a
real data dir and real qcow2 disks; `-o json` everywhere; ids never shortened."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from vpsnap.cli.entry import cli
from vpsnap.domain.auth import Principal, Scope
from vpsnap.runtime import Runtime
from vpsnap.services.snapshots import CreateSnapshot
from vpsnap.settings import Settings

pytestmark = pytest.mark.qemu


def admin(data: Path, *args: str, answer: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["admin", *args, "--data-dir", str(data)], input=answer, env={"COLUMNS": "80"}
    )
    return result.exit_code, result.stdout, result.stderr


def as_json(data: Path, *args: str) -> object:
    code, out, err = admin(data, *args, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    assert admin(tmp_path, "account", "create", "acme")[0] == 0
    return tmp_path


def add_vps(data: Path, name: str, slots: int = 2) -> str:
    document = as_json(
        data, "vps", "add", "--account", "acme", "--name", name, "--slots", str(slots),
        "--disk", str(qcow2(data / f"{name}.qcow2")),
    )  # fmt: skip
    assert isinstance(document, dict)
    return str(document["id"])


def test_account_and_key_lists_with_last_use(data: Path) -> None:
    code, secret, _ = admin(
        data, "key", "create", "--account", "acme", "--scopes", "read:vm", "--name", "ci"
    )
    assert code == 0
    add_vps(data, "web")
    accounts = as_json(data, "account", "list")
    assert isinstance(accounts, dict)
    [acme] = accounts["data"]
    assert (acme["name"], acme["vpsCount"], acme["activeKeys"]) == ("acme", 1, 1)

    keys = as_json(data, "key", "list", "--account", "acme")
    assert isinstance(keys, dict)
    [key] = keys["data"]
    assert (key["name"], key["scopes"], key["lastUsedAt"], key["status"]) == (
        "ci",
        ["read:vm"],
        None,
        "active",
    )
    code, table, _ = admin(data, "key", "list")  # narrow terminal: ids still whole
    assert key["id"] in table
    assert "never" in table

    async def use_it() -> None:
        runtime = Runtime.build(Settings(data_dir=data))
        try:
            await runtime.prepare()
            for _ in range(3):  # three requests, one write: at most one per minute
                await runtime.services.credentials.authenticate(secret.strip())
        finally:
            await runtime.close()

    asyncio.run(use_it())
    keys = as_json(data, "key", "list")
    assert isinstance(keys, dict)
    assert keys["data"][0]["lastUsedAt"] is not None
    code, table, _ = admin(data, "key", "list")
    assert "s ago" in table
    assert admin(data, "key", "list", "--account", "nobody")[0] == 3


def test_vps_update_checks_what_it_changes(data: Path) -> None:
    vps_id = add_vps(data, "web", slots=2)
    updated = as_json(
        data, "vps", "update", vps_id, "--name", "www", "--slots", "3", "--ip", "192.0.2.7"
    )
    assert isinstance(updated, dict)
    assert (updated["name"], updated["snapshotSlots"], updated["primaryIp"]) == (
        "www",
        3,
        "192.0.2.7",
    )
    cleared = as_json(data, "vps", "update", vps_id, "--no-ip")
    assert isinstance(cleared, dict)
    assert cleared["primaryIp"] is None

    code, _, err = admin(data, "vps", "update", vps_id, "--ip", "not-an-ip")
    assert code == 2
    assert "not an IP address" in err
    assert admin(data, "vps", "update", vps_id)[0] == 2  # nothing to change
    assert admin(data, "vps", "update", "vps_" + "0" * 26, "--slots", "1")[0] == 3

    new_disk = qcow2(data / "other.qcow2")
    moved = as_json(data, "vps", "update", vps_id, "--disk", str(new_disk))
    assert isinstance(moved, dict)
    assert moved["disks"] == [str(new_disk.resolve())]
    raw = data / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "1M"], check=True)
    code, _, err = admin(data, "vps", "update", vps_id, "--disk", str(raw))
    assert code == 2
    assert "raw, not qcow2" in err

    # With snapshots: fewer slots than they hold, or other disks, are refused, saying why.
    asyncio.run(snapshot_through_a_job(data, vps_id, "keep-me", run_worker=True))
    code, _, err = admin(data, "vps", "update", vps_id, "--slots", "0")
    assert code == 4
    assert "keep-me" in err
    code, _, err = admin(data, "vps", "update", vps_id, "--disk", str(data / "web.qcow2"))
    assert code == 4
    assert "delete them first" in err


async def snapshot_through_a_job(data: Path, vps_id: str, name: str, *, run_worker: bool) -> None:
    runtime = Runtime.build(Settings(data_dir=data))
    try:
        await runtime.prepare()
        async with runtime.store.transaction(read_only=True) as tx:
            vps = await tx.get_vps(vps_id)
        assert vps is not None
        principal = Principal(account_id=vps.account_id, scopes=frozenset({Scope.WRITE_ALL}))
        await runtime.services.snapshots.create(principal, vps_id, CreateSnapshot(name))
        if run_worker:
            assert await runtime.worker().run_one()
    finally:
        await runtime.close()


def test_vps_remove_is_refused_while_jobs_run_and_leaves_the_disks(data: Path) -> None:
    vps_id = add_vps(data, "web")
    asyncio.run(snapshot_through_a_job(data, vps_id, "made", run_worker=True))
    asyncio.run(snapshot_through_a_job(data, vps_id, "queued", run_worker=False))
    code, _, err = admin(data, "vps", "remove", vps_id, "--yes")
    assert code == 4
    assert "jobs queued or running" in err
    assert vps_id in json.dumps(as_json(data, "vps", "list"))

    # Once the job is done: asked first, then removed; its snapshots stay on disk, listed.
    async def finish() -> None:
        runtime = Runtime.build(Settings(data_dir=data))
        try:
            await runtime.prepare()
            assert await runtime.worker().run_one()
        finally:
            await runtime.close()

    asyncio.run(finish())
    code, _, err = admin(data, "vps", "remove", vps_id, answer="n\n")
    assert code == 1
    assert "remove cancelled" in err
    code, out, _ = admin(data, "vps", "remove", vps_id, "--yes")
    assert code == 0
    assert "2 snapshot(s) stay inside its disks" in out
    assert "made, queued" in out
    on_disk = subprocess.run(
        ["qemu-img", "snapshot", "-l", str(data / "web.qcow2")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "made" in on_disk
    assert "queued" in on_disk
    assert vps_id not in json.dumps(as_json(data, "vps", "list"))
    assert admin(data, "vps", "remove", vps_id, "--yes")[0] == 3
