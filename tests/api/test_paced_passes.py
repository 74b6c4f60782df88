"""The node's passes over every VPS (data stores, power states, reconciliation) work a page at
a time and stop at a page boundary when the scheduler stops (issue 15): what the pages before
did is stored, nothing is half written, and the next run does the rest."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from vpsnap.jobs import data_stores, observer
from vpsnap.jobs.data_stores import publish_data_stores
from vpsnap.pacing import Pace, RunStopped, pacing
from vpsnap.scheduler import reconcile as reconcile_module
from vpsnap.scheduler.reconcile import DiskFingerprints, reconcile

if TYPE_CHECKING:
    from tests.conftest import Api

pytestmark = pytest.mark.qemu


def stopping_pace() -> Pace:
    """The pace of a scheduler asked to stop: the first page boundary ends the run."""
    stopping = asyncio.Event()
    stopping.set()
    return Pace(stopping)


async def test_data_stores_are_published_page_by_page_and_a_stop_keeps_the_pages_done(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, clock, node = api.runtime.store, api.runtime.clock, api.runtime.settings.node
    monkeypatch.setattr(data_stores, "_PAGE", 1)  # one VPS a page: a page per demo VPS
    with pacing(stopping_pace()), pytest.raises(RunStopped):
        await publish_data_stores(store, clock, node)
    async with store.transaction(read_only=True) as tx:
        first = await tx.list_vps_storage(node)
    assert len(first) == 1  # the first page, stored in its own transaction

    await publish_data_stores(store, clock, node)  # unstopped: all pages
    await publish_data_stores(store, clock, node)  # and again: replaced, not added
    async with store.transaction(read_only=True) as tx:
        usages = await tx.list_vps_storage(node)
        stores = await tx.list_data_stores(node)
    assert sorted(u.vps_id for u in usages) == sorted(api.vps_ids.values())
    assert all(u.allocated_bytes > 0 and u.stores for u in usages)
    assert stores and {s.path for s in stores} >= {p for u in usages for p in u.stores}


async def test_a_stopped_power_state_refresh_and_reconcile_pass_end_after_one_page(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observer, "_PAGE", 1)
    monkeypatch.setattr(reconcile_module, "_PAGE", 1)
    reads: list[str] = []
    driver = api.runtime.hypervisor()
    inner = driver.list_restore_points

    async def counted(vps):  # type: ignore[no-untyped-def]
        reads.append(vps.name)
        return await inner(vps)

    monkeypatch.setattr(driver, "list_restore_points", counted)
    with pacing(stopping_pace()), pytest.raises(RunStopped):
        await api.runtime.observer().refresh_power_states()
    seen = DiskFingerprints(racy_ns=0)
    with pacing(stopping_pace()), pytest.raises(RunStopped):
        await reconcile(api.runtime.store, driver, None, seen=seen)
    assert len(reads) == 1  # one page of one VPS, then the stop
    assert seen.last_pass_at is None  # an unfinished pass is not taken for a whole one

    report = await reconcile(api.runtime.store, driver, None, seen=seen)  # outside: all pages
    assert report.findings == []
    # Every VPS read once: the one of the stopped pass's page is remembered, unchanged.
    assert sorted(reads) == sorted(api.vps_ids)
    assert seen.last_pass_at is not None
