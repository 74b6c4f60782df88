"""The SDK's public surface: what ``__all__`` promises, what importing it loads, and the types
that ``Client`` and ``AsyncClient`` give the one implementation of every method."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import vpsnap.client
from vpsnap.client import errors

SNIPPET = """
from typing import assert_type
from collections.abc import Awaitable
from vpsnap.client import (
    Async, AsyncClient, AsyncPager, Client, Job, Operation, Snapshot, SnapshotList, Sync,
    SyncPager, Vps,
)

def sync(client: Client) -> None:
    assert_type(client.snapshots.list("web"), SnapshotList)
    operation = client.snapshots.create("web", "a", description=None)
    assert_type(operation, Operation[Sync])
    assert_type(operation.wait(timeout=5), Job[Sync])
    assert_type(client.jobs.get("job_1").wait(), Job[Sync])
    assert_type(client.snapshots.create_safely("web", "a", make_room="buy-slot"), Snapshot)
    assert_type(client.vps.list(limit=5), SyncPager[Vps])
    assert_type(client.jobs.list(status="failed"), SyncPager[Job[Sync]])
    assert_type(client.vps.restart("web", force=True), Operation[Sync])

async def asynchronous(client: AsyncClient) -> None:
    assert_type(client.snapshots.list("web"), Awaitable[SnapshotList])
    operation = await client.snapshots.create("web", "a")
    assert_type(operation, Operation[Async])
    assert_type(await operation.wait(), Job[Async])
    assert_type(await client.snapshots.create_safely("web", "a"), Snapshot)
    assert_type(client.vps.list(), AsyncPager[Vps])
    assert_type(client.jobs.list(), AsyncPager[Job[Async]])

def misuse(client: Client) -> None:
    client.snapshots.create_safely("web", "a", make_room="delete-newest")  # E: bad literal
"""


def test_all_is_complete() -> None:
    assert len(set(vpsnap.client.__all__)) == len(vpsnap.client.__all__)
    for name in vpsnap.client.__all__:
        assert hasattr(vpsnap.client, name), name
    public_errors = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, errors.VpsnapError)
    }
    assert public_errors <= set(vpsnap.client.__all__)


def test_importing_the_sdk_loads_nothing_of_the_server() -> None:
    probe = (
        "import sys, vpsnap.client, vpsnap.cli.entry, vpsnap.cli.commands.vps,"
        " vpsnap.cli.commands.snapshots, vpsnap.cli.commands.jobs, vpsnap.cli.commands.schedules,"
        " vpsnap.cli.commands.context, vpsnap.cli.commands.version;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi', 'sqlalchemy', 'pydantic', 'pydantic_settings', 'structlog', 'uvicorn'} "
        "or m.startswith(('vpsnap.domain', 'vpsnap.api', 'vpsnap.services', 'vpsnap.store', "
        "'vpsnap.runtime', 'vpsnap.settings', 'vpsnap.drivers', 'vpsnap.jobs'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_sync_and_async_methods_are_typed_from_one_definition(tmp_path: Path) -> None:
    snippet = tmp_path / "usage.py"
    snippet.write_text(SNIPPET)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        cwd=tmp_path,
    )
    errors_found = [line for line in result.stdout.splitlines() if ": error:" in line]
    # Exactly one error: the misuse. Everything else type-checks as asserted.
    assert len(errors_found) == 1, result.stdout
    assert "usage.py:30:" in errors_found[0]
    assert "make_room" in errors_found[0]
