"""Helpers shared by the test suites."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest


@dataclass
class ManualClock:
    """A clock that only moves when the test says so."""

    moment: datetime = datetime(2026, 4, 27, 12, 0, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


PROBLEM_MEMBERS = {
    "type",
    "title",
    "status",
    "detail",
    "code",
    "instance",
    "requestId",
    "timestamp",
}


def qemu_pids_under(root: Path) -> list[int]:
    """Pids of every live process whose command line mentions ``root`` (our VMs)."""
    needle = str(root).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and needle in cmdline:
            pids.append(int(entry.name))
    return pids


def kill_vms_under(root: Path) -> list[int]:
    """SIGKILL every QEMU process whose command line mentions ``root``; their pids.

    Managed VMs outlive the server that started them (docs/vms.md), so a test whose app
    started one (a fuzzed ``startVps``, a power action) must end it: they are not the
    tests' to keep, and an idle TCG guest still takes CPU from the rest of the suite.
    """
    pids = qemu_pids_under(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def count_thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``asyncio.to_thread`` calls from now on (the test's end undoes it): the length
    of the returned list is the number of hops to a worker thread so far."""
    hops: list[int] = []
    to_thread = asyncio.to_thread

    async def counted(*args: Any, **kwargs: Any) -> Any:
        hops.append(1)
        return await to_thread(*args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return hops
