"""Migrations build exactly the schema of `store/tables.py`, up and down, on both databases."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import PG_URL
from vpsnap.store import migrate
from vpsnap.store.sql import create_engine
from vpsnap.store.tables import metadata


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        yield engine
        await engine.dispose()
        return
    schema = f"vpsnap_mig_{secrets.token_hex(4)}"
    admin = create_async_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(PG_URL, schema=schema)
    yield engine
    await engine.dispose()
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_upgrade_matches_the_tables_and_downgrade_removes_them(
    empty_engine: AsyncEngine,
) -> None:
    await migrate.upgrade(empty_engine)
    assert await table_names(empty_engine) >= {t.name for t in metadata.sorted_tables}

    def differences(conn: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with empty_engine.connect() as conn:
        assert await conn.run_sync(differences) == []

    await migrate.downgrade(empty_engine)
    assert not ({t.name for t in metadata.sorted_tables} & await table_names(empty_engine))
    await migrate.upgrade(empty_engine)  # and back up again
    await migrate.upgrade(empty_engine)  # a second upgrade is a no-op
    assert await table_names(empty_engine) >= {t.name for t in metadata.sorted_tables}
