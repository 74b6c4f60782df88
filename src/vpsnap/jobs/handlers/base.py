"""The shape of a job handler, split so the worker owns leases, transactions and signals.

``perform`` talks to the hypervisor, outside any transaction, and records what it is about to
do and what it found in the job's journal (``vpsnap.jobs.journal``); ``prepare``, ``succeed``
and ``undo`` touch the database only, inside the worker's transactions. Every ``perform`` must
be safe to run again after a crash: it reads the journal and asks the driver what exists, and
finishes the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from vpsnap.domain.model import Job, Snapshot, Vps
from vpsnap.domain.ports import HypervisorDriver, Transaction
from vpsnap.jobs.journal import JobJournal


class JobHandler(Protocol):
    async def prepare(
        self, tx: Transaction, job: Job, vps: Vps, snapshots: Sequence[Snapshot]
    ) -> None:
        """Runs in the claim's transaction, with the VPS's snapshots (oldest first) read in it
        along with the VPS (one statement). May raise ``DomainError`` to fail the job before
        any hypervisor work, but only before writing anything."""
        ...

    async def perform(
        self, driver: HypervisorDriver, job: Job, vps: Vps, journal: JobJournal
    ) -> dict[str, Any]:
        """Do the hypervisor work; returns facts for ``succeed``. Raises ``DomainError`` (or
        ``LeaseLost`` from the journal, when another worker owns the job now)."""
        ...

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        """Record success; returns the job's ``result``."""
        ...

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        """Record failure: give back what ``prepare`` or the request took (slot, status)."""
        ...
