"""The store's part for operations (issue 12): audit trail, webhook outbox, data stores.

A mixin of ``SqlTransaction`` (``vpsnap.store.sql``), kept in its own module so that the
queries of one concern stay together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vpsnap.domain.audit import Actor, ActorKind, AuditEvent, AuditFilter, AuditOutcome, Target
from vpsnap.domain.storage import DataStore, VpsStorage
from vpsnap.domain.webhooks import (
    DeliveryOutcome,
    MessageState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)
from vpsnap.store.bulk import insert_rows
from vpsnap.store.raw import RawSelect
from vpsnap.store.tables import (
    api_keys,
    audit_events,
    data_stores,
    vps_storage,
    webhook_deliveries,
    webhook_endpoints,
    webhook_outbox,
)

Row = Mapping[str, Any]

# Read by every snapshot listing: built once (building a select per call costs more than
# running it, docs/performance.md "Reads").
GET_VPS_STORAGE: sa.Select[Any] = sa.select(vps_storage).where(
    vps_storage.c.vps_id == sa.bindparam("b_vps")
)
# A node's data stores: read by a snapshot listing whose VPS has published storage.
LIST_DATA_STORES_OF_NODE: sa.Select[Any] = (
    sa.select(data_stores)
    .where(data_stores.c.node == sa.bindparam("b_node"))
    .order_by(data_stores.c.node, data_stores.c.path)
)


class OperationsQueries:
    """Implements the audit, webhook and data-store methods of ``domain.ports.Transaction``."""

    conn: AsyncConnection

    async def _fetch_one(
        self, query: sa.Select[Any], params: dict[str, Any] | None = None
    ) -> Row | None:
        row: Row | None = (await self.conn.execute(query, params)).mappings().first()
        return row

    async def _fetch_all(
        self, query: sa.Select[Any], params: dict[str, Any] | None = None
    ) -> list[Row]:
        return list((await self.conn.execute(query, params)).mappings().all())

    async def _raw_records(
        self, query: RawSelect, params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """``query``'s rows as mappings, on the DB-API cursor: ``SqlTransaction``'s."""
        raise NotImplementedError

    # audit trail ------------------------------------------------------------------------------

    async def add_audit_event(self, event: AuditEvent) -> None:
        await insert_rows(self.conn, audit_events, [_audit_values(event)])

    async def add_audit_events(self, events: Sequence[AuditEvent]) -> None:
        if events:
            await insert_rows(self.conn, audit_events, [_audit_values(e) for e in events])

    async def list_audit_events(
        self, flt: AuditFilter, before_id: str | None, limit: int
    ) -> list[AuditEvent]:
        """Newest first (ids are ULIDs: they sort in the order events were written)."""
        c = audit_events.c
        query = sa.select(audit_events).order_by(c.id.desc()).limit(limit)
        conditions = [
            column == value
            for column, value in (
                (c.account_id, flt.account_id),
                (c.vps_id, flt.vps_id),
                (c.actor_id, flt.actor_id),
                (c.actor_kind, flt.actor_kind.value if flt.actor_kind else None),
                (c.action, flt.action),
            )
            if value is not None
        ]
        if flt.since is not None:
            conditions.append(c.occurred_at >= flt.since)
        if flt.until is not None:
            conditions.append(c.occurred_at < flt.until)
        if before_id is not None:
            conditions.append(c.id < before_id)
        if conditions:
            query = query.where(*conditions)
        return [_audit_event(r) for r in await self._fetch_all(query)]

    async def purge_audit_events(self, before: datetime) -> int:
        result = await self.conn.execute(
            audit_events.delete().where(audit_events.c.occurred_at < before)
        )
        return int(result.rowcount)

    async def api_key_account(self, key_id: str) -> str | None:
        row = await self._fetch_one(sa.select(api_keys.c.account_id).where(api_keys.c.id == key_id))
        return str(row["account_id"]) if row else None

    # webhook endpoints ------------------------------------------------------------------------

    async def add_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        await self.conn.execute(webhook_endpoints.insert().values(**_endpoint_values(endpoint)))

    async def update_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        await self.conn.execute(
            webhook_endpoints.update()
            .where(webhook_endpoints.c.id == endpoint.id)
            .values(**_endpoint_values(endpoint))
        )

    async def get_webhook_endpoint(
        self, endpoint_id: str, *, lock: bool = False
    ) -> WebhookEndpoint | None:
        query = sa.select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
        row = await self._fetch_one(query.with_for_update() if lock else query)
        return _endpoint(row) if row else None

    async def list_webhook_endpoints(self, account_id: str) -> list[WebhookEndpoint]:
        rows = await self._raw_records(_ENDPOINTS_OF_ACCOUNT, {"b_account": account_id})
        return [_endpoint(r) for r in rows]

    async def subscribed_webhook_endpoints(
        self, account_id: str, event_type: str
    ) -> list[WebhookEndpoint]:
        """The account's enabled endpoints that receive ``event_type``."""
        return [e for e in await self.list_webhook_endpoints(account_id) if e.wants(event_type)]

    async def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        """Remove the endpoint with its messages and delivery attempts."""
        await self.conn.execute(
            webhook_deliveries.delete().where(webhook_deliveries.c.endpoint_id == endpoint_id)
        )
        await self.conn.execute(
            webhook_outbox.delete().where(webhook_outbox.c.endpoint_id == endpoint_id)
        )
        result = await self.conn.execute(
            webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id)
        )
        return bool(result.rowcount)

    # webhook outbox ---------------------------------------------------------------------------

    async def add_webhook_message(self, message: WebhookMessage) -> None:
        await self.conn.execute(webhook_outbox.insert().values(**_message_values(message)))

    async def get_webhook_message(self, message_id: str) -> WebhookMessage | None:
        row = await self._fetch_one(
            sa.select(webhook_outbox).where(webhook_outbox.c.id == message_id)
        )
        return _message(row) if row else None

    async def claim_webhook_messages(
        self, now: datetime, hold_until: datetime, limit: int
    ) -> list[WebhookMessage]:
        """Pending messages due by ``now``, oldest first, each held until ``hold_until`` (its
        ``next_attempt_at``), so that a sender that dies mid-attempt leaves it to be retried
        then, and a second sender passes it over meanwhile."""
        c = webhook_outbox.c
        query = (
            sa.select(webhook_outbox)
            .where(c.state == MessageState.PENDING.value, c.next_attempt_at <= now)
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        messages = [_message(r) for r in await self._fetch_all(query)]
        if messages:
            await self.conn.execute(
                webhook_outbox.update()
                .where(c.id.in_([m.id for m in messages]))
                .values(next_attempt_at=hold_until)
            )
        return messages

    async def update_webhook_message(self, message: WebhookMessage) -> None:
        await self.conn.execute(
            webhook_outbox.update()
            .where(webhook_outbox.c.id == message.id)
            .values(**_message_values(message))
        )

    async def fail_pending_webhook_messages(self, endpoint_id: str, at: datetime) -> int:
        c = webhook_outbox.c
        result = await self.conn.execute(
            webhook_outbox.update()
            .where(c.endpoint_id == endpoint_id, c.state == MessageState.PENDING.value)
            .values(state=MessageState.FAILED.value, finished_at=at)
        )
        return int(result.rowcount)

    async def count_webhook_messages(self, state: MessageState) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(webhook_outbox)
            .where(webhook_outbox.c.state == state.value)
        )
        return int((await self.conn.execute(query)).scalar_one())

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        await self.conn.execute(
            webhook_deliveries.insert().values(
                id=delivery.id,
                message_id=delivery.message_id,
                endpoint_id=delivery.endpoint_id,
                event_type=delivery.event_type,
                attempt=delivery.attempt,
                attempted_at=delivery.attempted_at,
                outcome=delivery.outcome.value,
                status_code=delivery.status_code,
                error=delivery.error,
                duration_ms=delivery.duration_ms,
            )
        )

    async def list_webhook_deliveries(
        self, endpoint_id: str, before_id: str | None, limit: int
    ) -> list[WebhookDelivery]:
        """Newest first."""
        c = webhook_deliveries.c
        query = (
            sa.select(webhook_deliveries)
            .where(c.endpoint_id == endpoint_id)
            .order_by(c.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(c.id < before_id)
        return [_delivery(r) for r in await self._fetch_all(query)]

    async def purge_webhook_history(self, before: datetime) -> int:
        """Delivery attempts made before ``before`` and finished messages that ended before it."""
        attempts = await self.conn.execute(
            webhook_deliveries.delete().where(webhook_deliveries.c.attempted_at < before)
        )
        c = webhook_outbox.c
        messages = await self.conn.execute(
            webhook_outbox.delete().where(
                c.state != MessageState.PENDING.value, c.finished_at < before
            )
        )
        return int(attempts.rowcount) + int(messages.rowcount)

    # data stores ------------------------------------------------------------------------------

    async def save_data_store(self, store: DataStore) -> None:
        values = {
            "total_bytes": store.total_bytes,
            "free_bytes": store.free_bytes,
            "observed_at": store.observed_at,
        }
        c = data_stores.c
        updated = await self.conn.execute(
            data_stores.update().where(c.node == store.node, c.path == store.path).values(values)
        )
        if not updated.rowcount:
            await self.conn.execute(
                data_stores.insert().values(node=store.node, path=store.path, **values)
            )

    async def list_data_stores(self, node: str | None) -> list[DataStore]:
        if node is None:
            query = sa.select(data_stores).order_by(data_stores.c.node, data_stores.c.path)
            rows = await self._fetch_all(query)
        else:
            rows = await self._fetch_all(LIST_DATA_STORES_OF_NODE, {"b_node": node})
        return [
            DataStore(
                node=r["node"],
                path=r["path"],
                total_bytes=r["total_bytes"],
                free_bytes=r["free_bytes"],
                observed_at=r["observed_at"],
            )
            for r in rows
        ]

    async def remove_data_stores(self, node: str, keep: list[str]) -> int:
        """Forget the node's stores that no longer hold any disk."""
        c = data_stores.c
        result = await self.conn.execute(
            data_stores.delete().where(c.node == node, c.path.not_in(keep))
        )
        return int(result.rowcount)

    async def save_vps_storage(self, usages: Sequence[VpsStorage]) -> None:
        # A page of VPSes in two statements (a statement per VPS held the write lock for tens
        # of seconds at 10,000 VPSes, and other writers failed with "database is locked").
        if not usages:
            return
        await self.conn.execute(
            vps_storage.delete().where(vps_storage.c.vps_id.in_([u.vps_id for u in usages]))
        )
        await self.conn.execute(
            vps_storage.insert(),
            [
                {
                    "vps_id": u.vps_id,
                    "node": u.node,
                    "stores": list(u.stores),
                    "allocated_bytes": u.allocated_bytes,
                    "observed_at": u.observed_at,
                }
                for u in usages
            ],
        )

    async def get_vps_storage(self, vps_id: str) -> VpsStorage | None:
        row = await self._fetch_one(GET_VPS_STORAGE, {"b_vps": vps_id})
        return vps_storage_from_row(row) if row else None

    async def list_vps_storage(self, node: str | None) -> list[VpsStorage]:
        query = sa.select(vps_storage).order_by(vps_storage.c.vps_id)
        if node is not None:
            query = query.where(vps_storage.c.node == node)
        return [vps_storage_from_row(r) for r in await self._fetch_all(query)]


def _audit_event(row: Row) -> AuditEvent:
    target = Target(row["target_type"], row["target_id"]) if row["target_type"] else None
    return AuditEvent(
        id=row["id"],
        occurred_at=row["occurred_at"],
        account_id=row["account_id"],
        actor=Actor(ActorKind(row["actor_kind"]), row["actor_id"], row["actor_label"]),
        action=row["action"],
        outcome=AuditOutcome(row["outcome"]),
        target=target,
        vps_id=row["vps_id"],
        request_id=row["request_id"],
        client_ip=row["client_ip"],
        problem_code=row["problem_code"],
        details=row["details"] or {},
    )


def _endpoint_values(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "account_id": endpoint.account_id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": sorted(endpoint.event_types),
        "secret": endpoint.secret,
        "enabled": endpoint.enabled,
        "created_at": endpoint.created_at,
        "last_success_at": endpoint.last_success_at,
        "last_failure_at": endpoint.last_failure_at,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
    }


# Read at the end of every job (events.outbox): built once, run on the DB-API cursor.
_ENDPOINTS_OF_ACCOUNT = RawSelect(
    sa.select(webhook_endpoints)
    .where(webhook_endpoints.c.account_id == sa.bindparam("b_account"))
    .order_by(webhook_endpoints.c.id),
    webhook_endpoints,
)


def _endpoint(row: Mapping[str, Any]) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["id"],
        account_id=row["account_id"],
        url=row["url"],
        description=row["description"],
        event_types=frozenset(row["event_types"]),
        secret=row["secret"],
        enabled=row["enabled"],
        created_at=row["created_at"],
        last_success_at=row["last_success_at"],
        last_failure_at=row["last_failure_at"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
    )


def _message_values(message: WebhookMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "endpoint_id": message.endpoint_id,
        "account_id": message.account_id,
        "event_type": message.event_type,
        "payload": message.payload,
        "state": message.state.value,
        "attempts": message.attempts,
        "next_attempt_at": message.next_attempt_at,
        "created_at": message.created_at,
        "finished_at": message.finished_at,
    }


def _message(row: Row) -> WebhookMessage:
    return WebhookMessage(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        account_id=row["account_id"],
        event_type=row["event_type"],
        payload=row["payload"],
        state=MessageState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def _delivery(row: Row) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        message_id=row["message_id"],
        endpoint_id=row["endpoint_id"],
        event_type=row["event_type"],
        attempt=row["attempt"],
        attempted_at=row["attempted_at"],
        outcome=DeliveryOutcome(row["outcome"]),
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=row["duration_ms"],
    )


def vps_storage_from_row(row: Row) -> VpsStorage:
    """A ``vps_storage`` row (a mapping of its columns) as the domain's ``VpsStorage``."""
    return VpsStorage(
        vps_id=row["vps_id"],
        node=row["node"],
        stores=tuple(row["stores"]),
        allocated_bytes=row["allocated_bytes"],
        observed_at=row["observed_at"],
    )


def _audit_values(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": event.occurred_at,
        "account_id": event.account_id,
        "actor_kind": event.actor.kind.value,
        "actor_id": event.actor.id,
        "actor_label": event.actor.label,
        "action": event.action,
        "outcome": event.outcome.value,
        "target_type": event.target.type if event.target else None,
        "target_id": event.target.id if event.target else None,
        "vps_id": event.vps_id,
        "request_id": event.request_id,
        "client_ip": event.client_ip,
        "problem_code": event.problem_code,
        "details": event.details or None,
    }
