"""The job journal: what a running job records durably, step by step, so that a re-run after a
crash finishes the rest instead of guessing (docs/how-snapshots-work.md, "Crash recovery").

Two kinds of records:

- **facts** in ``jobs.journal`` (a JSON object), e.g. the power state the VM had before a
  restore touched it: a re-run reads them and ends where the user asked to end.
- **write intents** (``write_intents``), made after the pre-checks and right before a
  hypervisor call writes a snapshot: the only proof that a snapshot without a database row is
  vpsnap's own leftover, and so the only thing that lets vpsnap delete it.

Every record is its own committed transaction, written only while this worker holds the job's
lease (``LeaseLost`` otherwise: another worker owns the job now and this one must stop).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vpsnap.domain.clock import Clock
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import IntentState, Job, Snapshot, Vps, WriteIntent
from vpsnap.domain.ports import Store
from vpsnap.domain.queue import record_journal

INTENT = "intent"
"""Journal key: the write intent of this job (``{"name", "at"}``), once recorded."""


class JobJournal:
    """The journal of one claimed job, as this worker sees and extends it."""

    def __init__(self, store: Store, clock: Clock, job: Job, worker: str) -> None:
        self._store = store
        self._clock = clock
        self._job = job
        self._worker = worker
        self._facts: dict[str, Any] = dict(job.journal)

    @property
    def facts(self) -> Mapping[str, Any]:
        """Everything recorded so far, by this attempt and the earlier ones."""
        return self._facts

    @property
    def is_rerun(self) -> bool:
        """Whether an earlier attempt of this job started (and its worker died or gave up)."""
        return self._job.attempts > 1 or bool(self._facts)

    async def record(self, **facts: Any) -> None:
        """Add ``facts`` (JSON values) to the journal and commit them; raises ``LeaseLost``."""
        updated = {**self._facts, **facts}
        async with self._store.transaction() as tx:
            await record_journal(tx, self._job, self._worker, updated)
        self._facts = updated

    async def open_intent(self, vps: Vps, name: str) -> WriteIntent:
        """Record that this job is about to write snapshot ``name`` on every disk of ``vps``.

        Call it after every check that can refuse the work and right before the hypervisor
        call: a failure before this point never leaves anything vpsnap may delete.
        """
        now = self._clock.now()
        intent = WriteIntent(
            id=new_id("wi"),
            vps_id=vps.id,
            name=name,
            job_id=self._job.id,
            disks=vps.disks,
            state=IntentState.OPEN,
            created_at=now,
        )
        updated = {**self._facts, INTENT: {"name": name, "at": now.isoformat()}}
        async with self._store.transaction() as tx:
            await record_journal(tx, self._job, self._worker, updated)
            await tx.add_write_intent(intent)
        self._facts = updated
        return intent

    @property
    def intended(self) -> str | None:
        """The snapshot name an attempt of this job was about to write, if one got that far."""
        recorded = self._facts.get(INTENT)
        if isinstance(recorded, dict) and isinstance(recorded.get("name"), str):
            return str(recorded["name"])
        return None

    async def close_intent(self, name: str, state: IntentState) -> None:
        """Settle this job's open intent for ``name`` (``undone``: nothing of it is on disk)."""
        async with self._store.transaction() as tx:
            await tx.close_write_intents(self._job.id, state, self._clock.now(), name=name)

    async def snapshot(self, vps_id: str, name: str) -> Snapshot | None:
        """The snapshot's row as committed now (handlers have no transaction of their own)."""
        async with self._store.transaction(read_only=True) as tx:
            return await tx.get_snapshot(vps_id, name)
