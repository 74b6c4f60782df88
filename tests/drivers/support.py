"""Helpers for the driver tests: VPS records, qcow2 image factory, an image held open."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vpsnap.domain.model import Machine, ServiceStatus, Vps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from vpsnap.drivers.qemu_img import QemuImg

DISK_SIZE = 64 * 1024 * 1024


def make_vps(disks: tuple[str, ...], vps_id: str = "vps-1", machine: Machine | None = None) -> Vps:
    return Vps(
        id=vps_id,
        account_id="acct-1",
        name=f"name-of-{vps_id}",
        node="node-1",
        disks=disks,
        snapshot_slots=5,
        service_status=ServiceStatus.ACTIVE,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        machine=machine,
    )


class DiskFactory:
    """Creates empty qcow2 images of ``DISK_SIZE`` in the test's temporary directory."""

    def __init__(self, qemu_img: QemuImg, directory: Path) -> None:
        self._qemu_img = qemu_img
        self._directory = directory

    async def __call__(self, count: int = 2, prefix: str = "disk") -> tuple[str, ...]:
        paths = tuple(str(self._directory / f"{prefix}{i}.qcow2") for i in range(count))
        for path in paths:
            await self._qemu_img.create_image(path, DISK_SIZE)
        return paths


@contextlib.asynccontextmanager
async def held_open(path: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Keep ``path`` open in an interactive qemu-io, which holds its write lock like a VM does."""
    proc = await asyncio.create_subprocess_exec(
        "qemu-io",
        "-f",
        "qcow2",
        path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        # An answered command proves the image is open, so the lock is taken.
        proc.stdin.write(b"read 0 512\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        assert b"read 512/512 bytes" in line, line
        yield proc
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
