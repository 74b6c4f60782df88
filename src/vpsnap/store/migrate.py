"""Bring a database to the newest schema with Alembic, from inside the running event loop."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    def run(connection: sa.Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    def run(connection: sa.Connection) -> None:
        command.downgrade(alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


def head_revision() -> str:
    """The newest revision this vpsnap knows."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - admin-time import

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.migration import MigrationContext  # noqa: PLC0415 - admin-time import

    def read(connection: sa.Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


class SchemaMismatch(Exception):
    """The database schema is not the one this vpsnap was built for."""


async def require_current(engine: AsyncEngine) -> None:
    """Raise ``SchemaMismatch`` (saying what to do) unless the database is at the head.

    Scale-out processes never migrate on their own: several start at once, and an older
    process must not run on a newer schema (or the reverse). ``vpsnap migrate`` applies them,
    once, explicitly.
    """
    current, head = await current_revision(engine), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaMismatch(
            f"the database has no vpsnap schema yet; run `vpsnap migrate` first (to {head})"
        )
    known = set(_revisions())
    if current not in known:
        raise SchemaMismatch(
            f"the database schema ({current}) is newer than this vpsnap knows ({head}); "
            "upgrade vpsnap on this host"
        )
    raise SchemaMismatch(
        f"the database schema ({current}) is older than this vpsnap ({head}); run `vpsnap migrate`"
    )


def _revisions() -> list[str]:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - admin-time import

    return [s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
