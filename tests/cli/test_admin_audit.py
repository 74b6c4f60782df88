"""Every admin mutation is audited with the OS user as its actor (accounts, keys, VPS add,
update and remove, dashboard users), and ``vpsnap admin audit`` shows the trail of every
account, with filters."""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vpsnap.cli.entry import cli

pytestmark = pytest.mark.qemu
runner = CliRunner()
PASSWORD = "a good long passphrase"


def vpsnap(data_dir: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(cli, [*args, "--data-dir", str(data_dir)], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def trail(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = vpsnap(data_dir, "admin", "audit", "-o", "json", *args)
    assert code == 0, err
    events: list[dict[str, Any]] = json.loads(out)["data"]
    return events


def test_admin_mutations_are_audited_with_the_os_user(tmp_path: Path) -> None:
    assert vpsnap(tmp_path, "admin", "account", "create", "acme")[0] == 0
    assert vpsnap(tmp_path, "admin", "account", "create", "rival")[0] == 0
    code, _, err = vpsnap(
        tmp_path, "admin", "key", "create", "--account", "acme", "--scopes", "read:vm"
    )
    assert code == 0, err
    key_id = err.split("key id ")[1].split(",")[0]
    assert vpsnap(tmp_path, "admin", "key", "revoke", key_id)[0] == 0
    assert vpsnap(tmp_path, "admin", "key", "revoke", "key_01hxa3b4c5d6e7f8g9h0j1k2m3")[0] != 0
    disk = tmp_path / "web.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    code, out, err = vpsnap(
        tmp_path, "-o", "json", "admin", "vps", "add", "--account", "acme", "--name", "web-1",
        "--disk", str(disk), "--slots", "2",
    )  # fmt: skip
    assert code == 0, err
    vps_id = json.loads(out)["id"]
    code, _, err = vpsnap(tmp_path, "admin", "vps", "update", vps_id, "--slots", "3")
    assert code == 0, err
    code, _, err = vpsnap(
        tmp_path,
        *("admin", "user", "create", "--account", "acme", "--email", "ops@acme.example"),
        *("--role", "operator", "--password-stdin"),
        stdin=PASSWORD + "\n",
    )
    assert code == 0, err
    assert vpsnap(tmp_path, "admin", "user", "disable", "ops@acme.example")[0] == 0
    assert vpsnap(tmp_path, "admin", "vps", "remove", vps_id, "--yes")[0] == 0

    events = trail(tmp_path)
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("vps.remove", "succeeded"),
        ("user.disable", "succeeded"),
        ("user.create", "succeeded"),
        ("vps.update", "succeeded"),
        ("vps.add", "succeeded"),
        ("key.revoke", "failed"),
        ("key.revoke", "succeeded"),
        ("key.create", "succeeded"),
        ("account.create", "succeeded"),
        ("account.create", "succeeded"),
    ]
    assert {e["actor"]["kind"] for e in events} == {"admin"}
    assert {e["actor"]["id"] for e in events} == {getpass.getuser()}
    by_action = {(e["action"], e["outcome"]): e for e in events}
    assert by_action["vps.update", "succeeded"]["details"] == {
        "snapshot_slots": {"from": 2, "to": 3}
    }
    assert by_action["vps.remove", "succeeded"]["vpsId"] == vps_id
    assert by_action["vps.add", "succeeded"]["details"]["snapshotSlots"] == 2
    assert by_action["key.revoke", "failed"]["problemCode"] == "not_found"
    assert by_action["key.revoke", "succeeded"]["target"] == {"type": "key", "id": key_id}
    assert by_action["key.create", "succeeded"]["details"]["scopes"] == ["read:vm"]
    created_user = by_action["user.create", "succeeded"]
    assert created_user["details"] == {"email": "ops@acme.example", "role": "operator"}
    assert PASSWORD not in json.dumps(events)  # never a password
    acme = by_action["key.revoke", "succeeded"]["accountId"]

    only_acme = trail(tmp_path, "--account", "acme")
    assert {e["accountId"] for e in only_acme} == {acme}
    assert len(only_acme) == 8  # all but the refusal (no account) and rival's creation
    assert [e["action"] for e in trail(tmp_path, "--action", "key.revoke")] == [
        "key.revoke",
        "key.revoke",
    ]
    assert [e["action"] for e in trail(tmp_path, "--vps", vps_id)] == [
        "vps.remove",
        "vps.update",
        "vps.add",
    ]
    assert trail(tmp_path, "--since", "2999-01-01") == []
    assert len(trail(tmp_path, "--limit", "2")) == 2

    code, out, _ = vpsnap(tmp_path, "admin", "audit")
    assert code == 0
    assert "ACTION" in out  # the table
    code, _, err = vpsnap(tmp_path, "admin", "audit", "--account", "nobody")
    assert code != 0
    assert "No account named 'nobody'" in err
