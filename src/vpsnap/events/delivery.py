"""Webhook delivery: send the outbox's due messages, signed per Standard Webhooks, and retry.

Runs as one of the scheduler's periodic tasks (``vpsnap.runtime``), so in a scale-out
deployment exactly one process delivers; the outbox rows it claims are held for the length of
an attempt, so a second one (or a restarted one) would not send them twice meanwhile.

Each attempt is recorded (``GET /api/v2/webhooks/{id}/deliveries``). A 2xx answer delivers the
message; anything else (another status, a timeout, a refused connection or address) is retried
with capped exponential backoff (``domain.webhooks.RetryPolicy``) until the retry window ends.
A message given up while nothing reached the endpoint for a whole window disables the endpoint
(audited as ``webhook.disable``). Receivers must be idempotent on ``webhook-id``: a delivery
whose answer was lost is sent again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from standardwebhooks import Webhook

from vpsnap import __version__
from vpsnap.domain.audit import SCHEDULER, AuditAction, Target
from vpsnap.domain.clock import Clock
from vpsnap.domain.ids import new_id
from vpsnap.domain.ports import Store, Transaction
from vpsnap.domain.webhooks import (
    DeliveryOutcome,
    MessageState,
    RetryPolicy,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)
from vpsnap.events.addresses import AddressPolicy, AddressRefused, resolve
from vpsnap.events.audit import record
from vpsnap.metrics import WEBHOOK_DELIVERIES

log = structlog.get_logger("vpsnap.webhooks")

_ERROR_MAX = 300  # webhook_deliveries.error is VARCHAR(300)


def signing_key(secret: str) -> str | bytes:
    """What ``standardwebhooks.Webhook`` takes: a ``whsec_<base64>`` secret as it is; any other
    string as its raw UTF-8 bytes (the billing webhook's older secrets)."""
    return secret if secret.startswith("whsec_") else secret.encode()


def signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, signed at ``at`` (wall-clock time: the
    receiver compares it with its own clock)."""
    signature = Webhook(signing_key(secret)).sign(message_id, at, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def encode_body(payload: dict[str, object]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Attempt:
    delivered: bool
    status_code: int | None
    error: str | None
    duration_ms: int

    @classmethod
    def failed(cls, error: str, duration_ms: int) -> Attempt:
        """An attempt that got no HTTP answer (refused address, timeout, connection error)."""
        return cls(
            delivered=False, status_code=None, error=error[:_ERROR_MAX], duration_ms=duration_ms
        )


@dataclass(frozen=True, slots=True)
class WebhookSender:
    """One HTTP attempt: resolve and check the address, connect to that address, POST."""

    policy: AddressPolicy
    timeout: float = 10.0

    async def attempt(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> Attempt:
        import httpx  # noqa: PLC0415 - not at start-up: ~40-60 ms of imports (rich, pygments, idna)

        started = time.perf_counter()

        def took() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            destination = await resolve(endpoint.url, self.policy)
        except AddressRefused as exc:
            return Attempt.failed(str(exc), took())
        body = encode_body(message.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vpsnap/{__version__}",
            # The URL names the checked address; the receiver still sees its own host name.
            "Host": destination.url.netloc.decode("ascii"),
            **signed_headers(endpoint.secret, message.id, body, datetime.now(UTC)),
        }
        target = destination.url.copy_with(host=str(destination.address))
        extensions = {"sni_hostname": destination.host} if destination.url.scheme == "https" else {}
        try:
            # httpx's timeout bounds each phase; this bounds the whole exchange.
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client,
                client.stream(
                    "POST", target, content=body.encode(), headers=headers, extensions=extensions
                ) as response,
            ):
                status = response.status_code  # the body is never read
        except (TimeoutError, httpx.TimeoutException):
            return Attempt.failed(f"no answer within {self.timeout:g} s", took())
        except httpx.HTTPError as exc:
            return Attempt.failed(f"{type(exc).__name__}: {exc}", took())
        delivered = 200 <= status < 300
        return Attempt(delivered, status, None if delivered else f"HTTP {status}", took())


@dataclass
class WebhookDispatcher:
    store: Store
    clock: Clock
    sender: WebhookSender
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    batch: int = 50
    concurrency: int = 8

    async def deliver_due(self) -> int:
        """Attempt every message due now (in batches); returns how many were attempted."""
        total = 0
        while True:
            attempted = await self.deliver_batch()
            total += attempted
            if attempted < self.batch:
                return total

    async def deliver_batch(self) -> int:
        now = self.clock.now()
        hold = now + timedelta(seconds=self.sender.timeout + 30)
        async with self.store.transaction() as tx:
            messages = await tx.claim_webhook_messages(now, hold, self.batch)
            endpoints = {
                m.endpoint_id: await tx.get_webhook_endpoint(m.endpoint_id) for m in messages
            }
        gate = asyncio.Semaphore(self.concurrency)

        async def one(message: WebhookMessage) -> None:
            endpoint = endpoints.get(message.endpoint_id)
            if endpoint is None:
                return  # deleted meanwhile, with its messages
            if not endpoint.enabled:
                await self._settle(message, None)
                return
            async with gate:
                attempt = await self.sender.attempt(endpoint, message)
            await self._settle(message, attempt)

        await asyncio.gather(*(one(m) for m in messages))
        return len(messages)

    async def _settle(self, message: WebhookMessage, attempt: Attempt | None) -> None:
        """Record an attempt (None: not attempted, the endpoint is disabled) and what follows."""
        now = self.clock.now()
        number = message.attempts + 1
        async with self.store.transaction() as tx:
            # Locked: messages of one endpoint settle one at a time, so it is disabled once.
            endpoint = await tx.get_webhook_endpoint(message.endpoint_id, lock=True)
            if endpoint is None:
                return
            if attempt is None:
                await tx.update_webhook_message(
                    dataclasses.replace(message, state=MessageState.FAILED, finished_at=now)
                )
                return
            outcome = DeliveryOutcome.DELIVERED if attempt.delivered else DeliveryOutcome.FAILED
            await tx.add_webhook_delivery(
                WebhookDelivery(
                    id=new_id("dlv"),
                    message_id=message.id,
                    endpoint_id=endpoint.id,
                    event_type=message.event_type,
                    attempt=number,
                    attempted_at=now,
                    outcome=outcome,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    duration_ms=attempt.duration_ms,
                )
            )
            if attempt.delivered:
                await tx.update_webhook_message(
                    dataclasses.replace(
                        message, state=MessageState.DELIVERED, attempts=number, finished_at=now
                    )
                )
                await tx.update_webhook_endpoint(dataclasses.replace(endpoint, last_success_at=now))
            else:
                next_at = self.retry.next_attempt(message, number, now)
                if next_at is not None:
                    updated = dataclasses.replace(message, attempts=number, next_attempt_at=next_at)
                else:
                    updated = dataclasses.replace(
                        message, state=MessageState.FAILED, attempts=number, finished_at=now
                    )
                await tx.update_webhook_message(updated)
                endpoint = dataclasses.replace(endpoint, last_failure_at=now)
                if (
                    next_at is None
                    and endpoint.enabled
                    and self._unreachable_all_window(endpoint, now)
                ):
                    await self._disable(tx, endpoint, now)
                else:
                    await tx.update_webhook_endpoint(endpoint)
        WEBHOOK_DELIVERIES.labels(outcome.value, message.event_type).inc()
        log.info(
            "webhook_delivered" if attempt.delivered else "webhook_attempt_failed",
            message_id=message.id,
            endpoint_id=message.endpoint_id,
            event_type=message.event_type,
            attempt=number,
            status=attempt.status_code,
            error=attempt.error,
        )

    def _unreachable_all_window(self, endpoint: WebhookEndpoint, now: datetime) -> bool:
        last = endpoint.last_success_at
        return last is None or last < now - self.retry.window

    async def _disable(self, tx: Transaction, endpoint: WebhookEndpoint, now: datetime) -> None:
        reason = (
            f"every delivery failed for {_duration(self.retry.window)}; delete the endpoint "
            "and create it again once the receiver works"
        )
        disabled = dataclasses.replace(
            endpoint, enabled=False, disabled_at=now, disabled_reason=reason
        )
        await tx.update_webhook_endpoint(disabled)
        await tx.fail_pending_webhook_messages(endpoint.id, now)
        await record(
            tx,
            now,
            SCHEDULER,
            AuditAction.WEBHOOK_DISABLE,
            account_id=endpoint.account_id,
            target=Target("webhook", endpoint.id),
            details={"url": endpoint.url, "reason": reason},
        )
        log.warning("webhook_endpoint_disabled", endpoint_id=endpoint.id, reason=reason)
