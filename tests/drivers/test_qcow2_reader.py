"""The direct qcow2 snapshot-table reader agrees with `qemu-img info` and falls back safely."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vpsnap.drivers import qcow2
from vpsnap.drivers.qemu_img import QemuImg

pytestmark = pytest.mark.qemu


def tool_snapshots(path: Path) -> list[tuple[str, str, int, int, int]]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, check=True
    )
    return [
        (s["id"], s["name"], s["vm-state-size"], s["date-sec"], s["date-nsec"] // 1000)
        for s in json.loads(out.stdout).get("snapshots", [])
    ]


def reader_snapshots(path: Path) -> list[tuple[str, str, int, int, int]]:
    return [
        (s.id, s.name, s.vm_state_size, int(s.created_at.timestamp()), s.created_at.microsecond)
        for s in qcow2.read_image(path).snapshots
    ]


def make_image(path: Path, size: str = "64M", *options: str) -> Path:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), size], check=True
    )
    return path


@pytest.mark.parametrize("compat", ["1.1", "0.10"])  # qcow2 v3 and v2 headers
def test_matches_qemu_img_for_many_and_odd_names(tmp_path: Path, compat: str) -> None:
    image = make_image(tmp_path / "a.qcow2", "1T", "-o", f"compat={compat}")
    names = ["a", "1", "before-upgrade", "x" * 40, "näme-ütf8", "with space", "2", "Z_9"]
    for name in names:
        subprocess.run(["qemu-img", "snapshot", "-c", name, str(image)], check=True)
    subprocess.run(["qemu-img", "snapshot", "-d", "before-upgrade", str(image)], check=True)
    assert reader_snapshots(image) == tool_snapshots(image)
    info = qcow2.read_image(image)
    assert info.virtual_size == 1024**4
    assert [s.name for s in info.snapshots] == [n for n in names if n != "before-upgrade"]


def test_an_image_without_snapshots(tmp_path: Path) -> None:
    image = make_image(tmp_path / "empty.qcow2")
    assert qcow2.read_image(image).snapshots == ()


@pytest.mark.parametrize(
    "content", [b"", b"QFI", b"\x00" * 4096, b"QFI\xfb" + b"\x00\x00\x00\x09" + b"\x00" * 200]
)
def test_anything_else_is_unreadable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "odd.img"
    path.write_bytes(content)
    with pytest.raises(qcow2.Qcow2Unreadable):
        qcow2.read_image(path)


def test_a_truncated_snapshot_table_is_unreadable(tmp_path: Path) -> None:
    image = make_image(tmp_path / "t.qcow2")
    subprocess.run(["qemu-img", "snapshot", "-c", "snap", str(image)], check=True)
    header = image.read_bytes()
    offset = int.from_bytes(header[64:72], "big")
    image.write_bytes(header[: offset + 20])
    with pytest.raises(qcow2.Qcow2Unreadable):
        qcow2.read_image(image)


@pytest.fixture
def raw_disk(tmp_path: Path) -> Path:
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "1M"], check=True)
    return raw


@pytest.fixture
def qcow2_with_snapshot(tmp_path: Path) -> Path:
    image = make_image(tmp_path / "d.qcow2")
    subprocess.run(["qemu-img", "snapshot", "-c", "s1", str(image)], check=True)
    return image


async def test_info_falls_back_to_qemu_img_for_other_formats(raw_disk: Path) -> None:
    info = await QemuImg().info(raw_disk)
    assert info.format == "raw"
    assert info.snapshots == ()


async def test_info_reads_qcow2_directly_without_the_tool(qcow2_with_snapshot: Path) -> None:
    # No qemu-img at that path: only the direct reader can answer.
    info = await QemuImg("/nonexistent/qemu-img").info(qcow2_with_snapshot)
    assert info.format == "qcow2"
    assert [s.name for s in info.snapshots] == ["s1"]
