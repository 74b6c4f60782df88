"""Incremental reconciliation (issue 15) on real qcow2 disks: a pass does not read again the
disks that did not change since the last pass (counted at the driver), reads the ones that did,
and still applies the repeated-observation rules to what it saw."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.api.test_reconcile_and_metrics import snapshot
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import Job, JobStatus, JobType, SnapshotStatus, Vps
from vpsnap.domain.ports import RestorePoint
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.scheduler.reconcile import Action, DiskFingerprints, reconcile

if TYPE_CHECKING:
    from tests.conftest import Api

pytestmark = pytest.mark.qemu

AT_ONCE = timedelta(0)


class CountingDriver:
    """The API's real driver, counting its disk reads per VPS name."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads: Counter[str] = Counter()

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]:
        self.reads[vps.name] += 1
        points: list[RestorePoint] = await self.inner.list_restore_points(vps)
        return points

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _fingerprints() -> DiskFingerprints:
    # Files written a moment ago count as "racily clean" by default (read again until 2 s
    # have passed); the tests' disks were all just written, and the tests do not sleep.
    return DiskFingerprints(racy_ns=0)


async def test_an_unchanged_disk_is_not_read_again_and_a_changed_one_is(api: Api) -> None:
    driver = CountingDriver(api.runtime.driver)
    seen = _fingerprints()
    store = api.runtime.store

    first = await reconcile(store, driver, None, seen=seen)  # type: ignore[arg-type]
    assert first.findings == []
    disks_read = sum(driver.reads.values())
    assert disks_read >= 2  # every VPS of the demo (demo-nosnap may have no qcow2 to read)

    driver.reads.clear()
    assert (await reconcile(store, driver, None, seen=seen)).findings == []  # type: ignore[arg-type]
    assert sum(driver.reads.values()) == 0
    assert seen.skipped == disks_read
    # Nothing was found last time and no job ran since: not even the rows were compared.
    assert seen.compares_skipped == disks_read

    # A snapshot made behind vpsnap's back changes demo-db's disk: only that VPS is read.
    await QemuImg().create_snapshot(api.disk("demo-db"), "foreign")
    report = await reconcile(store, driver, None, seen=seen)  # type: ignore[arg-type]
    assert dict(driver.reads) == {"demo-db": 1}
    assert [(f.action, f.vps_name, f.snapshot) for f in report.findings] == [
        (Action.REPORTED_FOREIGN, "demo-db", "foreign")
    ]


async def test_a_suspicion_is_confirmed_by_a_later_pass_without_reading_again(api: Api) -> None:
    await snapshot(api, "demo-db", "gone")
    driver = CountingDriver(api.runtime.driver)
    seen = _fingerprints()
    store = api.runtime.store
    await reconcile(store, driver, None, seen=seen)  # type: ignore[arg-type]
    await QemuImg().delete_snapshot(api.disk("demo-db"), "gone")

    suspected = await reconcile(store, driver, None, seen=seen, confirm_after=AT_ONCE)  # type: ignore[arg-type]
    assert [(f.action, f.snapshot) for f in suspected.findings] == [
        (Action.SUSPECTED_MISSING, "gone")
    ]
    driver.reads.clear()

    # Nothing changed on disk since: the second observation is the remembered one, and it
    # still takes a second pass to turn the suspicion into a verdict.
    confirmed = await reconcile(store, driver, None, seen=seen, confirm_after=AT_ONCE)  # type: ignore[arg-type]
    assert driver.reads["demo-db"] == 0
    assert [(f.action, f.snapshot) for f in confirmed.findings] == [(Action.MARKED_MISSING, "gone")]


async def test_a_job_since_the_last_pass_makes_its_vps_compared_again(api: Api) -> None:
    """Rows change with jobs: a VPS with a job since the last pass is compared again, even
    when its disks are exactly as they were."""
    await snapshot(api, "demo-db", "kept")
    driver = CountingDriver(api.runtime.driver)
    seen = _fingerprints()
    store = api.runtime.store
    vps_id = api.vps_ids["demo-db"]
    await reconcile(store, driver, None, seen=seen)  # type: ignore[arg-type]
    assert vps_id in seen.unchanged

    # What a job's end could write (here by hand, the disk untouched): the row says failed
    # while the snapshot is still whole on disk; and the job itself, finished.
    async with store.transaction() as tx:
        await tx.set_snapshot_status(
            vps_id, "kept", SnapshotStatus.FAILED, only_from=SnapshotStatus.AVAILABLE
        )
        vps = await tx.get_vps(vps_id, lock=True)
        assert vps is not None
        await tx.add_job(_job(vps, api, JobStatus.FAILED), vps.node)
    driver.reads.clear()
    report = await reconcile(store, driver, None, seen=seen)  # type: ignore[arg-type]

    assert driver.reads["demo-db"] == 0  # the disk was not read again ...
    assert [(f.action, f.snapshot) for f in report.findings] == [
        (Action.REAPPEARED, "kept")  # ... but compared: the job said the rows may differ
    ]


async def test_a_disk_written_a_moment_ago_is_read_again(api: Api) -> None:
    """Within the same mtime tick a file can change again unseen: a fingerprint taken that
    close to a write proves nothing (the default rule, 2 s)."""
    driver = CountingDriver(api.runtime.driver)
    seen = DiskFingerprints(racy_ns=3600 * 10**9)
    store = api.runtime.store

    await reconcile(store, driver, None, seen=seen)  # type: ignore[arg-type]
    first = sum(driver.reads.values())
    await reconcile(store, driver, None, seen=seen)  # type: ignore[arg-type]

    assert sum(driver.reads.values()) == 2 * first
    assert seen.skipped == 0


def _job(vps: Vps, api: Api, status: JobStatus) -> Job:
    """A job of ``vps`` created now; a ``pending`` one is never claimed (nothing promotes it)."""
    return Job(
        id=new_id("job"),
        account_id=vps.account_id,
        vps_id=vps.id,
        type=JobType.SNAPSHOT_DELETE,
        status=status,
        snapshot_name="any",
        payload={},
        progress=0,
        result=None,
        error=None,
        attempts=0,
        created_at=api.runtime.clock.now(),
        node=vps.node,
    )


async def test_a_busy_vps_is_neither_read_nor_compared(api: Api) -> None:
    driver = CountingDriver(api.runtime.driver)
    store = api.runtime.store
    async with store.transaction() as tx:
        vps = await tx.get_vps(api.vps_ids["demo-db"], lock=True)
        assert vps is not None
        # Waiting behind a job (pending): unfinished, and never claimed by the API's worker.
        await tx.add_job(_job(vps, api, JobStatus.PENDING), vps.node)

    report = await reconcile(store, driver, None, seen=_fingerprints())  # type: ignore[arg-type]

    assert driver.reads["demo-db"] == 0
    assert driver.reads  # the others were read
    assert (Action.SKIPPED_BUSY, "demo-db") in [(f.action, f.vps_name) for f in report.findings]
