"""Every admin mutation is audited with the OS user as its actor, and ``vpsnap admin audit``
shows the trail of every account (table or JSON lines, filters)."""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from vpsnap.cli.main import app

pytestmark = pytest.mark.qemu
runner = CliRunner()


def vpsnap(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout, result.stderr


def trail(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = vpsnap(data_dir, "admin", "audit", "-o", "json", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_admin_mutations_are_audited_with_the_os_user(tmp_path: Path) -> None:
    assert vpsnap(tmp_path, "admin", "account", "create", "acme")[0] == 0
    assert vpsnap(tmp_path, "admin", "account", "create", "rival")[0] == 0
    code, _, err = vpsnap(
        tmp_path, "admin", "key", "create", "--account", "acme", "--scopes", "read:vm"
    )
    assert code == 0
    key_id = err.split("key id ")[1].split(",")[0]
    assert vpsnap(tmp_path, "admin", "key", "revoke", key_id)[0] == 0
    assert vpsnap(tmp_path, "admin", "key", "revoke", "key_01hxa3b4c5d6e7f8g9h0j1k2m3")[0] == 1
    disk = tmp_path / "web.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    code, out, _ = vpsnap(
        tmp_path, "admin", "vps", "add", "--account", "acme", "--name", "web-1",
        "--disk", str(disk), "--slots", "2",
    )  # fmt: skip
    assert code == 0
    vps_id = out.split("(")[1].split(")")[0]

    events = trail(tmp_path)
    actions = [(e["action"], e["outcome"]) for e in events]
    assert actions == [
        ("vps.add", "succeeded"),
        ("key.revoke", "failed"),
        ("key.revoke", "succeeded"),
        ("key.create", "succeeded"),
        ("account.create", "succeeded"),
        ("account.create", "succeeded"),
    ]
    assert {e["actor"]["kind"] for e in events} == {"admin"}
    assert {e["actor"]["id"] for e in events} == {getpass.getuser()}
    vps_add, refused, revoked, created = events[:4]
    assert vps_add["vpsId"] == vps_id
    assert vps_add["details"]["snapshotSlots"] == 2
    assert refused["problemCode"] == "not_found"
    assert revoked["target"] == {"type": "key", "id": key_id}
    assert created["target"] == {"type": "key", "id": key_id}
    assert created["details"]["scopes"] == ["read:vm"]
    acme = revoked["accountId"]

    only_acme = trail(tmp_path, "--account", "acme")
    assert {e["accountId"] for e in only_acme} == {acme}
    assert len(only_acme) == 4  # account, key create, key revoke, vps add
    assert [e["action"] for e in trail(tmp_path, "--action", "key.revoke")] == [
        "key.revoke",
        "key.revoke",
    ]
    assert trail(tmp_path, "--since", "2999-01-01") == []
    assert len(trail(tmp_path, "--limit", "2")) == 2

    code, out, _ = vpsnap(tmp_path, "admin", "audit")
    assert code == 0
    assert "outcome" in out  # the table (its cells are cut to the terminal's width)
    code, _, err = vpsnap(tmp_path, "admin", "audit", "--account", "nobody")
    assert code == 1
    assert "no account named 'nobody'" in err
