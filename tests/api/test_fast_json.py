"""The list answers serialised by hand (``api.presenters.json_response``, docs/performance.md
"Reads") must be, byte for byte, what FastAPI would send for their declared response models."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter

from tests.conftest import Api
from vpsnap.api.presenters import (
    gate_out,
    json_response,
    snapshot_list_json,
    vps_json,
    vps_page_json,
)
from vpsnap.api.schemas import (
    BillingOut,
    GateOut,
    LimitsOut,
    OperatingSystemOut,
    ResourcesOut,
    SnapshotActionsOut,
    SnapshotItemActionsOut,
    SnapshotListOut,
    SnapshotOut,
    VpsOut,
    VpsPageOut,
)
from vpsnap.domain.clock import format_timestamp
from vpsnap.domain.model import (
    Billing,
    Consistency,
    OperatingSystem,
    PowerState,
    Resources,
    ServiceStatus,
    Snapshot,
    SnapshotOrigin,
    SnapshotStatus,
    Vps,
)
from vpsnap.domain.rules import ALLOWED, Gate, SlotUsage
from vpsnap.services.inventory import VpsPage, VpsView
from vpsnap.services.snapshots import SnapshotListing

NOW = datetime(2026, 4, 27, 12, 34, 56, 987654, tzinfo=UTC)
REFUSED = Gate.refused("The node « n1 » is offline ☃.", "node_unavailable")


# -- the reference: the response models built field by field (what the routes returned before) --


def _vps_model(view: VpsView) -> VpsOut:
    vps = view.vps
    os_, billing = vps.operating_system, vps.billing
    return VpsOut(
        id=vps.id,
        name=vps.name,
        primary_ip=vps.primary_ip,
        service_status=vps.service_status.value,
        power_state=view.power_state.value,
        operating_system=OperatingSystemOut(
            display_name=os_.display_name,
            family=os_.family,
            version=os_.version,
            variant=os_.variant,
        )
        if os_
        else None,
        resources=ResourcesOut(
            cpu_cores=vps.resources.cpu_cores,
            memory_gb=vps.resources.memory_gb,
            storage_gb=vps.resources.storage_gb,
        ),
        billing=BillingOut(
            amount=billing.amount,
            currency_code=billing.currency_code,
            billing_cycle=billing.billing_cycle,
            is_payg=billing.is_payg,
        )
        if billing
        else None,
        node=vps.node,
        created_at=vps.created_at,
    )


def _gate_model(gate: Gate) -> GateOut:
    return GateOut(allowed=gate.allowed, reason=gate.reason, code=gate.code)


def _listing_model(listing: SnapshotListing) -> SnapshotListOut:
    def one(s: Snapshot) -> SnapshotOut:
        gate = listing.restore_gates.get(s.name)
        return SnapshotOut(
            display_id=s.name,
            name=s.name,
            description=s.description,
            created_at=s.created_at,
            expires_at=s.expires_at,
            includes_memory_state=s.includes_memory_state,
            parent_name=s.parent_name,
            status=s.status.value,
            origin=s.origin.value,
            consistency=s.consistency.value,
            actions=SnapshotItemActionsOut(can_restore=_gate_model(gate)) if gate else None,
            consistency_reason=s.consistency_reason,
        )

    return SnapshotListOut(
        data=[one(s) for s in listing.snapshots],
        limits=LimitsOut(
            total_snapshots=listing.usage.total,
            used_snapshots=listing.usage.used,
            remaining_snapshots=listing.usage.remaining,
        ),
        available=listing.available,
        reason=listing.reason,
        actions=SnapshotActionsOut(
            can_create=_gate_model(listing.can_create),
            can_restore=_gate_model(listing.can_restore),
            can_create_with_memory=_gate_model(listing.can_create_with_memory),
        ),
    )


def _fastapi_bytes(model_type: type, model: object) -> bytes:
    """What FastAPI sends for ``model`` with ``response_model=model_type``."""
    return TypeAdapter(model_type).dump_json(model, by_alias=True)


# -- representative objects ---------------------------------------------------------------------


def _views() -> list[VpsView]:
    base = Vps(
        id="vps_01",
        account_id="acc_1",
        name="web",
        node="n1",
        disks=("/d/web.qcow2",),
        snapshot_slots=3,
        service_status=ServiceStatus.ACTIVE,
        created_at=NOW,
    )
    rich = Vps(
        id="vps_02",
        account_id="acc_1",
        name='ünïcødé ☃ 雪 "quoted" \\ back\nslash',
        node="n2",
        disks=(),
        snapshot_slots=0,
        service_status=ServiceStatus.FRAUD,
        created_at=datetime(2025, 1, 2, 3, 4, 5, 999999, tzinfo=UTC),
        primary_ip="2001:db8::1",
        operating_system=OperatingSystem("Debian 12 « bookworm »", "debian", None, "minimal"),
        resources=Resources(cpu_cores=64, memory_gb=2, storage_gb=1234.75),  # an int stored
        billing=Billing(amount="12.50", currency_code="SEK", billing_cycle="monthly", is_payg=True),
    )
    states = list(PowerState)
    statuses = list(ServiceStatus)
    views = [VpsView(base, state) for state in states]
    views += [
        VpsView(Vps(**{**_fields(base), "service_status": status}), PowerState.UNKNOWN)
        for status in statuses
    ]
    return [*views, VpsView(rich, PowerState.RUNNING)]


def _fields(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}  # type: ignore[attr-defined]


def _listing(*, gates: bool, available: bool = True) -> SnapshotListing:
    vps = _views()[-1].vps
    snaps = [
        Snapshot(
            vps_id=vps.id,
            name=f"s-{i}",
            description=None if i % 2 else f"avant la mise à jour ☃ #{i}",
            status=status,
            origin=origin,
            consistency=consistency,
            includes_memory_state=consistency is Consistency.MEMORY,
            parent_name=f"s-{i - 1}" if i else None,
            created_at=NOW + timedelta(minutes=i, microseconds=i),
            expires_at=NOW + timedelta(hours=24),
            consistency_reason=None if i % 3 else "no guest agent answered",
        )
        for i, (status, origin, consistency) in enumerate(
            itertools.product(SnapshotStatus, SnapshotOrigin, Consistency)
        )
    ]
    restore = (
        {s.name: (ALLOWED if i % 2 else REFUSED) for i, s in enumerate(snaps)} if gates else {}
    )
    return SnapshotListing(
        vps=vps,
        snapshots=snaps,
        usage=SlotUsage(total=3 if available else 0, used=len(snaps)),
        available=available,
        reason=None if available else "Snapshots are not included in your plan.",
        can_create=REFUSED,
        can_restore=ALLOWED,
        can_create_with_memory=Gate.refused("Writable device vdb is not covered.", "x"),
        restore_gates=restore,
    )


# -- the checks ---------------------------------------------------------------------------------


def test_one_vps_is_what_its_model_serialises() -> None:
    for view in _views():
        got = json_response(vps_json(view)).body
        assert got == _fastapi_bytes(VpsOut, _vps_model(view)), view


@pytest.mark.parametrize("cursor", [None, "Y3Vyc29y"])
def test_a_vps_page_is_what_its_model_serialises(cursor: str | None) -> None:
    page = VpsPage(items=_views(), next_cursor=cursor)
    model = VpsPageOut(
        data=[_vps_model(v) for v in page.items], has_more=page.has_more, next_cursor=cursor
    )
    assert json_response(vps_page_json(page)).body == _fastapi_bytes(VpsPageOut, model)
    empty = VpsPage(items=[], next_cursor=None)
    assert json_response(vps_page_json(empty)).body == _fastapi_bytes(
        VpsPageOut, VpsPageOut(data=[], has_more=False, next_cursor=None)
    )


@pytest.mark.parametrize(("gates", "available"), [(True, True), (False, True), (False, False)])
def test_a_snapshot_listing_is_what_its_model_serialises(gates: bool, available: bool) -> None:
    listing = _listing(gates=gates, available=available)
    got = json_response(snapshot_list_json(listing)).body
    assert got == _fastapi_bytes(SnapshotListOut, _listing_model(listing))


def test_gate_out_is_the_gate_json() -> None:
    for gate in (ALLOWED, REFUSED):
        assert gate_out(gate) == _gate_model(gate)


def test_a_non_finite_number_is_refused_not_written() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        json_response({"x": float("nan")})


async def test_the_routes_answer_json_with_the_models_shape(api: Api) -> None:
    listed = await api.client.get("/api/v2/vps?limit=2", headers=api.auth())
    assert listed.status_code == 200
    assert listed.headers["content-type"] == "application/json"
    assert int(listed.headers["content-length"]) == len(listed.content)
    assert "x-request-id" in listed.headers
    assert "x-ratelimit-limit" in {k.lower() for k in listed.headers}
    page = VpsPageOut.model_validate_json(listed.content)
    assert listed.content == _fastapi_bytes(VpsPageOut, page)
    assert page.has_more is True

    vps_id = page.data[0].id
    one = await api.client.get(f"/api/v2/vps/{vps_id}", headers=api.auth())
    assert one.headers["content-type"] == "application/json"
    assert one.content == _fastapi_bytes(VpsOut, VpsOut.model_validate_json(one.content))
    assert VpsOut.model_validate_json(one.content) == page.data[0]

    snaps = await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())
    assert snaps.status_code == 200
    assert snaps.headers["content-type"] == "application/json"
    listing = SnapshotListOut.model_validate_json(snaps.content)
    assert snaps.content == _fastapi_bytes(SnapshotListOut, listing)


@pytest.mark.parametrize(
    "moment",
    [
        NOW,
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, 0, 1000, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
        datetime(9999, 12, 31, 23, 59, 59, 999, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 0, 999, tzinfo=timezone(timedelta(hours=14))),
    ],
)
def test_the_contract_timestamp_form(moment: datetime) -> None:
    # The form as it was written with strftime: UTC, milliseconds truncated, "Z".
    utc = moment.astimezone(UTC)
    want = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    assert format_timestamp(moment) == want
    assert len(want) == 24


async def test_the_list_routes_still_authenticate_before_validating(api: Api) -> None:
    # require() calls authenticated instead of declaring it: FastAPI still solves it before it
    # validates the query, so a bad parameter without a credential is a 401, not a 400.
    bad = "/api/v2/vps?limit=0"
    assert (await api.client.get(bad)).status_code == 401
    assert (await api.client.get(bad, headers={"Authorization": "Bearer nope"})).status_code == 401
    refused = await api.client.get(bad, headers=api.auth("readonly"))
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "invalid_request"


async def test_the_snapshot_listing_keeps_the_ownership_rule(api: Api) -> None:
    mine = api.vps_ids["demo-web"]
    ok = await api.client.get(f"/api/v2/vps/{mine}/snapshots", headers=api.auth("readonly"))
    assert ok.status_code == 200
    for token, vps_id in (
        ("other", mine),
        ("full", "vps_not-a-valid-id"),
        ("full", "vps_" + "0" * 26),
    ):
        answer = await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth(token))
        assert answer.status_code == 404, (token, vps_id)
        assert answer.json()["code"] == "vps_not_found"
