"""What the system tests share: a data dir with one account, one key and one VPS on a real
qcow2 disk, made with the real `vpsnap admin` commands."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import VPSNAP


def admin(data_dir: Path, *args: str) -> str:
    """``vpsnap admin ARGS --data-dir DATA_DIR``; its standard output."""
    result = subprocess.run(
        [VPSNAP, "admin", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


@pytest.fixture
def one_vps(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    """(data dir, a write:all key, the VPS's disk): account acme, VPS web with 3 slots."""
    disk = tmp_path / "web.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    admin(tmp_path, "account", "create", "acme")
    key = admin(tmp_path, "key", "create", "--account", "acme", "--scopes", "write:all")
    admin(tmp_path, "vps", "add", "--account", "acme", "--name", "web", "--disk", str(disk),
          "--slots", "3")  # fmt: skip
    yield tmp_path, key, disk
