"""Capacity: the TOML configuration, prices, and CapacityService on the real store (SQLite and
PostgreSQL) with the billing webhook delivered to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from standardwebhooks import Webhook, WebhookVerificationError

from vpsnap.billing.webhook import (
    BillingConfigError,
    NoBillingGateway,
    WebhookBillingGateway,
    billing_gateway,
)
from vpsnap.capacity_config import CapacityConfigError, load_capacity_config
from vpsnap.domain.auth import Principal
from vpsnap.domain.capacity import (
    BUILTIN_CAPACITY,
    BillingGateway,
    CapacityConfig,
    Price,
    SlotOption,
    format_amount,
    price_change,
    slot_request_errors,
    slots_in_use_reason,
)
from vpsnap.domain.clock import format_timestamp
from vpsnap.domain.errors import (
    BillingUnavailable,
    Conflict,
    FieldError,
    InvalidRequest,
    SnapshotSlotsInUse,
    VpsNotFound,
    VpsNotReady,
)
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import ServiceStatus, Vps
from vpsnap.services.capacity import CapacityService
from vpsnap.services.snapshots import CreateSnapshot
from vpsnap.settings import Settings

from .conftest import DISKS, World

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "capacity.toml"
SECRET = "test-webhook-secret"


# -- a real HTTP receiver ------------------------------------------------------------------------


@dataclass
class Delivery:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload

    def signature_is_valid(self, secret: str = SECRET) -> bool:
        """Verified as a Standard Webhooks receiver does (a secret that is not ``whsec_…`` is
        the key's raw bytes)."""
        try:
            Webhook(secret.encode()).verify(self.body, self.headers)
        except WebhookVerificationError:
            return False
        return True


@dataclass
class WebhookReceiver:
    """Minimal HTTP/1.1 server on 127.0.0.1: records every request, then answers ``status``
    (or never answers when ``hang``). ``before_answer`` runs between the two."""

    status: int = 200
    hang: bool = False
    before_answer: Callable[[Delivery], Awaitable[None]] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/billing/hook"

    async def stop(self) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def events(self) -> list[str]:
        return [d.json()["event"] for d in self.deliveries]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            delivery = Delivery(method, path, headers, body)
            self.deliveries.append(delivery)
            if self.before_answer is not None:
                await self.before_answer(delivery)
            if self.hang:
                await self._release.wait()
                return
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up (timeout): nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver()
    await hook.start()
    yield hook
    await hook.stop()


def webhook(receiver: WebhookReceiver, world: World, timeout: float = 5.0) -> BillingGateway:
    settings = Settings(
        billing_webhook_url=receiver.url,
        billing_webhook_secret=SECRET,
        billing_webhook_timeout_seconds=timeout,
    )
    return billing_gateway(settings, world.clock)


def service(
    world: World,
    config: CapacityConfig = BUILTIN_CAPACITY,
    billing: BillingGateway | None = None,
) -> CapacityService:
    return CapacityService(world.store, world.clock, config, billing or NoBillingGateway())


async def slots_of(world: World, vps_id: str) -> int:
    return (await world.vps(vps_id)).snapshot_slots


async def take_snapshots(world: World, vps_id: str, *names: str) -> None:
    for name in names:
        world.clock.advance(seconds=1)  # distinct createdAt: the listing order is the taking order
        await world.runtime.services.snapshots.create(world.principal, vps_id, CreateSnapshot(name))
    await world.run_all()


async def add_vps_on_plan(world: World, plan: str | None, slots: int) -> Vps:
    vps = Vps(
        id=new_id("vps"),
        account_id=world.account.id,
        name=f"on-{plan}",
        node="local",
        disks=tuple(d.replace("/fake/", f"/fake/on-{plan}/") for d in DISKS),  # its own files
        snapshot_slots=slots,
        service_status=ServiceStatus.ACTIVE,
        created_at=world.clock.now(),
        plan=plan,
    )
    async with world.store.transaction() as tx:
        await tx.add_vps(vps)
    return vps


# -- configuration -------------------------------------------------------------------------------


def test_no_file_means_the_builtin_default() -> None:
    config = load_capacity_config(None)
    assert config is BUILTIN_CAPACITY
    option = config.snapshot_slots
    assert option is not None
    assert (option.min, option.max, option.step) == (0, 10, 1)
    assert option.unit_price == Price(Decimal("1.00"), "EUR", "monthly")


def test_the_shipped_example_loads() -> None:
    config = load_capacity_config(EXAMPLE)
    option = config.snapshot_slots
    assert option is not None
    assert (option.label, option.min, option.max, option.step) == ("Snapshot slots", 0, 10, 1)
    assert option.unit_price == Price(Decimal("1.50"), "EUR", "monthly")
    assert config.default_snapshot_slots == 0
    assert [(p.id, p.name, p.snapshot_slots, p.price.amount) for p in config.plans] == [
        ("vps-s", "VPS S", 1, Decimal("5.00")),
        ("vps-m", "VPS M", 3, Decimal("12.00")),
    ]
    assert config.source == str(EXAMPLE)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "capacity.toml"
    path.write_text(text)
    return path


def test_prices_are_exact_decimals_whether_strings_floats_or_integers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
defaultSnapshotSlots = 2
[snapshotSlots]
min = 2
max = 20
step = 2
unitPrice = { amount = 0.10, currencyCode = "SEK", billingCycle = "annually" }
[[plans]]
id = "a"
name = "A"
price = { amount = "9.9", currencyCode = "SEK", billingCycle = "monthly" }
[[plans]]
id = "b"
name = "B"
price = { amount = 7, currencyCode = "SEK", billingCycle = "monthly" }
""",
    )
    config = load_capacity_config(path)
    assert config.snapshot_slots is not None
    assert config.snapshot_slots.unit_price.amount == Decimal("0.10")
    assert config.snapshot_slots.label == "Snapshot slots"
    assert [p.price.amount for p in config.plans] == [Decimal("9.9"), Decimal(7)]
    assert [p.snapshot_slots for p in config.plans] == [0, 0]
    assert config.default_snapshot_slots == 2
    # 0.10 * 3 is 0.30 exactly: no float drift anywhere.
    assert price_change(config.snapshot_slots, 2, 8).recurring_amount == Decimal("0.80")


def test_a_file_without_a_slot_option_sells_no_slots(tmp_path: Path) -> None:
    config = load_capacity_config(write(tmp_path, "defaultSnapshotSlots = 1\n"))
    assert config.snapshot_slots is None
    assert config.plans == ()


_OPTION = 'unitPrice = { amount = "1.00", currencyCode = "EUR", billingCycle = "monthly" }'
_PLAN_PRICE = 'price = { amount = "1.00", currencyCode = "EUR", billingCycle = "monthly" }'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[snapshotSlots]\nmin = 5\nmax = 3\n" + _OPTION, "snapshotSlots.min: must not be above"),
        ("[snapshotSlots]\nmin = 0\nmax = 3\nstep = 0\n" + _OPTION, "snapshotSlots.step: must be"),
        (
            "[snapshotSlots]\nmin = 0\nmax = 5\nstep = 2\n" + _OPTION,
            "snapshotSlots.max: must be min",
        ),
        ("[snapshotSlots]\nmin = -1\nmax = 3\n" + _OPTION, "snapshotSlots.min: must be at least 0"),
        ("[snapshotSlots]\nmin = 0\nmax = 70000\n" + _OPTION, "snapshotSlots.max: must be at most"),
        (
            "[snapshotSlots]\nmin = 0\nmax = 2.5\n" + _OPTION,
            "snapshotSlots.max: must be an integer",
        ),
        (
            "[snapshotSlots]\nmin = true\nmax = 3\n" + _OPTION,
            "snapshotSlots.min: must be an integer",
        ),
        ("[snapshotSlots]\nmax = 3\n" + _OPTION, "snapshotSlots.min: is required"),
        ("[snapshotSlots]\nmin = 0\nmax = 3\n", "snapshotSlots.unitPrice: is required"),
        (
            "[snapshotSlots]\nmin = 0\nmax = 3\nmaximum = 4\n" + _OPTION,
            "snapshotSlots.maximum: unknown key",
        ),
        (
            '[snapshotSlots]\nmin = 0\nmax = 3\nunitPrice = { amount = "-1.00", currencyCode = "EUR", billingCycle = "monthly" }',
            "snapshotSlots.unitPrice.amount: must not be negative",
        ),
        (
            '[snapshotSlots]\nmin = 0\nmax = 3\nunitPrice = { amount = "1.005", currencyCode = "EUR", billingCycle = "monthly" }',
            "snapshotSlots.unitPrice.amount: has more than two decimals",
        ),
        (
            '[snapshotSlots]\nmin = 0\nmax = 3\nunitPrice = { amount = "one", currencyCode = "EUR", billingCycle = "monthly" }',
            "snapshotSlots.unitPrice.amount: 'one' is not a number",
        ),
        (
            '[snapshotSlots]\nmin = 0\nmax = 3\nunitPrice = { amount = "NaN", currencyCode = "EUR", billingCycle = "monthly" }',
            "snapshotSlots.unitPrice.amount: 'NaN' is not a finite number",
        ),
        (
            '[snapshotSlots]\nmin = 0\nmax = 3\nunitPrice = { amount = "1", currencyCode = "eur", billingCycle = "monthly" }',
            "snapshotSlots.unitPrice.currencyCode: must be an ISO 4217 code",
        ),
        (
            '[snapshotSlots]\nmin = 0\nmax = 3\nunitPrice = { amount = "1", currencyCode = "EUR", billingCycle = "weekly" }',
            "snapshotSlots.unitPrice.billingCycle: must be one of monthly",
        ),
        (
            '[snapshotSlots]\nmin = 0\nmax = 3\nunitPrice = { amount = "1", currency = "EUR", billingCycle = "monthly" }',
            "snapshotSlots.unitPrice.currency: unknown key",
        ),
        ("snapshotSlots = 3", "snapshotSlots: must be a table, not an integer"),
        ("defaultSlots = 3", "defaultSlots: unknown key"),
        ("defaultSnapshotSlots = -1", "defaultSnapshotSlots: must be at least 0"),
        (f'[[plans]]\nname = "A"\n{_PLAN_PRICE}', "plans[0].id: is required"),
        (f'[[plans]]\nid = "a b"\nname = "A"\n{_PLAN_PRICE}', "plans[0].id: must be 1-100"),
        (f'[[plans]]\nid = "a"\nname = ""\n{_PLAN_PRICE}', "plans[0].name: must be a non-empty"),
        ('[[plans]]\nid = "a"\nname = "A"', "plans[0].price: is required"),
        (
            f'[[plans]]\nid = "a"\nname = "A"\n{_PLAN_PRICE}\n[[plans]]\nid = "a"\nname = "B"\n{_PLAN_PRICE}',
            "plans[1].id: plan id 'a' is used twice",
        ),
        (
            f'[[plans]]\nid = "a"\nname = "A"\nsnapshotSlots = -2\n{_PLAN_PRICE}',
            "plans[0].snapshotSlots: must be at least 0",
        ),
        ('plans = "none"', "plans: must be an array of tables"),
    ],
)
def test_invalid_configuration_names_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CapacityConfigError) as caught:
        load_capacity_config(path)
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert message in str(caught.value), caught.value


def test_unreadable_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(CapacityConfigError, match=r"nope\.toml: cannot read the capacity file"):
        load_capacity_config(missing)
    with pytest.raises(CapacityConfigError, match=r"capacity\.toml: not valid TOML"):
        load_capacity_config(write(tmp_path, "[snapshotSlots\nmin = 1"))


# -- prices and request validation ---------------------------------------------------------------

OPTION = SlotOption(min=0, max=10, step=1, unit_price=Price(Decimal("1.50"), "EUR", "monthly"))


@pytest.mark.parametrize(
    ("current", "requested", "included", "expected"),
    [
        # expected: amount, recurringAmount and additionalRecurringAmount
        (3, 5, 0, ("3.00", "7.50", "3.00")),
        (5, 3, 0, ("0.00", "4.50", "-3.00")),
        (3, 3, 0, ("0.00", "4.50", "0.00")),
        (0, 10, 0, ("15.00", "15.00", "15.00")),
        # The plan includes 2 slots: only slots beyond them are billed.
        (1, 2, 2, ("0.00", "0.00", "0.00")),
        (1, 4, 2, ("3.00", "3.00", "3.00")),
        (4, 1, 2, ("0.00", "0.00", "-3.00")),
    ],
)
def test_price_change(
    current: int, requested: int, included: int, expected: tuple[str, str, str]
) -> None:
    change = price_change(OPTION, current, requested, included=included)
    assert (
        format_amount(change.amount),
        format_amount(change.recurring_amount),
        format_amount(change.additional_recurring_amount),
    ) == expected
    assert (change.currency_code, change.billing_cycle) == ("EUR", "monthly")


def test_amounts_always_have_two_decimals() -> None:
    assert format_amount(Decimal(3)) == "3.00"
    assert format_amount(Decimal("0.1")) == "0.10"
    assert format_amount(Decimal("-0.00")) == "0.00"
    assert format_amount(Decimal("-2.5")) == "-2.50"


def test_slot_counts_must_be_in_range_and_on_step() -> None:
    stepped = dataclasses.replace(OPTION, min=2, max=12, step=5)
    assert [n for n in range(15) if stepped.allows(n)] == [2, 7, 12]
    assert slot_request_errors(stepped, {"snapshotSlots": 7}) == []
    [off_step] = slot_request_errors(stepped, {"snapshotSlots": 8})
    assert (off_step.pointer, off_step.code) == ("/resources/snapshotSlots", "out_of_range")
    assert "in steps of 5" in off_step.detail
    [too_many] = slot_request_errors(OPTION, {"snapshotSlots": 11})
    assert too_many == FieldError(
        "/resources/snapshotSlots",
        "snapshotSlots must be between 0 and 10; got 11.",
        "out_of_range",
    )
    [negative] = slot_request_errors(OPTION, {"snapshotSlots": -1})
    assert negative.code == "out_of_range"
    [boolean] = slot_request_errors(OPTION, {"snapshotSlots": True})
    assert boolean.code == "invalid_type"


def test_unknown_and_missing_resources_are_field_errors() -> None:
    errors = slot_request_errors(OPTION, {"snapshotSlots": 11, "cpu/Cores": 2})
    assert [(e.pointer, e.code) for e in errors] == [
        ("/resources/cpu~1Cores", "unknown_field"),
        ("/resources/snapshotSlots", "out_of_range"),
    ]
    assert slot_request_errors(OPTION, {}) == [
        FieldError("/resources/snapshotSlots", "'snapshotSlots' is required.", "missing_required")
    ]
    assert [(e.pointer, e.code) for e in slot_request_errors(OPTION, {"snapShotSlots": 1})] == [
        ("/resources/snapShotSlots", "unknown_field"),
        ("/resources/snapshotSlots", "missing_required"),
    ]
    [not_sold] = slot_request_errors(None, {"snapshotSlots": 1})
    assert (not_sold.code, not_sold.detail) == (
        "unknown_field",
        "This server does not sell snapshot slots.",
    )


# -- upgrade options ---------------------------------------------------------------------------


async def test_upgrade_options_of_a_vps_on_no_plan(world: World) -> None:
    vps = await world.add_vps(slots=3)
    options = await service(world).upgrade_options(world.principal, vps.id)
    assert options.vps == vps
    assert options.plan is None
    assert options.included_slots == 0
    assert options.option == BUILTIN_CAPACITY.snapshot_slots
    assert options.plans == ()


async def test_upgrade_options_of_a_vps_on_a_configured_plan(world: World) -> None:
    config = load_capacity_config(EXAMPLE)
    vps = await add_vps_on_plan(world, "vps-m", slots=3)
    options = await service(world, config).upgrade_options(world.principal, vps.id)
    assert options.plan is not None and options.plan.id == "vps-m"
    assert options.included_slots == 3
    assert [p.id for p in options.plans] == ["vps-s", "vps-m"]
    # A plan the file does not list gets the default included slots.
    unknown = await add_vps_on_plan(world, "retired", slots=2)
    options = await service(world, config).upgrade_options(world.principal, unknown.id)
    assert (options.plan, options.included_slots) == (None, config.default_snapshot_slots)


async def test_another_accounts_vps_does_not_exist(world: World, stranger: Principal) -> None:
    vps = await world.add_vps(slots=3)
    capacity = service(world)
    with pytest.raises(VpsNotFound):
        await capacity.upgrade_options(stranger, vps.id)
    with pytest.raises(VpsNotFound):
        await capacity.configure(stranger, vps.id, {"snapshotSlots": 5})
    with pytest.raises(VpsNotFound):
        await capacity.configure(stranger, vps.id, {"snapshotSlots": 5}, dry_run=True)
    assert await slots_of(world, vps.id) == 3


# -- preview and commit ------------------------------------------------------------------------


async def test_preview_prices_the_change_and_changes_nothing(world: World) -> None:
    vps = await world.add_vps(slots=3)
    outcome = await service(world).configure(
        world.principal, vps.id, {"snapshotSlots": 5}, dry_run=True, billing_cycle="monthly"
    )
    assert outcome.dry_run is True
    assert outcome.snapshot_slots == 5
    assert outcome.can_commit.allowed is True
    assert outcome.change_id is None
    assert BUILTIN_CAPACITY.snapshot_slots is not None
    assert outcome.price_change == price_change(BUILTIN_CAPACITY.snapshot_slots, 3, 5)
    assert await slots_of(world, vps.id) == 3


async def test_commit_applies_the_new_slot_count_at_once(world: World) -> None:
    vps = await world.add_vps(slots=3)
    outcome = await service(world).configure(world.principal, vps.id, {"snapshotSlots": 6})
    assert outcome.dry_run is False
    assert outcome.change_id is not None and outcome.change_id.startswith("chg_")
    assert format_amount(outcome.price_change.amount) == "3.00"
    assert await slots_of(world, vps.id) == 6
    assert (await world.listing(vps.id)).usage.total == 6


async def test_shrinking_below_the_snapshots_in_use_is_refused_listing_them(world: World) -> None:
    vps = await world.add_vps(slots=3)
    await take_snapshots(world, vps.id, "one", "two", "three")
    capacity = service(world)

    preview = await capacity.configure(world.principal, vps.id, {"snapshotSlots": 1}, dry_run=True)
    assert preview.can_commit.allowed is False
    assert preview.can_commit.code == "snapshot_slots_in_use"
    assert "delete at least 2" in (preview.can_commit.reason or "")

    with pytest.raises(SnapshotSlotsInUse) as caught:
        await capacity.configure(world.principal, vps.id, {"snapshotSlots": 1})
    assert caught.value.extensions == {
        "totalSnapshots": 3,
        "usedSnapshots": 3,
        "requestedSnapshots": 1,
        "deleteAtLeast": 2,
        "snapshotsInUse": ["one", "two", "three"],
    }
    assert await slots_of(world, vps.id) == 3

    # Shrinking to exactly what is used is fine.
    await capacity.configure(world.principal, vps.id, {"snapshotSlots": 3})
    await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    # A deleting snapshot no longer holds its slot.
    await capacity.configure(world.principal, vps.id, {"snapshotSlots": 2})
    assert await slots_of(world, vps.id) == 2


async def test_invalid_requests_name_each_field(world: World) -> None:
    vps = await world.add_vps(slots=3)
    capacity = service(world)
    with pytest.raises(InvalidRequest) as caught:
        await capacity.configure(
            world.principal, vps.id, {"snapshotSlots": 11, "memoryGb": 2}, dry_run=True
        )
    assert [(e.pointer, e.code) for e in caught.value.errors] == [
        ("/resources/memoryGb", "unknown_field"),
        ("/resources/snapshotSlots", "out_of_range"),
    ]
    with pytest.raises(InvalidRequest) as caught:
        await capacity.configure(
            world.principal, vps.id, {"snapshotSlots": 4}, billing_cycle="monthly"
        )
    assert [(e.pointer, e.code) for e in caught.value.errors] == [("/billingCycle", "not_allowed")]
    with pytest.raises(InvalidRequest) as caught:
        await capacity.configure(
            world.principal, vps.id, {"snapshotSlots": 4}, dry_run=True, billing_cycle="annually"
        )
    assert [(e.pointer, e.code) for e in caught.value.errors] == [("/billingCycle", "out_of_range")]
    no_slots_for_sale = CapacityConfig(snapshot_slots=None)
    with pytest.raises(InvalidRequest) as caught:
        await service(world, no_slots_for_sale).configure(
            world.principal, vps.id, {"snapshotSlots": 4}
        )
    assert [(e.pointer, e.code) for e in caught.value.errors] == [
        ("/resources/snapshotSlots", "unknown_field")
    ]
    assert await slots_of(world, vps.id) == 3


async def test_a_vps_whose_service_is_not_active_cannot_change_slots(world: World) -> None:
    vps = await world.add_vps(slots=3, status=ServiceStatus.SUSPENDED)
    capacity = service(world)
    preview = await capacity.configure(world.principal, vps.id, {"snapshotSlots": 5}, dry_run=True)
    assert (preview.can_commit.allowed, preview.can_commit.code) == (False, "vps_not_ready")
    with pytest.raises(VpsNotReady):
        await capacity.configure(world.principal, vps.id, {"snapshotSlots": 5})
    assert await slots_of(world, vps.id) == 3


async def test_included_plan_slots_are_not_billed(world: World) -> None:
    config = load_capacity_config(EXAMPLE)
    vps = await add_vps_on_plan(world, "vps-m", slots=3)
    outcome = await service(world, config).configure(
        world.principal, vps.id, {"snapshotSlots": 5}, dry_run=True
    )
    assert format_amount(outcome.price_change.recurring_amount) == "3.00"  # 2 extra x 1.50
    assert format_amount(outcome.price_change.amount) == "3.00"


# -- the billing webhook against a real receiver ------------------------------------------------


async def test_commit_calls_the_webhook_signed_before_applying(
    world: World, receiver: WebhookReceiver
) -> None:
    vps = await world.add_vps(slots=3)
    seen_slots: list[int] = []

    async def check_not_applied_yet(_: Delivery) -> None:
        seen_slots.append(await slots_of(world, vps.id))

    receiver.before_answer = check_not_applied_yet
    outcome = await service(world, billing=webhook(receiver, world)).configure(
        world.principal, vps.id, {"snapshotSlots": 5}, cancel_existing_invoice=True
    )

    [delivery] = receiver.deliveries
    assert seen_slots == [3]  # billing answered before anything changed
    assert (delivery.method, delivery.path) == ("POST", "/billing/hook")
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.signature_is_valid()
    assert not delivery.signature_is_valid("another-secret")
    # Standard Webhooks headers; the signed timestamp is the wall clock's (receivers reject
    # one more than five minutes off theirs).
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 60
    assert delivery.headers["webhook-id"].startswith("msg_")
    assert not any(name.startswith("x-vpsnap-") for name in delivery.headers)
    tampered = Delivery(delivery.method, delivery.path, delivery.headers, delivery.body + b" ")
    assert not tampered.signature_is_valid()
    replayed_later = {**delivery.headers, "webhook-timestamp": str(int(time.time()) + 3600)}
    assert not Delivery(
        delivery.method, delivery.path, replayed_later, delivery.body
    ).signature_is_valid()
    assert delivery.json() == {
        "event": "vps.snapshot_slots.changed",
        "id": outcome.change_id,
        "vpsId": vps.id,
        "accountId": world.account.id,
        "from": 3,
        "to": 5,
        "priceChange": {
            "amount": "2.00",
            "recurringAmount": "5.00",
            "additionalRecurringAmount": "2.00",
            "currencyCode": "EUR",
            "billingCycle": "monthly",
        },
        "cancelExistingInvoice": True,
        "occurredAt": format_timestamp(world.clock.now()),
    }
    assert await slots_of(world, vps.id) == 5


async def test_previews_and_unchanged_commits_do_not_call_the_webhook(
    world: World, receiver: WebhookReceiver
) -> None:
    vps = await world.add_vps(slots=3)
    capacity = service(world, billing=webhook(receiver, world))
    await capacity.configure(world.principal, vps.id, {"snapshotSlots": 5}, dry_run=True)
    outcome = await capacity.configure(world.principal, vps.id, {"snapshotSlots": 3})
    assert outcome.change_id is None
    assert receiver.deliveries == []


@pytest.mark.parametrize("status", [500, 402, 302])
async def test_a_refusing_webhook_fails_the_commit_with_nothing_applied(
    world: World, receiver: WebhookReceiver, status: int
) -> None:
    vps = await world.add_vps(slots=3)
    receiver.status = status
    with pytest.raises(BillingUnavailable) as caught:
        await service(world, billing=webhook(receiver, world)).configure(
            world.principal, vps.id, {"snapshotSlots": 5}
        )
    assert caught.value.code == "billing_unavailable"
    assert f"HTTP {status}" in caught.value.detail
    assert len(receiver.deliveries) == 1
    assert await slots_of(world, vps.id) == 3


async def test_a_webhook_that_does_not_answer_in_time_fails_the_commit(
    world: World, receiver: WebhookReceiver
) -> None:
    vps = await world.add_vps(slots=3)
    receiver.hang = True
    started = asyncio.get_running_loop().time()
    with pytest.raises(BillingUnavailable, match=r"did not answer within 0\.3 s"):
        await service(world, billing=webhook(receiver, world, timeout=0.3)).configure(
            world.principal, vps.id, {"snapshotSlots": 5}
        )
    assert asyncio.get_running_loop().time() - started < 3
    assert len(receiver.deliveries) == 1
    assert await slots_of(world, vps.id) == 3


async def test_an_unreachable_webhook_fails_the_commit(world: World) -> None:
    vps = await world.add_vps(slots=3)
    # A port that was free a moment ago: nothing listens there.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    gateway = WebhookBillingGateway(f"http://127.0.0.1:{port}/hook", SECRET, timeout=2.0)
    with pytest.raises(BillingUnavailable, match="could not be reached"):
        await service(world, billing=gateway).configure(
            world.principal, vps.id, {"snapshotSlots": 5}
        )
    assert await slots_of(world, vps.id) == 3


async def test_snapshots_taken_while_billing_confirms_abort_the_commit(
    world: World, receiver: WebhookReceiver
) -> None:
    vps = await world.add_vps(slots=3)
    await take_snapshots(world, vps.id, "one")

    async def customer_takes_two_more(delivery: Delivery) -> None:
        if delivery.json()["event"] == "vps.snapshot_slots.changed":
            await take_snapshots(world, vps.id, "two", "three")

    receiver.before_answer = customer_takes_two_more
    with pytest.raises(SnapshotSlotsInUse) as caught:
        await service(world, billing=webhook(receiver, world)).configure(
            world.principal, vps.id, {"snapshotSlots": 2}
        )

    changed, aborted = receiver.deliveries
    change_id = changed.json()["id"]
    assert caught.value.extensions["changeId"] == change_id
    assert caught.value.extensions["snapshotsInUse"] == ["one", "two", "three"]
    # Billing accepted the change, so it is told (signed, same id) that it did not happen.
    assert aborted.signature_is_valid()
    assert aborted.json()["event"] == "vps.snapshot_slots.change_aborted"
    assert aborted.json()["id"] == change_id
    assert aborted.json()["reason"] == "snapshot_slots_in_use"
    assert (aborted.json()["from"], aborted.json()["to"]) == (3, 2)
    assert await slots_of(world, vps.id) == 3


async def test_concurrent_commits_apply_one_and_abort_the_other(
    world: World, receiver: WebhookReceiver
) -> None:
    vps = await world.add_vps(slots=3)
    both_asked = asyncio.Event()

    async def hold_until_both_asked(_: Delivery) -> None:
        # Both commits have read the old count before either applies.
        if len(receiver.deliveries) == 2:
            both_asked.set()
        await both_asked.wait()

    receiver.before_answer = hold_until_both_asked
    capacity = service(world, billing=webhook(receiver, world))
    results = await asyncio.gather(
        capacity.configure(world.principal, vps.id, {"snapshotSlots": 5}),
        capacity.configure(world.principal, vps.id, {"snapshotSlots": 7}),
        return_exceptions=True,
    )

    conflicts = [r for r in results if isinstance(r, Conflict)]
    assert len(conflicts) == 1, results
    assert conflicts[0].code == "conflict"
    applied = 5 if isinstance(results[1], Conflict) else 7
    assert await slots_of(world, vps.id) == applied
    assert sorted(receiver.events()) == [
        "vps.snapshot_slots.change_aborted",
        "vps.snapshot_slots.changed",
        "vps.snapshot_slots.changed",
    ]
    [aborted] = [d.json() for d in receiver.deliveries if d.json()["event"].endswith("aborted")]
    assert aborted["reason"] == "conflict"
    assert aborted["id"] == conflicts[0].extensions["changeId"]
    assert aborted["to"] != applied


async def test_an_undeliverable_abort_still_fails_the_commit_cleanly(
    world: World, receiver: WebhookReceiver
) -> None:
    vps = await world.add_vps(slots=3)

    async def other_change_then_break(delivery: Delivery) -> None:
        if delivery.json()["event"] == "vps.snapshot_slots.changed":
            async with world.store.transaction() as tx:
                await tx.set_snapshot_slots(vps.id, 4)
        else:
            receiver.status = 503  # the abort notice is refused

    receiver.before_answer = other_change_then_break
    with structlog.testing.capture_logs() as logs, pytest.raises(Conflict):
        await service(world, billing=webhook(receiver, world)).configure(
            world.principal, vps.id, {"snapshotSlots": 6}
        )
    assert len(receiver.deliveries) == 2
    # The operator must reconcile by hand: the log says which change billing still believes in.
    [lost] = [e for e in logs if e["event"] == "billing_abort_not_delivered"]
    assert lost["log_level"] == "error"
    assert lost["change_id"] == receiver.deliveries[0].json()["id"]
    assert await slots_of(world, vps.id) == 4


# -- gateway settings ----------------------------------------------------------------------------


def test_gateway_from_settings() -> None:
    assert isinstance(billing_gateway(Settings()), NoBillingGateway)
    gateway = billing_gateway(
        Settings(
            billing_webhook_url="https://billing.example/hook",
            billing_webhook_secret="s",
            billing_webhook_timeout_seconds=2.5,
        )
    )
    assert isinstance(gateway, WebhookBillingGateway)
    assert (gateway.url, gateway.timeout) == ("https://billing.example/hook", 2.5)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"billing_webhook_url": "https://billing.example/hook"}, "SECRET is required"),
        (
            {"billing_webhook_url": "ftp://billing.example/", "billing_webhook_secret": "s"},
            "http://",
        ),
        (
            {
                "billing_webhook_url": "https://billing.example/hook",
                "billing_webhook_secret": "s",
                "billing_webhook_timeout_seconds": 0,
            },
            "must be positive",
        ),
    ],
)
def test_unusable_gateway_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(BillingConfigError, match=message):
        billing_gateway(Settings(**values))


async def test_the_slots_in_use_reason_reads_right_for_one_and_many(world: World) -> None:
    vps = await world.add_vps(name="db", slots=2)
    assert slots_in_use_reason(vps, ["a"], 0) == (
        "db has 1 snapshot holding slots (a); delete it before going down to 0 slots."
    )
    assert slots_in_use_reason(vps, ["a", "b", "c"], 1) == (
        "db has 3 snapshots holding slots (a, b, c); delete at least 2 of them before going "
        "down to 1 slot."
    )
