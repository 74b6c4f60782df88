"""Bring a database to the newest schema with Alembic, from inside the running event loop.

Alembic (with Mako and every dialect's DDL support it loads) costs ~0.3 s of CPU to import,
more than a third of what ``vpsnap serve`` otherwise imports before it answers. A database
already at the newest revision, as it is on every start but the first after an upgrade, is
told apart with one plain query (``up_to_date``), and Alembic is imported only when there is
something to migrate, or to say what (docs/performance.md, "Start-up").
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"\s*$', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision\s*=\s*(?:"([^"]+)"|None)\s*$', re.MULTILINE)


def alembic_config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - only when migrating (module docstring)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate to ``revision``; to the head, a database already there costs one query."""
    if revision == "head" and await up_to_date(engine):
        return

    def run(connection: sa.Connection) -> None:
        from alembic import command  # noqa: PLC0415 - only when migrating

        command.upgrade(alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    def run(connection: sa.Connection) -> None:
        from alembic import command  # noqa: PLC0415 - only when migrating

        command.downgrade(alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


@cache
def known_head() -> str | None:
    """The newest revision, read from the migration files without Alembic: the one revision
    no other names as its ``down_revision``. None when the files are not a single chain of
    plain ``revision = "…"`` / ``down_revision = "…"`` lines (a merge, say): the caller then
    asks Alembic (``head_revision``), which is always right."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(text), _DOWN_REVISION.findall(text)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


async def up_to_date(engine: AsyncEngine) -> bool:
    """Whether the database is at ``known_head()`` (False when unknown, never migrated, or
    unreadable: Alembic then decides)."""
    head = known_head()
    if head is None:
        return False
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
    except sa.exc.DBAPIError:  # no alembic_version table yet
        return False
    return [row[0] for row in rows] == [head]


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
    if await up_to_date(engine):
        return
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
