"""Webhooks: endpoints a tenant registers, the events they receive, and the retry policy.

Events are signed per the Standard Webhooks specification (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``; https://www.standardwebhooks.com) and delivered
from a transactional outbox (``vpsnap.events``). docs/webhooks.md is the reference.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class WebhookEventType(StrEnum):
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    SNAPSHOT_CREATED = "snapshot.created"
    SNAPSHOT_RESTORED = "snapshot.restored"
    SNAPSHOT_DELETED = "snapshot.deleted"
    SNAPSHOT_EXPIRED = "snapshot.expired"
    WEBHOOK_TEST = "webhook.test"
    """Sent only by ``POST /api/v2/webhooks/{id}/actions/test``, to that endpoint alone."""


SUBSCRIBABLE_EVENTS: tuple[WebhookEventType, ...] = tuple(
    e for e in WebhookEventType if e is not WebhookEventType.WEBHOOK_TEST
)


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: str
    account_id: str
    url: str
    event_types: frozenset[str]
    secret: str
    """``whsec_`` + base64 of 24 random bytes (the Standard Webhooks form)."""
    enabled: bool
    created_at: datetime
    description: str | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    def wants(self, event_type: str) -> bool:
        return self.enabled and event_type in self.event_types


class MessageState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up: every attempt within the retry window failed, or the endpoint was disabled."""


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """One event for one endpoint (its id is the ``webhook-id``; retries keep it)."""

    id: str
    endpoint_id: str
    account_id: str
    event_type: str
    payload: dict[str, Any]
    state: MessageState
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None = None


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One HTTP attempt to deliver a message."""

    id: str
    message_id: str
    endpoint_id: str
    event_type: str
    attempt: int
    attempted_at: datetime
    outcome: DeliveryOutcome
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff over a window.

    After failed attempt ``n`` (1-based) the next one comes ``min(cap, base * 2**(n-1))`` later,
    less up to ``jitter`` of it (so that endpoints that failed together do not retry
    together). A message still undelivered ``window`` after it was written is given up; an
    endpoint whose messages are given up without any delivery succeeding within that window
    is disabled.
    """

    base: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(hours=1)
    window: timedelta = timedelta(days=1)
    jitter: float = 0.1
    _random: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> timedelta:
        """The wait after failed attempt ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 40)  # 2**40 seconds exceeds any cap
        full: timedelta = min(self.cap, self.base * (2**exponent))
        cut: timedelta = full * (self.jitter * self._random.random())
        return full - cut

    def next_attempt(self, message: WebhookMessage, attempt: int, now: datetime) -> datetime | None:
        """When to try again after failed attempt ``attempt``; None when the window is over."""
        deadline = message.created_at + self.window
        if now >= deadline:
            return None
        return min(now + self.delay(attempt), deadline)
