"""``/api/v2/audit-events``: the account's audit trail (who did what, when, from where)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from vpsnap.api.deps import ServicesDep, require
from vpsnap.api.openapi import problem_responses
from vpsnap.api.ops_schemas import AuditEventOut, AuditPageOut
from vpsnap.api.params import CursorParam, VpsIdFilter
from vpsnap.domain.audit import ActorKind, AuditFilter
from vpsnap.domain.auth import Principal, Scope

router = APIRouter(prefix="/api/v2/audit-events", tags=["Audit"])

# Checked at the edge like every filter (docs/api.md, "Input"): printable ASCII ids only.
ACTOR_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,200}$"
ACTION_PATTERN = r"^[a-z]+(\.[a-z_]+){1,3}$"

ReadAudit = Annotated[Principal, Depends(require(Scope.READ_AUDIT))]


def _utc(moment: datetime | None) -> datetime | None:
    # A time without an offset is taken as UTC, like every time this API writes.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@router.get(
    "",
    operation_id="listAuditEvents",
    response_model=AuditPageOut,
    responses=problem_responses("invalid_request", "invalid_cursor", "forbidden"),
)
async def list_audit_events(
    principal: ReadAudit,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorParam = None,
    vps_id: VpsIdFilter = None,
    actor: Annotated[
        str | None,
        Query(
            pattern=ACTOR_ID_PATTERN,
            description="An actor id: `key_…`, a user id, an OS user, `scheduler`, …",
        ),
    ] = None,
    actor_kind: Annotated[ActorKind | None, Query(alias="actorKind")] = None,
    action: Annotated[
        str | None, Query(pattern=ACTION_PATTERN, examples=["snapshot.restore"])
    ] = None,
    since: Annotated[datetime | None, Query(description="From this time (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (exclusive)")] = None,
) -> AuditPageOut:
    """The account's audit events, newest first; follow `nextCursor` for older ones. Needs
    `read:audit` (granted by `write:all`)."""
    page = await services.audit.list_for(
        principal,
        AuditFilter(
            vps_id=vps_id,
            actor_id=actor,
            actor_kind=actor_kind,
            action=action,
            since=_utc(since),
            until=_utc(until),
        ),
        cursor,
        limit,
    )
    return AuditPageOut(
        data=[AuditEventOut.of(e) for e in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )
