"""Webhook endpoints of an account: register (secret shown once), list, remove, test, and the
delivery attempts of one (docs/webhooks.md)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.auth import Principal
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import Conflict, FieldError, InvalidRequest, WebhookNotFound
from vpsnap.domain.ids import is_valid_id, new_id
from vpsnap.domain.ports import Store, Transaction
from vpsnap.domain.webhooks import (
    SUBSCRIBABLE_EVENTS,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookMessage,
)
from vpsnap.events.addresses import AddressPolicy, AddressRefused, resolve
from vpsnap.events.audit import AuditTrail
from vpsnap.events.outbox import message_for
from vpsnap.services.inventory import MAX_PAGE_SIZE
from vpsnap.services.pagination import decode_cursor, encode_cursor

MAX_ENDPOINTS_PER_ACCOUNT = 10
"""Each event is sent to every subscribed endpoint: the cap bounds one event's fan-out."""


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes (192 bits)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str
    """Shown once, in the answer to the create."""


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    items: list[WebhookDelivery]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class WebhookService:
    store: Store
    clock: Clock
    addresses: AddressPolicy = field(default_factory=AddressPolicy)

    @property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.store, self.clock)

    async def create(
        self,
        principal: Principal,
        url: str,
        event_types: Iterable[str] | None = None,
        description: str | None = None,
    ) -> CreatedEndpoint:
        """Register an endpoint for ``event_types`` (all subscribable events when None).

        ``InvalidRequest`` for a URL that is not http(s), does not resolve, or resolves to an
        address webhooks may not reach (``vpsnap.events.addresses``), and for unknown events.
        """
        actor = Actor.of(principal)
        async with self.audit.refusals(
            actor, AuditAction.WEBHOOK_CREATE, account_id=principal.account_id
        ):
            wanted = _event_types(event_types)
            try:
                await resolve(url, self.addresses)
            except AddressRefused as exc:
                raise InvalidRequest(
                    "The webhook URL cannot be used.",
                    [FieldError("/url", str(exc), "not_allowed")],
                ) from None
            secret = new_secret()
            endpoint = WebhookEndpoint(
                id=new_id("whk"),
                account_id=principal.account_id,
                url=url,
                event_types=wanted,
                secret=secret,
                enabled=True,
                created_at=self.clock.now(),
                description=description,
            )
            async with self.store.transaction() as tx:
                existing = await tx.list_webhook_endpoints(principal.account_id)
                if len(existing) >= MAX_ENDPOINTS_PER_ACCOUNT:
                    raise Conflict(
                        f"The account has {len(existing)} webhook endpoints, the most it may "
                        "have. Delete one first."
                    )
                await tx.add_webhook_endpoint(endpoint)
                await self.audit.record(
                    tx,
                    actor,
                    AuditAction.WEBHOOK_CREATE,
                    account_id=principal.account_id,
                    target=Target("webhook", endpoint.id),
                    details={"url": url, "eventTypes": sorted(wanted)},
                )
        return CreatedEndpoint(endpoint, secret)

    async def list(self, principal: Principal) -> list[WebhookEndpoint]:
        async with self.store.transaction(read_only=True) as tx:
            return await tx.list_webhook_endpoints(principal.account_id)

    async def get(self, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
        async with self.store.transaction(read_only=True) as tx:
            return await _owned(tx, principal, endpoint_id)

    async def delete(self, principal: Principal, endpoint_id: str) -> None:
        """Remove the endpoint, its undelivered messages and its delivery history."""
        actor, target = Actor.of(principal), Target("webhook", endpoint_id)
        action = AuditAction.WEBHOOK_DELETE
        async with (
            self.audit.refusals(actor, action, account_id=principal.account_id, target=target),
            self.store.transaction() as tx,
        ):
            endpoint = await _owned(tx, principal, endpoint_id)
            await tx.delete_webhook_endpoint(endpoint.id)
            await self.audit.record(
                tx,
                actor,
                action,
                account_id=principal.account_id,
                target=target,
                details={"url": endpoint.url},
            )

    async def test(self, principal: Principal, endpoint_id: str) -> WebhookMessage:
        """Queue a ``webhook.test`` event for this endpoint alone (even a disabled one is
        refused nothing here: its delivery records the outcome)."""
        actor, target = Actor.of(principal), Target("webhook", endpoint_id)
        action = AuditAction.WEBHOOK_TEST
        async with (
            self.audit.refusals(actor, action, account_id=principal.account_id, target=target),
            self.store.transaction() as tx,
        ):
            endpoint = await _owned(tx, principal, endpoint_id)
            message = message_for(
                endpoint,
                WebhookEventType.WEBHOOK_TEST,
                self.clock.now(),
                {"webhookId": endpoint.id, "message": "A test event from vpsnap."},
            )
            await tx.add_webhook_message(message)
            await self.audit.record(
                tx,
                actor,
                action,
                account_id=principal.account_id,
                target=target,
                details={"messageId": message.id},
            )
        return message

    async def deliveries(
        self, principal: Principal, endpoint_id: str, cursor: str | None, limit: int
    ) -> DeliveryPage:
        """Delivery attempts, newest first, cursor-paginated."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(
                f"limit must be between 1 and {MAX_PAGE_SIZE}.",
                [FieldError("/query/limit", f"Between 1 and {MAX_PAGE_SIZE}.", "out_of_range")],
            )
        before = decode_cursor(cursor, "dlv") if cursor is not None else None
        async with self.store.transaction(read_only=True) as tx:
            endpoint = await _owned(tx, principal, endpoint_id)
            rows = await tx.list_webhook_deliveries(endpoint.id, before, limit + 1)
        page = rows[:limit]
        more = len(rows) > limit
        return DeliveryPage(page, encode_cursor(page[-1].id) if more else None)


async def _owned(tx: Transaction, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
    # A malformed id cannot exist: the store is never asked about it.
    endpoint = (
        await tx.get_webhook_endpoint(endpoint_id) if is_valid_id("whk", endpoint_id) else None
    )
    if endpoint is None or endpoint.account_id != principal.account_id:
        raise WebhookNotFound(f"No webhook endpoint with id {endpoint_id!r} in this account.")
    return endpoint


def _event_types(requested: Iterable[str] | None) -> frozenset[str]:
    known = {e.value for e in SUBSCRIBABLE_EVENTS}
    if requested is None:
        return frozenset(known)
    wanted = list(requested)
    errors = [
        FieldError(
            f"/eventTypes/{index}",
            f"Unknown event {name!r}; one of: {', '.join(sorted(known))}.",
            "out_of_range",
        )
        for index, name in enumerate(wanted)
        if name not in known
    ]
    if not wanted:
        errors.append(FieldError("/eventTypes", "List at least one event.", "out_of_range"))
    if errors:
        raise InvalidRequest("The request failed validation.", errors)
    return frozenset(wanted)
