"""The list reads on the DB-API cursor (``store.raw.RawSelect``, docs/performance.md "Reads"):
their rows, decoded by vpsnap, must be what SQLAlchemy's result gives for the same rows, and
the domain objects what was stored, on both databases."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from vpsnap.domain.model import (
    Account,
    Billing,
    Consistency,
    LaunchSpec,
    OperatingSystem,
    PowerState,
    Resources,
    ServiceStatus,
    Snapshot,
    SnapshotOrigin,
    SnapshotStatus,
    VmConfig,
    VmFacts,
    Vps,
)
from vpsnap.domain.nodes import Node
from vpsnap.domain.ports import VpsFilter
from vpsnap.domain.webhooks import WebhookEndpoint
from vpsnap.store import raw, sql
from vpsnap.store.sql import SqlStore
from vpsnap.store.tables import nodes, snapshots, vps, webhook_endpoints

# Microseconds on purpose: both decoders must keep them.
NOW = datetime(2026, 4, 27, 12, 34, 56, 123456, tzinfo=UTC)


def _vpses() -> list[Vps]:
    plain = Vps(
        id="vps_01",
        account_id="acc_1",
        name="plain",
        node="n1",
        disks=("/d/plain.qcow2",),
        snapshot_slots=3,
        service_status=ServiceStatus.ACTIVE,
        created_at=NOW,
    )
    rich = Vps(
        id="vps_02",
        account_id="acc_1",
        name="ünïcødé ☃ 雪",
        node="n2",
        disks=("/d/a.qcow2", "/d/b ☃.qcow2"),
        snapshot_slots=0,
        service_status=ServiceStatus.SUSPENDED,
        created_at=NOW - timedelta(days=400, microseconds=1),
        primary_ip="2001:db8::1",
        operating_system=OperatingSystem("Debian 12 « bookworm »", "debian", None, "minimal"),
        resources=Resources(cpu_cores=16, memory_gb=0.5, storage_gb=1234.75),
        billing=Billing(amount="12.50", currency_code="SEK", billing_cycle="monthly"),
        current_snapshot="s-1",
        plan="plan-x",
        machine=LaunchSpec(memory_mib=2048, cpus=2, extra_args=("-nographic", "-smp", "2")),
    )
    other_account = Vps(
        id="vps_03",
        account_id="acc_2",
        name="elsewhere",
        node="n1",
        disks=("/d/else.qcow2",),
        snapshot_slots=5,
        service_status=ServiceStatus.TERMINATED,
        created_at=NOW.replace(microsecond=0),
        primary_ip="10.0.0.3",
        billing=Billing(amount="0", currency_code="EUR", billing_cycle="hourly", is_payg=True),
    )
    return [plain, rich, other_account]


def _snapshots() -> list[Snapshot]:
    found = []
    states = itertools.product(SnapshotStatus, SnapshotOrigin, Consistency)
    for i, (status, origin, consistency) in enumerate(states):
        memory = consistency is Consistency.MEMORY
        found.append(
            Snapshot(
                vps_id="vps_02",
                name=f"s-{i}",
                description=None if i % 3 else f"before ünïcødé upgrade #{i} ☃",
                status=status,
                origin=origin,
                consistency=consistency,
                includes_memory_state=memory,
                parent_name=f"s-{i - 1}" if i else None,
                created_at=NOW + timedelta(minutes=i),
                expires_at=NOW + timedelta(hours=24, minutes=i),
                disk_created_at=NOW + timedelta(minutes=i, seconds=1) if i % 2 else None,
                missing_since=NOW + timedelta(hours=1) if i % 5 == 0 else None,
                vm_config=VmConfig(memory_bytes=2**31, machine_type="pc-q35-8.2")
                if memory
                else None,
                consistency_reason=None if memory else "no guest agent answered",
            )
        )
    return found


async def _fill(store: SqlStore) -> tuple[list[Vps], list[Snapshot]]:
    vpses, snaps = _vpses(), _snapshots()
    async with store.transaction() as tx:
        await tx.add_account(Account(id="acc_1", name="one", created_at=NOW))
        await tx.add_account(Account(id="acc_2", name="two", created_at=NOW))
        for item in vpses:
            await tx.add_vps(item)
        for snapshot in snaps:
            await tx.add_snapshot(snapshot)
        # What the node's agent publishes (not written by add_vps).
        await tx.record_power_state("vps_02", PowerState.RUNNING, NOW)
        facts = VmFacts(
            config=VmConfig(memory_bytes=2**31, machine_type="pc-q35-8.2"),
            uncovered_devices=("vdb",),
        )
        await tx.record_vm_facts("vps_02", facts)
    stored = [
        vpses[0],
        Vps(
            **{
                **{f: getattr(vpses[1], f) for f in vpses[1].__dataclass_fields__},
                "power_state": PowerState.RUNNING,
                "power_state_at": NOW,
                "vm_facts": facts,
            }
        ),
        vpses[2],
    ]
    return stored, snaps


@pytest.mark.parametrize("table", [vps, snapshots], ids=["vps", "snapshots"])
async def test_raw_rows_decode_as_sqlalchemy_does(store: SqlStore, table: sa.Table) -> None:
    await _fill(store)
    order = list(table.primary_key.columns)
    query = sa.select(table).order_by(*order)
    async with store.transaction(read_only=True, small=True) as tx:
        by_sqlalchemy = [list(row) for row in await tx.conn.execute(query)]
        by_driver = await tx._raw_all(raw.RawSelect(query, table), {})
    assert len(by_driver) == len(by_sqlalchemy) > 2
    assert by_driver == by_sqlalchemy
    for row in by_driver:  # the same types, not just equal values (True == 1)
        assert [type(v) for v in row] == [type(v) for v in by_sqlalchemy[by_driver.index(row)]]


async def test_node_and_endpoint_reads_decode_as_sqlalchemy_does(store: SqlStore) -> None:
    # The reads of every job's end: its node, and its account's webhook endpoints.
    stored_nodes = [
        Node("hv-1", "1.0", NOW, NOW + timedelta(seconds=5), drained=True, agent="h:1"),
        Node("hv-2", "1.1", NOW, NOW),
    ]
    await _fill(store)
    async with store.transaction() as tx:
        account = (await tx.list_vps(None, VpsFilter(), None, 1))[0].account_id
        for node in stored_nodes:
            await tx.heartbeat(node)
            await tx.set_node_drained(node.name, node.drained)
        endpoints = [
            WebhookEndpoint(
                id=f"we_{i}",
                account_id=account,
                url=f"https://example.com/{i}",
                event_types=frozenset({"snapshot.created", "job.failed"}),
                secret="whsec_x",
                enabled=i == 0,
                created_at=NOW,
                description="d" if i else None,
                last_failure_at=NOW if i else None,
            )
            for i in range(2)
        ]
        for endpoint in endpoints:
            await tx.add_webhook_endpoint(endpoint)
    async with store.transaction(read_only=True) as tx:
        for table in (nodes, webhook_endpoints):
            query = sa.select(table).order_by(*table.primary_key.columns)
            by_sqlalchemy = [dict(row) for row in (await tx.conn.execute(query)).mappings()]
            by_driver = await tx._raw_records(raw.RawSelect(query, table), {})
            assert by_driver == by_sqlalchemy
            assert [{k: type(v) for k, v in r.items()} for r in by_driver] == [
                {k: type(v) for k, v in r.items()} for r in by_sqlalchemy
            ]
        assert [await tx.get_node(n.name) for n in stored_nodes] == stored_nodes
        assert await tx.list_webhook_endpoints(account) == endpoints


async def test_vps_reads_give_what_was_stored(store: SqlStore) -> None:
    stored, _ = await _fill(store)
    async with store.transaction(read_only=True, small=True) as tx:
        for item in stored:
            assert await tx.get_vps(item.id) == item
            # The SQLAlchemy-decoded path, for the same row.
            assert await tx.find_vps_by_name(item.account_id, item.name) == item
        assert await tx.get_vps("vps_missing") is None
        assert await tx.list_vps("acc_1", VpsFilter(), None, 10) == stored[:2]
        assert await tx.list_vps(None, VpsFilter(), None, 10) == stored
    async with store.transaction() as tx:
        assert await tx.get_vps("vps_02", lock=True) == stored[1]


async def test_every_filter_combination_of_the_vps_list(store: SqlStore) -> None:
    stored, _ = await _fill(store)
    values = {
        "account_id": [None, "acc_1"],
        "name": [None, "ÜNÏCØDÉ ☃ 雪", "plain"],  # names match case-insensitively
        "primary_ip": [None, "2001:db8::1"],
        "node": [None, "n1"],
        "after_id": [None, "vps_01"],
        "limit": [1, 2, 100],
    }
    async with store.transaction(read_only=True, small=True) as tx:
        for account, name, ip, node, after, limit in itertools.product(*values.values()):
            got = await tx.list_vps(account, VpsFilter(name, ip, node), after, limit)
            want = [
                v
                for v in stored
                if (account is None or v.account_id == account)
                and (name is None or v.name.lower() == name.lower())
                and (ip is None or v.primary_ip == ip)
                and (node is None or v.node == node)
                and (after is None or v.id > after)
            ][:limit]
            assert got == want, (account, name, ip, node, after, limit)


async def test_snapshot_reads_give_what_was_stored(store: SqlStore) -> None:
    _, snaps = await _fill(store)
    async with store.transaction(read_only=True, small=True) as tx:
        listed = await tx.list_snapshots("vps_02")
        assert listed == snaps  # oldest first
        for snapshot in snaps:  # the SQLAlchemy-decoded path, for the same rows
            assert await tx.get_snapshot("vps_02", snapshot.name) == snapshot
        assert (await tx.list_snapshots_of(["vps_02", "vps_01"])) == {
            "vps_02": snaps,
            "vps_01": [],
        }
        assert await tx.list_snapshots("vps_01") == []


def test_a_column_type_the_raw_decoder_does_not_know_is_refused() -> None:
    table = sa.Table("odd", sa.MetaData(), sa.Column("x", sa.Numeric()))
    with pytest.raises(TypeError, match="does not decode"):
        raw.RawSelect(sa.select(table), table)


@pytest.mark.parametrize(
    "text",
    ['{"a": [1, 2.5, null, "☃"]}', "[]", '"text"', "3", "true", "null", ' {"a": 1} ', "[1]\n"],
)
def test_json_text_decodes_as_json_loads(text: str) -> None:
    assert raw._text_json(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", "[1] [2]", "nul", "{'a': 1}"])
def test_json_text_that_is_not_json_raises_as_json_loads(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        raw._text_json(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-04-27 12:34:56.000123",
        "2026-04-27 12:34:56",
        "2026-04-27T00:00:00.5",
        "2026-04-27",
        "2026-04-27 12",
        "2026-04-27 12:34",
        "20260427T123456",
        "2026-04-27 12:34:56+02:00",
        "2026-04-27 12:34:56Z",
        "2026-04-27 12:34:56.000123-00:00",
    ],
)
def test_timestamp_text_decodes_as_parse_then_replace(text: str) -> None:
    expected = datetime.fromisoformat(text).replace(tzinfo=UTC)
    found = raw._text_timestamp(text)
    assert found == expected
    assert found is not None
    assert found.tzinfo is UTC
    assert found.isoformat() == expected.isoformat()


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01 00:00:00"])
def test_timestamp_text_that_is_not_a_timestamp_raises_as_before(text: str) -> None:
    with pytest.raises(ValueError, match=r"Invalid isoformat string|month must be"):
        raw._text_timestamp(text)


@pytest.mark.parametrize(
    "enum", [ServiceStatus, PowerState, SnapshotStatus, SnapshotOrigin, Consistency]
)
def test_enum_members_by_lookup_are_the_enums_own(enum: type[ServiceStatus]) -> None:
    member = sql._members(enum)
    for expected in enum:
        assert member(expected.value) is expected
        assert member(expected) is expected
    for odd in ("no-such-value", None, ["active"]):
        with pytest.raises(ValueError, match="is not a valid"):
            member(odd)


async def test_a_vps_with_its_snapshots_in_one_read(store: SqlStore) -> None:
    stored, snaps = await _fill(store)
    async with store.transaction(read_only=True, small=True) as tx:
        assert await tx.get_vps_with_snapshots("vps_02") == (stored[1], snaps)
        assert await tx.get_vps_with_snapshots("vps_01") == (stored[0], [])  # none: one row
        assert await tx.get_vps_with_snapshots("vps_missing") is None
