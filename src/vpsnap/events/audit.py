"""Writing the audit trail (``vpsnap.domain.audit``).

A success is recorded with ``AuditTrail.record`` inside the action's own transaction, so a
rolled-back action leaves no event. A refusal (a ``DomainError`` raised by the service) is
recorded by ``AuditTrail.refusals`` on its own, after the action's transaction rolled back,
with outcome ``failed`` and the problem code.
"""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from vpsnap.domain.audit import Actor, AuditEvent, AuditOutcome, Target
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import DatabaseUnavailable, DomainError
from vpsnap.domain.ids import new_id, new_ids
from vpsnap.domain.ports import Store, Transaction
from vpsnap.events.context import current_origin

log = structlog.get_logger("vpsnap.audit")


def operator_actor() -> Actor:
    """The operator running this process (``vpsnap admin …``): its OS user."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        user = "unknown"
    return Actor.admin(user)


async def record(
    tx: Transaction,
    at: datetime,
    actor: Actor,
    action: str,
    *,
    account_id: str | None,
    target: Target | None = None,
    vps_id: str | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCEEDED,
    problem_code: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record ``action`` in ``tx`` (for work that has a transaction but no ``AuditTrail``:
    the scheduler's and the reconciler's)."""
    event = new_event(
        at,
        actor,
        action,
        account_id=account_id,
        target=target,
        vps_id=vps_id,
        outcome=outcome,
        problem_code=problem_code,
        details=details,
    )
    await tx.add_audit_event(event)
    return event


def new_event(
    at: datetime,
    actor: Actor,
    action: str,
    *,
    account_id: str | None,
    target: Target | None = None,
    vps_id: str | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCEEDED,
    problem_code: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """The event ``record`` writes, for callers that write many at once
    (``Transaction.add_audit_events``): the request id and client address of the request
    being served, if any."""
    origin = current_origin()
    return AuditEvent(
        id=new_id("aud"),
        occurred_at=at,
        account_id=account_id,
        actor=actor,
        action=action,
        outcome=outcome,
        target=target,
        vps_id=vps_id,
        request_id=origin.request_id,
        client_ip=origin.client_ip,
        problem_code=problem_code,
        details=details or {},
    )


def new_events(
    at: datetime,
    actor: Actor,
    action: str,
    subjects: Sequence[tuple[str | None, Target | None, str | None, dict[str, Any]]],
) -> list[AuditEvent]:
    """``new_event`` for many events of one action at once (set-based work: the retention
    sweep writes one per expired snapshot): ``subjects`` are (account id, target, VPS id,
    details) each. The ids are one ascending run (``new_ids``) and the request's origin is read
    once; the events are those ``new_event`` would make one by one."""
    origin = current_origin()
    return [
        AuditEvent(
            id=event_id,
            occurred_at=at,
            account_id=account_id,
            actor=actor,
            action=action,
            outcome=AuditOutcome.SUCCEEDED,
            target=target,
            vps_id=vps_id,
            request_id=origin.request_id,
            client_ip=origin.client_ip,
            details=details or {},
        )
        for event_id, (account_id, target, vps_id, details) in zip(
            new_ids("aud", len(subjects)), subjects, strict=True
        )
    ]


@dataclass(frozen=True, slots=True)
class AuditTrail:
    store: Store
    clock: Clock

    def event(
        self,
        actor: Actor,
        action: str,
        outcome: AuditOutcome,
        *,
        account_id: str | None,
        target: Target | None = None,
        vps_id: str | None = None,
        problem_code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        origin = current_origin()
        return AuditEvent(
            id=new_id("aud"),
            occurred_at=self.clock.now(),
            account_id=account_id,
            actor=actor,
            action=action,
            outcome=outcome,
            target=target,
            vps_id=vps_id,
            request_id=origin.request_id,
            client_ip=origin.client_ip,
            problem_code=problem_code,
            details=details or {},
        )

    async def record(
        self,
        tx: Transaction,
        actor: Actor,
        action: str,
        *,
        account_id: str | None,
        target: Target | None = None,
        vps_id: str | None = None,
        outcome: AuditOutcome = AuditOutcome.SUCCEEDED,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Record ``action`` in the caller's transaction (it commits or rolls back with it)."""
        event = self.event(
            actor,
            action,
            outcome,
            account_id=account_id,
            target=target,
            vps_id=vps_id,
            details=details,
        )
        await tx.add_audit_event(event)
        return event

    @asynccontextmanager
    async def refusals(
        self,
        actor: Actor,
        action: str,
        *,
        account_id: str | None,
        target: Target | None = None,
        vps_id: str | None = None,
    ) -> AsyncIterator[None]:
        """Record a ``DomainError`` raised in the block as a failed ``action``, then re-raise.

        The block's own transaction has rolled back by then; the refusal is written in a
        transaction of its own. Other exceptions (bugs, a lost database) are not audited: the
        log has them.
        """
        try:
            yield
        except DatabaseUnavailable:
            raise  # a lost database is not a refusal (and could not be written down anyway)
        except DomainError as error:
            event = self.event(
                actor,
                action,
                AuditOutcome.FAILED,
                account_id=account_id,
                target=target,
                vps_id=vps_id,
                problem_code=error.code,
            )
            try:
                async with self.store.transaction() as tx:
                    await tx.add_audit_event(event)
            except Exception:
                # The caller must get its own error, not one about the audit trail.
                log.exception("audit_write_failed", action=action, code=error.code)
            raise
