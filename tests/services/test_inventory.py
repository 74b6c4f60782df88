"""InventoryService: keyset pagination and the live power state of each VPS."""

from __future__ import annotations

import base64

import pytest

from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import HypervisorError, InvalidCursor, VpsNotFound
from vpsnap.domain.model import PowerState, Vps
from vpsnap.domain.ports import VpsFilter
from vpsnap.drivers.fake import FakeDriver
from vpsnap.services.pagination import decode_cursor, encode_cursor

from .conftest import World


class _PartlyUnreachableDriver(FakeDriver):
    """A driver whose hypervisor cannot answer for some VPSes."""

    unreachable: set[str]

    async def power_state(self, vps: Vps) -> PowerState:
        if vps.id in self.unreachable:
            raise HypervisorError(f"no monitor socket for {vps.name}")
        return await super().power_state(vps)


async def _add_many(world: World, count: int) -> list[Vps]:
    return [await world.add_vps(f"vps-{i}") for i in range(count)]


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_cursor_pagination_walks_every_vps_exactly_once(
    world: World, stranger: Principal, limit: int
) -> None:
    mine = await _add_many(world, 5)
    await world.add_vps("theirs", account_name="mallory")
    inventory = world.runtime.services.inventory

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await inventory.list(world.principal, VpsFilter(), cursor, limit)
        pages += 1
        assert len(page.items) <= limit
        seen.extend(view.vps.id for view in page.items)
        assert page.has_more is (page.next_cursor is not None)
        if not page.has_more:
            break
        assert len(page.items) == limit
        cursor = page.next_cursor
    assert seen == sorted(v.id for v in mine)
    assert pages == -(-5 // limit)


async def test_last_full_page_has_no_cursor(world: World) -> None:
    await _add_many(world, 4)
    inventory = world.runtime.services.inventory
    first = await inventory.list(world.principal, VpsFilter(), None, 2)
    second = await inventory.list(world.principal, VpsFilter(), first.next_cursor, 2)
    assert (len(second.items), second.next_cursor, second.has_more) == (2, None, False)


async def test_filters_combine_with_the_account(world: World, stranger: Principal) -> None:
    await _add_many(world, 3)
    await world.add_vps("vps-1", account_name="mallory")
    inventory = world.runtime.services.inventory

    page = await inventory.list(world.principal, VpsFilter(name="VPS-1"), None, 10)

    assert [(v.vps.name, v.vps.account_id) for v in page.items] == [("vps-1", world.account.id)]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage!",
        "%%%%",
        "_w",  # valid base64 of a byte that is not UTF-8
        base64.urlsafe_b64encode(b"v1:").decode(),
        base64.urlsafe_b64encode(b"v2:vps_01").decode(),
        "v1:vps_01hxa3b4c5d6e7f8g9h0j1k2m3",  # not wrapped
    ],
)
async def test_garbage_cursor_is_refused(world: World, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        await world.runtime.services.inventory.list(world.principal, VpsFilter(), cursor, 2)


def test_cursor_round_trips() -> None:
    assert decode_cursor(encode_cursor("vps_01hxa3b4c5d6e7f8g9h0j1k2m3")) == (
        "vps_01hxa3b4c5d6e7f8g9h0j1k2m3"
    )
    assert "=" not in encode_cursor("vps_1")


async def _publish(world: World, driver: FakeDriver | None = None) -> int:
    """What the node's agent does periodically: read every VM and store what changed."""
    observer = world.runtime.observer()
    if driver is not None:
        observer.driver = driver
    return await observer.refresh_power_states()


async def test_power_state_is_what_the_node_last_published(world: World) -> None:
    web, db = await _add_many(world, 2)
    world.driver.set_power_state(web.id, PowerState.RUNNING)
    inventory = world.runtime.services.inventory
    # Nothing observed yet: the API does not ask the hypervisor itself.
    page = await inventory.list(world.principal, VpsFilter(), None, 10)
    assert {v.power_state for v in page.items} == {PowerState.UNKNOWN}
    assert world.driver.calls == []

    assert await _publish(world) == 2
    page = await inventory.list(world.principal, VpsFilter(), None, 10)

    assert [(v.vps.id, v.power_state) for v in page.items] == [
        (web.id, PowerState.RUNNING),
        (db.id, PowerState.STOPPED),
    ]
    assert (await inventory.get(world.principal, db.id)).power_state is PowerState.STOPPED
    # Only changes are written.
    assert await _publish(world) == 0


async def test_an_unreachable_vps_shows_unknown_and_the_others_are_listed(
    world: World,
) -> None:
    web, db, cache = await _add_many(world, 3)
    driver = _PartlyUnreachableDriver(world.clock)
    driver.unreachable = {db.id}
    driver.set_power_state(web.id, PowerState.RUNNING)
    driver.set_power_state(cache.id, PowerState.PAUSED)
    await _publish(world, driver)
    inventory = world.runtime.services.inventory

    page = await inventory.list(world.principal, VpsFilter(), None, 10)

    assert [(v.vps.name, v.power_state) for v in page.items] == [
        ("vps-0", PowerState.RUNNING),
        ("vps-1", PowerState.UNKNOWN),
        ("vps-2", PowerState.PAUSED),
    ]
    assert (await inventory.get(world.principal, db.id)).power_state is PowerState.UNKNOWN


async def test_a_refresh_never_overwrites_a_newer_observation(world: World) -> None:
    """A power job's final write is newer than a refresh that read the VM before the job
    changed it: the refresh's older news is dropped."""
    vps = await world.add_vps()
    read_at = world.clock.now()
    world.clock.advance(seconds=1)
    async with world.store.transaction() as tx:
        assert await tx.record_power_state(vps.id, PowerState.RUNNING, world.clock.now())
        assert not await tx.record_power_state(vps.id, PowerState.STOPPED, read_at)
    assert (await world.vps(vps.id)).power_state is PowerState.RUNNING


async def test_another_accounts_vps_is_not_found(world: World, stranger: Principal) -> None:
    vps = await world.add_vps()
    with pytest.raises(VpsNotFound):
        await world.runtime.services.inventory.get(stranger, vps.id)
    page = await world.runtime.services.inventory.list(stranger, VpsFilter(), None, 10)
    assert page.items == []
