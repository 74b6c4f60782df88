"""Reading the audit trail: a tenant's events (``GET /api/v2/audit-events``) and every
account's for the operator (``vpsnap admin audit``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vpsnap.domain.audit import AuditEvent, AuditFilter
from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import FieldError, InvalidRequest
from vpsnap.domain.ports import Store
from vpsnap.services.inventory import MAX_PAGE_SIZE
from vpsnap.services.pagination import decode_cursor, encode_cursor


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditEvent]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


@dataclass(frozen=True, slots=True)
class AuditService:
    store: Store

    async def list_for(
        self, principal: Principal, flt: AuditFilter, cursor: str | None, limit: int
    ) -> AuditPage:
        """The caller's account's events matching ``flt`` (its ``account_id`` is ignored),
        newest first."""
        scoped = dataclasses.replace(flt, account_id=principal.account_id)
        return await self.list(scoped, cursor, limit, max_limit=MAX_PAGE_SIZE)

    async def list(
        self, flt: AuditFilter, cursor: str | None, limit: int, *, max_limit: int = 1000
    ) -> AuditPage:
        """Events matching ``flt`` (every account when ``flt.account_id`` is None)."""
        if not 1 <= limit <= max_limit:
            raise InvalidRequest(
                f"limit must be between 1 and {max_limit}.",
                [FieldError("/query/limit", f"Between 1 and {max_limit}.", "out_of_range")],
            )
        if flt.since is not None and flt.until is not None and flt.since >= flt.until:
            raise InvalidRequest(
                "since must be before until.",
                [FieldError("/query/since", "Must be before until.", "out_of_range")],
            )
        before = decode_cursor(cursor, "aud") if cursor is not None else None
        async with self.store.transaction(read_only=True) as tx:
            rows = await tx.list_audit_events(flt, before, limit + 1)
        page = rows[:limit]
        return AuditPage(page, encode_cursor(page[-1].id) if len(rows) > limit else None)
