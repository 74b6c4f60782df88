"""Migrations build exactly the schema of `store/tables.py`, up and down, on both databases."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
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


def test_the_head_read_from_the_files_is_alembics() -> None:
    assert migrate.known_head() == migrate.head_revision()


async def test_an_up_to_date_database_is_told_apart_without_alembic(
    empty_engine: AsyncEngine, tmp_path: Path
) -> None:
    assert not await migrate.up_to_date(empty_engine)  # never migrated: Alembic decides
    await migrate.upgrade(empty_engine)
    assert await migrate.up_to_date(empty_engine)
    await migrate.downgrade(empty_engine, "0013")
    assert not await migrate.up_to_date(empty_engine)
    await migrate.upgrade(empty_engine)
    await migrate.require_current(empty_engine)
    if empty_engine.url.get_backend_name() != "sqlite":
        return
    # What `vpsnap serve` does at every start on a current database loads no Alembic (~0.3 s
    # of CPU): a fresh interpreter, as the server is.
    probe = (
        "import asyncio, sys\n"
        "from vpsnap.store import migrate\n"
        "from vpsnap.store.sql import create_engine\n"
        "async def main():\n"
        f"    engine = create_engine({str(empty_engine.url)!r})\n"
        "    await migrate.upgrade(engine)\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert out.decode().strip() == "[]", out


def test_the_postgresql_dialect_stays_off_sqlite_and_the_partial_index_keeps_its_where(
    tmp_path: Path,
) -> None:
    # store/tables.py gives the partial index its PostgreSQL WHERE only when a PostgreSQL
    # engine is made: declaring it loads SQLAlchemy's PostgreSQL dialect (~25 ms at start-up).
    probe = (
        "import sys\n"
        "from sqlalchemy.schema import CreateIndex\n"
        "from vpsnap.store import tables\n"
        "from vpsnap.store.sql import create_engine\n"
        "create_engine('sqlite+aiosqlite:///' + sys.argv[1])\n"
        "print('sqlalchemy.dialects.postgresql' in sys.modules)\n"
        "engine = create_engine(sys.argv[2])\n"
        "index = next(i for i in tables.jobs.indexes if i.name == 'ix_jobs_unfinished_vps')\n"
        "print(str(CreateIndex(index).compile(dialect=engine.sync_engine.dialect)).strip())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "p.db"), PG_URL],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    sqlite_loaded_it, ddl = done.stdout.strip().splitlines()
    assert sqlite_loaded_it == "False"
    assert ddl == (
        "CREATE INDEX ix_jobs_unfinished_vps ON jobs (vps_id) "
        "WHERE status IN ('queued', 'in_progress', 'pending')"
    )
