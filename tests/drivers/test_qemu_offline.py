"""QemuDriver and QemuImg cases that only exist with real images: locks, failures, formats."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support import count_thread_hops
from vpsnap.domain.errors import (
    DiskUnusable,
    HypervisorError,
    SnapshotAmbiguous,
    SnapshotNotFound,
    VpsNotReady,
)
from vpsnap.domain.model import LaunchSpec, LibvirtDomain, PowerState, QmpAttachment
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers.qemu import QemuDriver
from vpsnap.drivers.qemu_img import QemuImg

from .support import DISK_SIZE, DiskFactory, held_open, make_vps

pytestmark = pytest.mark.qemu

BLOCK = 64 * 1024


async def snapshot_names(qemu_img: QemuImg, disk: str) -> list[str]:
    return [s.name for s in (await qemu_img.info(disk)).snapshots]


async def run_qemu_img(*args: str) -> tuple[int, str]:
    """Run the real qemu-img directly, bypassing QemuImg, to pin down its own behaviour."""
    proc = await asyncio.create_subprocess_exec(
        "qemu-img",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


# -- why the driver resolves names to ids -----------------------------------------------------


async def test_premise_qemu_img_apply_resolves_ids_before_names(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    # If this starts failing, QEMU changed its lookup; the driver's id resolution stays correct.
    [disk] = await make_disks(1)
    await qemu_img.write_pattern(disk, 0, BLOCK, 0xAA)
    await qemu_img.create_snapshot(disk, "alpha")
    await qemu_img.write_pattern(disk, 0, BLOCK, 0xBB)
    await qemu_img.create_snapshot(disk, "1")
    ids = {s.name: s.id for s in (await qemu_img.info(disk)).snapshots}
    assert ids == {"alpha": "1", "1": "2"}

    code, output = await run_qemu_img("snapshot", "-a", "1", disk)

    assert code == 0, output
    assert await qemu_img.read_matches(disk, 0, BLOCK, 0xAA)  # "alpha", not the one named "1"


async def test_premise_qemu_img_delete_matches_names_only(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    [disk] = await make_disks(1)
    await qemu_img.create_snapshot(disk, "alpha")  # id 1

    code, output = await run_qemu_img("snapshot", "-d", "1", disk)

    assert code == 1
    assert "snapshot not found" in output
    assert await snapshot_names(qemu_img, disk) == ["alpha"]


async def test_qemu_img_apply_by_name_picks_the_named_snapshot(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    [disk] = await make_disks(1)
    await qemu_img.write_pattern(disk, 0, BLOCK, 0xAA)
    await qemu_img.create_snapshot(disk, "alpha")
    await qemu_img.write_pattern(disk, 0, BLOCK, 0xBB)
    await qemu_img.create_snapshot(disk, "1")
    await qemu_img.write_pattern(disk, 0, BLOCK, 0xCC)

    await qemu_img.apply_snapshot(disk, "1")

    assert await qemu_img.read_matches(disk, 0, BLOCK, 0xBB)


async def test_duplicate_names_made_outside_vpsnap_are_not_guessed(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    disks = await make_disks(1)
    [disk] = disks
    await qemu_img.create_snapshot(disk, "dup")
    await qemu_img.create_snapshot(disk, "dup")  # qemu-img itself allows this
    driver = QemuDriver(qemu_img)
    vps = make_vps(disks)

    # Permanent until someone removes one: 409 snapshot_ambiguous, not a retryable 503.
    with pytest.raises(SnapshotAmbiguous, match="2 snapshots named dup") as restoring:
        await driver.restore_snapshot(vps, "dup")
    with pytest.raises(SnapshotAmbiguous, match="2 snapshots named dup"):
        await driver.delete_snapshot(vps, "dup")
    assert restoring.value.code == "snapshot_ambiguous"
    assert f"Disk 1 of {vps.name}" in restoring.value.detail
    assert await snapshot_names(qemu_img, disk) == ["dup", "dup"]
    [point] = await driver.list_restore_points(vps)
    assert point.disks == (disk,)


# -- all disks or none ---------------------------------------------------------------------------


async def test_failure_on_second_disk_rolls_back_the_first(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    disks = await make_disks(2)
    driver = QemuDriver(qemu_img)
    vps = make_vps(disks)

    # The second disk is locked by another process, so qemu-img really fails on it after the
    # first disk already has the snapshot.
    async with held_open(disks[1]):
        with pytest.raises(VpsNotReady) as caught:
            await driver.create_snapshot(vps, SnapshotRequest(name="half"))
        assert f"Disk 2 of {vps.name}" in caught.value.detail
        assert disks[1] not in caught.value.detail  # the path is the operator's
        assert disks[1] in (caught.value.log_detail or "")

    assert await snapshot_names(qemu_img, disks[0]) == []
    assert await snapshot_names(qemu_img, disks[1]) == []
    assert await driver.list_restore_points(vps) == []


async def test_restore_checks_every_disk_before_reverting_any(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    disks = await make_disks(2)
    driver = QemuDriver(qemu_img)
    vps = make_vps(disks)
    await qemu_img.write_pattern(disks[0], 0, BLOCK, 0xAA)
    await qemu_img.create_snapshot(disks[0], "only-first")  # made by hand, on one disk
    await qemu_img.write_pattern(disks[0], 0, BLOCK, 0xBB)

    with pytest.raises(SnapshotNotFound) as caught:
        await driver.restore_snapshot(vps, "only-first")

    assert f"disk 2 of {vps.name}" in caught.value.detail
    assert await qemu_img.read_matches(disks[0], 0, BLOCK, 0xBB)


# -- locks: a running VM ---------------------------------------------------------------------


async def test_locked_disk_fails_fast_with_vps_not_ready(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    disks = await make_disks(2)
    driver = QemuDriver(qemu_img)
    vps = make_vps(disks)
    await driver.create_snapshot(vps, SnapshotRequest(name="before"))

    async with held_open(disks[0]):
        started = time.monotonic()
        with pytest.raises(VpsNotReady) as created:
            await driver.create_snapshot(vps, SnapshotRequest(name="while-running"))
        with pytest.raises(VpsNotReady):
            await driver.restore_snapshot(vps, "before")
        with pytest.raises(VpsNotReady):
            await driver.delete_snapshot(vps, "before")
        elapsed = time.monotonic() - started
        # Reading the snapshot table uses force-share, so listing still works.
        listed = await driver.list_restore_points(vps)

    assert elapsed < 5, f"lock errors took {elapsed:.1f}s"
    assert created.value.code == "vps_not_ready"
    assert "in use by another process" in created.value.detail
    assert "Stop the VM" in created.value.detail
    assert [p.name for p in listed] == ["before"]
    assert await snapshot_names(qemu_img, disks[1]) == ["before"]


# -- missing things ------------------------------------------------------------------------------


async def test_missing_disk_file(
    qemu_img: QemuImg, make_disks: DiskFactory, tmp_path: Path
) -> None:
    [present] = await make_disks(1)
    missing = str(tmp_path / "gone.qcow2")
    driver = QemuDriver(qemu_img)
    vps = make_vps((present, missing))

    assert await driver.power_state(vps) is PowerState.ERROR
    with pytest.raises(DiskUnusable) as caught:
        await driver.create_snapshot(vps, SnapshotRequest(name="s"))
    # Retrying cannot bring the file back: 409 disk_unusable, naming the disk, not the path.
    assert caught.value.code == "disk_unusable"
    assert f"Disk 2 of {vps.name} is missing" in caught.value.detail
    assert missing not in caught.value.detail
    assert missing in (caught.value.log_detail or "")
    with pytest.raises(DiskUnusable, match="Disk 2 of"):
        await driver.list_restore_points(vps)
    assert await snapshot_names(qemu_img, present) == []


async def test_missing_binary(make_disks: DiskFactory) -> None:
    [disk] = await make_disks(1)
    broken = QemuImg("/nonexistent/qemu-img", qemu_io="/nonexistent/qemu-io")

    with pytest.raises(HypervisorError, match="disk tool is not installed") as probed:
        await QemuDriver(broken).probe()
    assert probed.value.log_detail == "qemu-img not found at /nonexistent/qemu-img"
    with pytest.raises(HypervisorError) as read:
        await broken.tool_info(disk)
    assert "qemu-img not found" in (read.value.log_detail or "")
    with pytest.raises(HypervisorError) as matched:
        await broken.read_matches(disk, 0, BLOCK, 0)
    assert matched.value.log_detail == "qemu-io not found at /nonexistent/qemu-io"


async def test_probe_with_real_binary(qemu_img: QemuImg) -> None:
    await QemuDriver(qemu_img).probe()
    assert (await qemu_img.version()).startswith("qemu-img version")


def process_is_gone(pid: int) -> bool:
    # A killed orphan may linger as a zombie until init reaps it; it no longer runs.
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


async def test_timeout_kills_the_process_and_its_children(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = tmp_path / "slow-qemu-img"
    # Killing only the shell would leave the sleep running with the output pipes open.
    script.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {child_pid_file}\nwait\n")
    script.chmod(0o755)
    slow = QemuImg(str(script), timeout=0.5)

    started = time.monotonic()
    with pytest.raises(HypervisorError, match=r"within 0\.5s") as caught:
        await slow.info(tmp_path / "any.qcow2")
    assert "timed out after 0.5s and was killed" in (caught.value.log_detail or "")

    assert time.monotonic() - started < 5
    child = int(child_pid_file.read_text())
    for _ in range(50):
        if process_is_gone(child):
            break
        await asyncio.sleep(0.05)
    assert process_is_gone(child), f"sleep {child} survived the timeout"


# -- formats ---------------------------------------------------------------------------------


async def test_raw_disk_is_detected_and_refused(
    qemu_img: QemuImg, make_disks: DiskFactory, tmp_path: Path
) -> None:
    [qcow2] = await make_disks(1)
    raw = tmp_path / "raw.img"
    with raw.open("wb") as handle:
        handle.truncate(DISK_SIZE)
    driver = QemuDriver(qemu_img)
    vps = make_vps((qcow2, str(raw)))

    assert await qemu_img.detect_format(raw) == "raw"
    assert await qemu_img.detect_format(qcow2) == "qcow2"
    with pytest.raises(DiskUnusable, match="raw image; internal snapshots need qcow2"):
        await driver.create_snapshot(vps, SnapshotRequest(name="s"))
    assert await snapshot_names(qemu_img, qcow2) == []
    # Even called directly, the snapshot command never treats the raw file as anything else.
    with pytest.raises(DiskUnusable, match="not a qcow2 image") as direct:
        await qemu_img.create_snapshot(raw, "s")
    assert "not in qcow2 format" in (direct.value.log_detail or "")


# -- listing -------------------------------------------------------------------------------------


async def test_list_merges_disks_and_reports_the_earliest_time(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    disks = await make_disks(2)
    driver = QemuDriver(qemu_img)
    vps = make_vps(disks)
    await qemu_img.create_snapshot(disks[1], "second-only")
    await driver.create_snapshot(vps, SnapshotRequest(name="both"))
    await qemu_img.create_snapshot(disks[0], "first-only")

    points = await driver.list_restore_points(vps)

    assert [(p.name, p.disks) for p in points] == [
        ("second-only", (disks[1],)),
        ("both", (disks[0], disks[1])),
        ("first-only", (disks[0],)),
    ]
    both = points[1]
    per_disk = [
        s.created_at
        for disk in disks
        for s in (await qemu_img.info(disk)).snapshots
        if s.name == "both"
    ]
    assert both.created_at == min(per_disk)
    assert both.created_at is not None
    assert both.created_at.utcoffset() is not None
    assert both.vm_state_size == 0


async def test_info_reports_sizes(qemu_img: QemuImg, make_disks: DiskFactory) -> None:
    [disk] = await make_disks(1)
    info = await qemu_img.info(disk)
    assert info.format == "qcow2"
    assert info.virtual_size == DISK_SIZE
    assert info.actual_size is not None
    assert 0 < info.actual_size < DISK_SIZE
    assert info.snapshots == ()


# -- qemu-io patterns ----------------------------------------------------------------------


async def test_read_matches_detects_a_mismatch(qemu_img: QemuImg, make_disks: DiskFactory) -> None:
    [disk] = await make_disks(1)
    await qemu_img.write_pattern(disk, 0, BLOCK, 0xAA)

    assert await qemu_img.read_matches(disk, 0, BLOCK, 0xAA)
    assert not await qemu_img.read_matches(disk, 0, BLOCK, 0xAB)
    # Only partly covered by the written pattern: the rest reads as zeroes.
    assert not await qemu_img.read_matches(disk, 0, 2 * BLOCK, 0xAA)
    assert await qemu_img.read_matches(disk, BLOCK, BLOCK, 0x00)


async def test_read_of_a_missing_image_is_an_error_not_a_mismatch(
    qemu_img: QemuImg, tmp_path: Path
) -> None:
    with pytest.raises(DiskUnusable, match="image file does not exist"):
        await qemu_img.read_matches(tmp_path / "nope.qcow2", 0, BLOCK, 0)


async def test_write_to_a_locked_image_is_vps_not_ready(
    qemu_img: QemuImg, make_disks: DiskFactory
) -> None:
    [disk] = await make_disks(1)
    async with held_open(disk):
        with pytest.raises(VpsNotReady):
            await qemu_img.write_pattern(disk, 0, BLOCK, 0x11)


# -- power states of a page (the node's periodic pass) ------------------------------------------


async def test_power_states_of_a_page_take_one_thread_hop_and_answer_as_power_state(
    qemu_img: QemuImg, make_disks: DiskFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = QemuDriver(qemu_img)  # no data dir: a managed VM cannot be reached
    disks = await make_disks(2)
    missing = str(tmp_path / "missing.qcow2")
    page = [
        make_vps((disks[0],), "vps-ok"),
        make_vps((disks[0], missing), "vps-one-disk-gone"),
        make_vps((), "vps-no-disks"),
        make_vps((disks[1],), "vps-managed", machine=LaunchSpec(memory_mib=64, cpus=1)),
        make_vps((disks[1],), "vps-attached", machine=QmpAttachment(str(tmp_path / "no.sock"))),
        make_vps((disks[1],), "vps-libvirt", machine=LibvirtDomain("qemu:///system", "d")),
        *(make_vps((disks[i % 2],), f"vps-{i}") for i in range(50)),
    ]
    expected: list[object] = []
    for vps in page:
        try:
            expected.append(await driver.power_state(vps))
        except HypervisorError as exc:
            expected.append((type(exc), exc.detail))

    hops = count_thread_hops(monkeypatch)
    got = await driver.power_states(page)

    assert [(type(s), s.detail) if isinstance(s, HypervisorError) else s for s in got] == expected
    assert got[:3] == [PowerState.STOPPED, PowerState.ERROR, PowerState.ERROR]
    assert got[4] is PowerState.STOPPED  # no VM answers on the socket: its disks decide
    assert isinstance(got[3], HypervisorError)
    assert isinstance(got[5], HypervisorError)
    # One hop for the page; the attachment whose monitor is gone reads its disk on its own.
    assert len(hops) == 2
