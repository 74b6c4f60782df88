"""Files holding secrets or tenants' data are created 0600 in 0700 directories, whatever the
umask (issue 9, kind 12): the data dir, the SQLite database with its -wal and -shm, the lock
file, demo-tokens.json, the demo disks and their directory."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpsnap.demo import seed_demo
from vpsnap.runtime import Runtime, qemu_img_for
from vpsnap.settings import Settings

pytestmark = pytest.mark.qemu

SECRET_FILES = ("vpsnap.db", "vpsnap.db-wal", "vpsnap.db-shm", "vpsnap.lock", "demo-tokens.json")


@pytest.fixture(params=[0o022, 0o000, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _demo(data_dir: Path) -> Runtime:
    settings = Settings(data_dir=data_dir, demo_vm=False)
    runtime = Runtime.build(settings)
    await runtime.prepare()
    runtime.claim_data_dir()
    await seed_demo(runtime, qemu_img_for(settings), disk_bytes=16 * 1024**2, data_bytes=1024**2)
    return runtime


def assert_private(data_dir: Path) -> None:
    assert mode(data_dir) == 0o700
    for name in SECRET_FILES:
        assert mode(data_dir / name) == 0o600, name
    assert mode(data_dir / "disks") == 0o700
    disks = sorted((data_dir / "disks").iterdir())
    assert len(disks) == 4
    for disk in disks:
        assert mode(disk) == 0o600, disk.name


def test_a_new_data_dir_is_private(tmp_path: Path, umask: int) -> None:
    """The reproduction: vpsnap.db (+ -wal, -shm), demo-tokens.json and the demo disks were
    created 0644 (readable by every local user)."""
    data_dir = tmp_path / "var"

    async def run() -> None:
        runtime = await _demo(data_dir)
        try:
            # -wal and -shm exist while the database is open.
            assert_private(data_dir)
        finally:
            await runtime.close()

    asyncio.run(run())


def test_an_existing_data_dir_is_made_private(tmp_path: Path) -> None:
    """A data dir from before (files 0644, dirs 0755) is tightened at the next start."""
    data_dir = tmp_path / "var"
    previous = os.umask(0o022)
    try:
        asyncio.run(_demo_and_close(data_dir))
        for path in [data_dir, data_dir / "disks"]:
            path.chmod(0o755)
        for path in [*data_dir.iterdir(), *(data_dir / "disks").iterdir()]:
            if path.is_file():
                path.chmod(0o644)

        async def again() -> None:
            runtime = await _demo(data_dir)
            try:
                assert_private(data_dir)
            finally:
                await runtime.close()

        asyncio.run(again())
    finally:
        os.umask(previous)


async def _demo_and_close(data_dir: Path) -> None:
    runtime = await _demo(data_dir)
    await runtime.close()
