"""The billing webhook: a signed JSON POST to the operator's billing system.

Signed per the Standard Webhooks specification, as the tenants' webhooks are
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; ``vpsnap.events.delivery``):
the timestamp is part of what is signed, so a captured request cannot be replayed later. One
POST per event, no retries (the customer's request is waiting; they retry it). Any 2xx answer
confirms; anything else (another status, a timeout, a refused connection) is
``BillingUnavailable`` and the change is not applied. See ``docs/capacity.md`` for the payload
and how to verify the signature.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import structlog

from vpsnap import __version__
from vpsnap.domain.capacity import (
    SLOTS_CHANGE_ABORTED_EVENT,
    SLOTS_CHANGED_EVENT,
    BillingGateway,
    PriceChange,
    SlotChange,
    format_amount,
)
from vpsnap.domain.clock import Clock, SystemClock, format_timestamp
from vpsnap.domain.errors import BillingConfigError, BillingUnavailable
from vpsnap.domain.ids import new_id
from vpsnap.events.delivery import signed_headers
from vpsnap.settings import Settings

log = structlog.get_logger("vpsnap.billing")


def price_change_json(change: PriceChange) -> dict[str, str]:
    return {
        "amount": format_amount(change.amount),
        "recurringAmount": format_amount(change.recurring_amount),
        "additionalRecurringAmount": format_amount(change.additional_recurring_amount),
        "currencyCode": change.currency_code,
        "billingCycle": change.billing_cycle,
    }


def event_payload(event: str, change: SlotChange, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "id": change.id,
        "vpsId": change.vps_id,
        "accountId": change.account_id,
        "from": change.from_slots,
        "to": change.to_slots,
        "priceChange": price_change_json(change.price_change),
        "cancelExistingInvoice": change.cancel_existing_invoice,
        "occurredAt": format_timestamp(change.occurred_at),
        **extra,
    }


class NoBillingGateway:
    """No billing system configured: every change is accepted as it is."""

    # Nothing to send without a billing system: the arguments are the protocol's.
    async def slots_changing(self, change: SlotChange) -> None:  # noqa: ARG002
        return None

    async def slots_change_aborted(self, change: SlotChange, reason: str) -> None:  # noqa: ARG002
        return None


class WebhookBillingGateway:
    def __init__(
        self, url: str, secret: str, *, timeout: float, clock: Clock | None = None
    ) -> None:
        self.url = url
        self._secret = secret
        self.timeout = timeout
        self._clock = clock or SystemClock()

    async def slots_changing(self, change: SlotChange) -> None:
        await self._deliver(event_payload(SLOTS_CHANGED_EVENT, change))

    async def slots_change_aborted(self, change: SlotChange, reason: str) -> None:
        await self._deliver(event_payload(SLOTS_CHANGE_ABORTED_EVENT, change, reason=reason))

    async def _deliver(self, payload: dict[str, Any]) -> None:
        import httpx  # noqa: PLC0415 - not at start-up: ~40-60 ms of imports (rich, pygments, idna)

        body = json.dumps(payload, separators=(",", ":"))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vpsnap/{__version__}",
            # Wall-clock time, not the injected clock: the receiver checks it against its own.
            **signed_headers(self._secret, new_id("msg"), body, datetime.now(UTC)),
        }
        context = {"webhook_event": payload["event"], "change_id": payload["id"], "url": self.url}
        try:
            # httpx's timeout bounds each phase (connect, each read); this bounds the whole
            # exchange, so a receiver that trickles bytes cannot hold the request open.
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client,
            ):
                response = await client.post(self.url, content=body.encode(), headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            log.warning("billing_webhook_failed", error="timeout", **context)
            raise BillingUnavailable(
                f"The billing system did not answer within {self.timeout:g} s; nothing was "
                "changed. Retry later."
            ) from None
        except httpx.HTTPError as exc:
            log.warning("billing_webhook_failed", error=type(exc).__name__, **context)
            raise BillingUnavailable(
                "The billing system could not be reached; nothing was changed. Retry later."
            ) from None
        if not response.is_success:
            log.warning("billing_webhook_failed", status=response.status_code, **context)
            raise BillingUnavailable(
                f"The billing system did not confirm the change (HTTP {response.status_code}); "
                "nothing was changed."
            )
        log.info("billing_webhook_delivered", status=response.status_code, **context)


def billing_gateway(settings: Settings, clock: Clock | None = None) -> BillingGateway:
    """The gateway the settings ask for; raises ``BillingConfigError`` when they cannot work."""
    url = settings.billing_webhook_url
    if not url:
        return NoBillingGateway()
    import httpx  # noqa: PLC0415 - only when billing is configured (see _deliver)

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise BillingConfigError(f"VPSNAP_BILLING_WEBHOOK_URL is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BillingConfigError(
            f"VPSNAP_BILLING_WEBHOOK_URL must be an http:// or https:// URL, got {url!r}"
        )
    if not settings.billing_webhook_secret:
        # An unsigned webhook would let anyone who can reach billing forge capacity changes.
        raise BillingConfigError(
            "VPSNAP_BILLING_WEBHOOK_SECRET is required when VPSNAP_BILLING_WEBHOOK_URL is set"
        )
    if settings.billing_webhook_timeout_seconds <= 0:
        raise BillingConfigError("VPSNAP_BILLING_WEBHOOK_TIMEOUT_SECONDS must be positive")
    return WebhookBillingGateway(
        url,
        settings.billing_webhook_secret,
        timeout=settings.billing_webhook_timeout_seconds,
        clock=clock,
    )
