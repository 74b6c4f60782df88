"""``client.audit``: the account's audit trail (who did what, when, from where)."""

from __future__ import annotations

from datetime import datetime

from vpsnap.client._http import fetch
from vpsnap.client._plan import Plan, get
from vpsnap.client._runners import Bound, M, Page, PageQuery, Runner, api_pager, page_query
from vpsnap.client.inventory import Inventory, VpsRef
from vpsnap.client.models import AuditEvent, Raw

ACTOR_KINDS = ("api_key", "user", "admin", "scheduler", "reconciler")


def _time(moment: datetime | None) -> str | None:
    # ISO 8601 as the API reads it; a naive time is taken as UTC by the server.
    return None if moment is None else moment.isoformat()


def parse_audit_page(raw: Raw) -> Page[AuditEvent]:
    items = tuple(AuditEvent.parse(item) for item in raw["data"])
    return Page(items, raw["nextCursor"] if raw["hasMore"] else None)


class AuditEvents(Bound[M]):
    """``client.audit``. Needs the scope ``read:audit`` (granted by ``write:all``); without
    it every call raises ``Forbidden``."""

    def __init__(self, runner: Runner[M]) -> None:
        self._runner = runner
        self._inventory: Inventory[M] = Inventory(runner)

    def _list(
        self,
        *,
        vps: VpsRef | None = None,
        actor: str | None = None,
        actor_kind: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> PageQuery[AuditEvent]:
        """``GET /api/v2/audit-events``: the account's audit events, newest first, as a lazy
        iterator over pages of ``limit`` (1..100). Filters: ``vps`` (a ``Vps``, id, name or
        primary IP; a name is looked up once, on the first page), ``actor`` (an actor id:
        ``key_…``, a user id, an OS user, ``scheduler``), ``actor_kind`` (one of
        ``ACTOR_KINDS``), ``action`` (``snapshot.restore``), ``since`` (inclusive) and
        ``until`` (exclusive; a naive time is UTC). Nothing is sent until it is iterated.

        Raises ``Forbidden`` without ``read:audit``, ``InvalidRequest`` for a malformed filter
        or cursor (code ``invalid_cursor``), ``VpsNotFound`` for an unknown ``vps``."""
        runner = self._runner
        inventory = self._inventory
        resolved: list[str] = []  # the VPS id, once looked up

        def page(at: str | None, size: int) -> Plan[Page[AuditEvent]]:
            vps_id = None
            if vps is not None:
                if not resolved:
                    resolved.append((yield from inventory._resolve_id(vps)))
                vps_id = resolved[0]
            params = {
                "limit": str(size),
                "cursor": at,
                "vpsId": vps_id,
                "actor": actor,
                "actorKind": actor_kind,
                "action": action,
                "since": _time(since),
                "until": _time(until),
            }
            request = get("/api/v2/audit-events", params)
            return (yield from fetch(request, runner.policy, parse_audit_page))

        return page_query(page, limit, cursor)

    list = api_pager(_list)
