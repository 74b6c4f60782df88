"""Migration 0005 (``vps_disks``): existing VPSes' disks are indexed on upgrade, and a database
in which a disk file is already registered twice is not upgraded silently (issue 9, kind 4)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import PG_URL
from vpsnap.domain.disks import DiskFile
from vpsnap.store import migrate
from vpsnap.store.sql import create_engine
from vpsnap.store.tables import accounts, vps, vps_disks

REVISION = "0005"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        sqlite = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        yield sqlite
        await sqlite.dispose()
        return
    schema = f"vpsnap_mig_{secrets.token_hex(4)}"
    admin = create_async_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    pg = create_engine(PG_URL, schema=schema)
    yield pg
    await pg.dispose()
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


async def before_this_migration(engine: AsyncEngine) -> None:
    previous = ScriptDirectory.from_config(migrate.alembic_config()).get_revision(REVISION)
    assert previous is not None
    down = previous.down_revision
    assert isinstance(down, str)
    await migrate.upgrade(engine, down)


async def add_rows(engine: AsyncEngine, *registrations: tuple[str, str, list[str]]) -> None:
    """(vps name, node, disks) of VPSes registered before the migration."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(accounts.insert().values(id="acct_1", name="acme", created_at=now))
        for index, (name, node, disks) in enumerate(registrations):
            await conn.execute(
                vps.insert().values(
                    id=f"vps_{index}",
                    account_id="acct_1",
                    name=name,
                    name_key=name,
                    node=node,
                    disks=disks,
                    snapshot_slots=1,
                    service_status="active",
                    resources={"cpu_cores": 1, "memory_gb": 1.0, "storage_gb": 0.0},
                    created_at=now,
                )
            )


async def test_existing_disks_are_indexed(engine: AsyncEngine) -> None:
    await before_this_migration(engine)
    await add_rows(
        engine,
        ("web", "local", ["/srv/web-0.qcow2", "/srv/web-1.qcow2"]),
        ("db", "local", ["/srv/db.qcow2"]),
        ("far", "node-2", ["/srv/db.qcow2"]),  # another node's file of the same name
    )
    await migrate.upgrade(engine)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(vps_disks).order_by(vps_disks.c.vps_id))).all()
    assert [(r.vps_id, r.position, r.node, r.path, r.file_id) for r in rows] == [
        ("vps_0", 0, "local", "/srv/web-0.qcow2", None),
        ("vps_0", 1, "local", "/srv/web-1.qcow2", None),
        ("vps_1", 0, "local", "/srv/db.qcow2", None),
        ("vps_2", 0, "node-2", "/srv/db.qcow2", None),
    ]
    assert rows[0].path_key == DiskFile("/srv/web-0.qcow2").path_key


@pytest.mark.parametrize(
    "registrations",
    [
        [("web", "local", ["/srv/x.qcow2"]), ("copy", "local", ["/srv/x.qcow2"])],
        [("web", "local", ["/srv/x.qcow2", "/srv/x.qcow2"])],
    ],
    ids=["two-vpses", "one-vps-twice"],
)
async def test_a_disk_registered_twice_stops_the_upgrade_naming_it(
    engine: AsyncEngine, registrations: list[tuple[str, str, list[str]]]
) -> None:
    await before_this_migration(engine)
    await add_rows(engine, *registrations)
    with pytest.raises(RuntimeError) as stopped:
        await migrate.upgrade(engine)
    message = str(stopped.value)
    assert "/srv/x.qcow2" in message
    assert "VPS web (vps_0, account acme)" in message
    # Nothing half-done: the upgrade can run again once the operator has fixed the rows.
    async with engine.begin() as conn:
        await conn.execute(vps.update().values(disks=["/srv/own.qcow2"]).where(vps.c.id != "vps_0"))
        await conn.execute(vps.update().values(disks=["/srv/x.qcow2"]).where(vps.c.id == "vps_0"))
    await migrate.upgrade(engine)
    async with engine.connect() as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(vps_disks))
        ).scalar_one() == len(registrations)
