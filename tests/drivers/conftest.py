"""Fixtures shared by the driver tests."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from tests.support import qemu_pids_under
from vpsnap.drivers.machines import ManagedMachines
from vpsnap.drivers.qemu import LiveTimeouts
from vpsnap.drivers.qemu_img import QemuImg

from .libvirt_lab import lab, libvirt_conn, libvirt_driver  # noqa: F401 - fixtures
from .support import DiskFactory

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
def qemu_img() -> QemuImg:
    # CI installs qemu-utils: a missing binary is a broken environment, not a reason to skip.
    for tool in ("qemu-img", "qemu-io"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH; install qemu-utils to run the qemu tests")
    return QemuImg(timeout=30.0)


@pytest.fixture
def make_disks(qemu_img: QemuImg, tmp_path: Path) -> DiskFactory:
    return DiskFactory(qemu_img, tmp_path)


@pytest.fixture
async def machines(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ManagedMachines]:
    """A data dir for managed VMs; every VM started in it is gone after the test (checked)."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is not on PATH; install qemu-system-x86 (scripts/install)")
    root = tmp_path_factory.mktemp("vm")
    managed = ManagedMachines(root, timeout=30.0)
    yield managed
    for vps_id, _ in list(managed.running()):
        await managed.kill(vps_id)
    assert qemu_pids_under(root) == [], "a QEMU process outlived its test"


@pytest.fixture
def live_timeouts() -> LiveTimeouts:
    # Short waits: a guest without an OS never answers the agent nor the power button.
    return LiveTimeouts(
        qmp=10.0,
        status=2.0,
        guest_agent=1.0,
        guest_freeze=1.0,
        guest_agent_recovery=3.0,
        shutdown=1.5,
        snapshot_job=60.0,
    )
