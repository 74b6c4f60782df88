"""`vpsnap admin …` commands, in-process through Typer's runner, on a real data dir."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vpsnap.cli.entry import cli as app

pytestmark = pytest.mark.qemu
runner = CliRunner()


def vpsnap(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout, result.stderr


def qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def test_account_key_and_vps_lifecycle(tmp_path: Path) -> None:
    code, out, _ = vpsnap(tmp_path, "admin", "account", "create", "acme")
    assert code == 0
    assert "acct_" in out
    code, _, err = vpsnap(tmp_path, "admin", "account", "create", "acme")
    assert code == 4
    assert "already exists" in err

    code, out, err = vpsnap(
        tmp_path,
        "admin",
        "key",
        "create",
        "--account",
        "acme",
        "--scopes",
        "read:vm,backup:vm",
        "--expires-in-days",
        "30",
    )
    assert code == 0
    secret = out.strip()
    assert secret.startswith("vpsnap_")
    assert len(secret) > 40
    assert "backup:vm,read:vm" in err
    assert "expires" in err
    key_id = err.split("key id ")[1].split(",")[0]
    # Only a hash is stored: the secret appears nowhere in the database file.
    assert secret.encode() not in (tmp_path / "vpsnap.db").read_bytes()

    disk_a, disk_b = qcow2(tmp_path / "a.qcow2"), qcow2(tmp_path / "b.qcow2")
    code, out, _ = vpsnap(
        tmp_path,
        "admin",
        "vps",
        "add",
        "--account",
        "acme",
        "--name",
        "web",
        "--disk",
        str(disk_a),
        "--disk",
        str(disk_b),
        "--slots",
        "2",
        "--node",
        "hv1",
    )
    assert code == 0, out
    assert "vps_" in out
    code, out, _ = vpsnap(tmp_path, "admin", "vps", "list")
    assert code == 0
    assert "web" in out
    assert "acme" in out
    assert "hv1" in out

    code, out, _ = vpsnap(tmp_path, "admin", "key", "revoke", key_id)
    assert code == 0
    code, _, err = vpsnap(tmp_path, "admin", "key", "revoke", key_id)
    assert code == 3
    assert "No active API key" in err


def test_clear_errors_for_bad_input(tmp_path: Path) -> None:
    vpsnap(tmp_path, "admin", "account", "create", "acme")
    code, _, err = vpsnap(
        tmp_path, "admin", "key", "create", "--account", "acme", "--scopes", "read:vm,root"
    )
    assert code == 2
    assert "unknown scope 'root'" in err
    code, _, err = vpsnap(
        tmp_path, "admin", "key", "create", "--account", "nobody", "--scopes", "read:vm"
    )
    assert code == 3
    assert "No account named 'nobody'" in err

    code, _, err = vpsnap(
        tmp_path,
        "admin",
        "vps",
        "add",
        "--account",
        "acme",
        "--name",
        "web",
        "--disk",
        str(tmp_path / "missing.qcow2"),
        "--slots",
        "1",
    )
    assert code == 2
    assert "does not exist" in err

    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "1M"], check=True)
    code, _, err = vpsnap(
        tmp_path,
        "admin",
        "vps",
        "add",
        "--account",
        "acme",
        "--name",
        "web",
        "--disk",
        str(raw),
        "--slots",
        "1",
    )
    assert code == 2
    assert "raw, not qcow2" in err
    assert "qemu-img convert" in err


def test_demo_seeding_is_idempotent(tmp_path: Path) -> None:
    import asyncio

    from vpsnap.demo import seed_demo
    from vpsnap.runtime import Runtime, qemu_img_for
    from vpsnap.settings import Settings

    settings = Settings(data_dir=tmp_path)

    async def seed() -> tuple[dict[str, Any], list[tuple[str, str, int]]]:
        runtime = Runtime.build(settings)
        await runtime.prepare()
        tokens = await seed_demo(
            runtime, qemu_img_for(settings), disk_bytes=16 * 1024**2, data_bytes=1024**2
        )
        rows = [
            (v.name, a, v.snapshot_slots) for v, a in await runtime.services.accounts.list_vps()
        ]
        await runtime.close()
        return tokens, rows

    first_tokens, first_rows = asyncio.run(seed())
    assert sorted(first_rows) == [
        ("demo-db", "demo", 1),
        ("demo-nosnap", "demo", 0),
        ("demo-web", "demo", 3),
        ("other-web", "other", 2),
    ]
    assert json.loads((tmp_path / "demo-tokens.json").read_text()) == first_tokens
    assert set(first_tokens) == {"full", "readonly", "other", "users"}
    # The dashboard users (issue 11), each with a generated password.
    assert set(first_tokens["users"]) == {
        "demo@example.com",
        "viewer@example.com",
        "other@example.com",
    }
    assert all(len(p) >= 12 for p in first_tokens["users"].values())
    second_tokens, second_rows = asyncio.run(seed())
    assert second_tokens == first_tokens
    assert sorted(second_rows) == sorted(first_rows)
    for name in ("demo-web", "demo-db", "demo-nosnap", "other-web"):
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", str(tmp_path / "disks" / f"{name}.qcow2")],
            capture_output=True,
            check=True,
        )
        assert json.loads(out.stdout)["format"] == "qcow2"
