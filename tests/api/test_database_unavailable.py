"""While SQLite's write lock is held past the busy timeout (another process writing, a stuck
transaction), a write answers ``503 database_unavailable`` with ``Retry-After`` and leaves
nothing behind; reads go on (WAL readers never wait for the writer)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import pytest

from tests.api.test_errors import assert_problem, snapshots_path
from tests.conftest import Api
from tests.dashboard.support import SAME_ORIGIN, csrf_token, panel_client
from vpsnap.domain.errors import DatabaseUnavailable
from vpsnap.services.credentials import CredentialService
from vpsnap.store import migrate
from vpsnap.store.sql import DATABASE_RETRY_AFTER_SECONDS, SqlStore

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """The SQLite store with a busy timeout of 0.2 s instead of 30."""
    sql_store = SqlStore.from_url(database_url, busy_timeout_seconds=0.2)
    await migrate.upgrade(sql_store.engine)
    yield sql_store
    await sql_store.dispose()


async def test_a_write_behind_a_held_lock_is_503_and_leaves_nothing(
    api: Api, store: SqlStore
) -> None:
    holder = sqlite3.connect(
        store.engine.url.database or "", isolation_level=None, check_same_thread=False
    )
    try:
        # Another writer takes SQLite's one write lock; off the event loop, where the worker's
        # transaction may have to finish first.
        await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
        response = await api.client.post(
            snapshots_path(api), json={"name": "before-upgrade"}, headers=api.auth()
        )
        body = assert_problem(response, 503, "database_unavailable")
        assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
        assert body["extensions"] == {"retryAfter": DATABASE_RETRY_AFTER_SECONDS}
        assert "locked" not in str(body["detail"])  # the operator's account is in the log
        # The SDK and the CLI send an Idempotency-Key: that path refuses in its own layer and
        # must say when to come back just the same.
        keyed = await api.client.post(
            snapshots_path(api),
            json={"name": "before-upgrade"},
            headers={**api.auth(), "Idempotency-Key": "retry-me-later"},
        )
        assert_problem(keyed, 503, "database_unavailable")
        assert keyed.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
        listed = await api.client.get(snapshots_path(api), headers=api.auth())
        assert listed.status_code == 200  # reads do not wait for the writer
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
    listed = await api.client.get(snapshots_path(api), headers=api.auth())
    assert listed.json()["data"] == []
    retried = await api.client.post(
        snapshots_path(api),
        json={"name": "before-upgrade"},
        headers={**api.auth(), "Idempotency-Key": "retry-me-later"},
    )
    assert retried.status_code == 202, retried.text  # carried out, not the 503 replayed


async def test_the_panel_says_temporarily_unavailable_and_when_to_come_back(
    api: Api, store: SqlStore
) -> None:
    vps_id = api.vps_ids["demo-web"]
    async with panel_client(api, "demo@example.com") as client:
        token = await csrf_token(client)
        holder = sqlite3.connect(
            store.engine.url.database or "", isolation_level=None, check_same_thread=False
        )
        try:
            await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
            page = await client.post(
                f"/vps/{vps_id}/snapshots",
                data={"csrf_token": token, "name": "from-panel"},
                headers=SAME_ORIGIN,
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    # Before: the generic "Something went wrong" page, with no Retry-After.
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert "Temporarily unavailable" in page.text
    assert "Something went wrong" not in page.text
    assert "locked" not in page.text


async def test_a_key_lookup_meeting_an_unavailable_database_is_503_not_500(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge middleware looks the key up before any route runs, outside FastAPI's exception
    handlers: a database that is gone then (a PostgreSQL restart dropped the small-read
    connections; the cluster test once logged a 500 here) answers 503 with Retry-After too."""

    async def unavailable(_self: CredentialService, _secret: str) -> None:
        raise DatabaseUnavailable(
            "The database did not answer in time; nothing was done. Retry later.",
            retry_after=DATABASE_RETRY_AFTER_SECONDS,
        )

    monkeypatch.setattr(CredentialService, "authenticate", unavailable)
    # A key this process has not verified yet (a verified one is answered from memory).
    response = await api.client.get(
        "/api/v2/vps", headers={"Authorization": "Bearer vps_never_seen_0123456789abcdef"}
    )
    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
