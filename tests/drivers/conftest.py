"""Fixtures shared by the driver tests."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from vpsnap.drivers.qemu_img import QemuImg

from .support import DiskFactory

if TYPE_CHECKING:
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
