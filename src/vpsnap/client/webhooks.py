"""``client.webhooks``: the account's webhook endpoints (job and snapshot events, signed per
Standard Webhooks), a test event, and the delivery attempts (docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from vpsnap.client._http import exchange, fetch
from vpsnap.client._plan import Plan, get, mutation
from vpsnap.client._runners import (
    Bound,
    M,
    Page,
    PageQuery,
    Runner,
    api_method,
    api_pager,
    page_query,
)
from vpsnap.client.models import CreatedWebhook, Raw, Webhook, WebhookDelivery, WebhookTest

WebhookRef = str | Webhook
"""A webhook endpoint: a ``Webhook`` or its id (``whk_…``)."""

EVENT_TYPES = (
    "job.completed",
    "job.failed",
    "snapshot.created",
    "snapshot.restored",
    "snapshot.deleted",
    "snapshot.expired",
)
"""What an endpoint can subscribe to (all of them by default)."""


def webhook_path(webhook: WebhookRef, *rest: str) -> str:
    webhook_id = webhook.id if isinstance(webhook, Webhook) else webhook
    parts = [quote(webhook_id, safe=""), *(quote(p, safe="") for p in rest)]
    return "/".join(["/api/v2/webhooks", *parts])


def parse_delivery_page(raw: Raw) -> Page[WebhookDelivery]:
    items = tuple(WebhookDelivery.parse(item) for item in raw["data"])
    return Page(items, raw["nextCursor"] if raw["hasMore"] else None)


class Webhooks(Bound[M]):
    """``client.webhooks``. Every call needs the scope ``write:vm`` (``Forbidden`` without
    it); an endpoint of another account, or none, raises ``WebhookNotFound``."""

    def __init__(self, runner: Runner[M]) -> None:
        self._runner = runner

    def _list(self) -> Plan[tuple[Webhook, ...]]:
        """``GET /api/v2/webhooks``: the account's endpoints (at most 10; never a secret)."""
        return (
            yield from fetch(
                get("/api/v2/webhooks"),
                self._runner.policy,
                lambda raw: tuple(Webhook.parse(item) for item in raw["data"]),
            )
        )

    list = api_method(_list)

    def _create(
        self,
        url: str,
        *,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Plan[CreatedWebhook]:
        """``POST /api/v2/webhooks``: register an endpoint for ``event_types`` (default: all
        of ``EVENT_TYPES``). The answer carries the signing ``secret``, shown this once.

        Raises ``InvalidRequest`` for a URL that is not http(s), or resolves to an address the
        operator does not allow (loopback, private, link-local: field ``/url``, code
        ``not_allowed``), or for an unknown event type (field ``/eventTypes/<index>``);
        ``Conflict`` when the account has its 10 endpoints already."""
        body: dict[str, Any] = {"url": url}
        if event_types is not None:
            body["eventTypes"] = [str(e) for e in event_types]
        if description is not None:
            body["description"] = description
        return (
            yield from fetch(
                mutation("POST", "/api/v2/webhooks", body),
                self._runner.policy,
                CreatedWebhook.parse,
            )
        )

    create = api_method(_create)

    def _get(self, webhook: WebhookRef) -> Plan[Webhook]:
        """``GET /api/v2/webhooks/{id}``: one endpoint as it is now (whether it is enabled,
        its last success and failure). Raises ``WebhookNotFound``."""
        return (yield from fetch(get(webhook_path(webhook)), self._runner.policy, Webhook.parse))

    get = api_method(_get)

    def _delete(self, webhook: WebhookRef) -> Plan[None]:
        """``DELETE /api/v2/webhooks/{id}``: remove the endpoint; its undelivered events are
        dropped and its delivery history removed. Raises ``WebhookNotFound``."""
        yield from exchange(mutation("DELETE", webhook_path(webhook)), self._runner.policy)

    delete = api_method(_delete)

    def _test(self, webhook: WebhookRef) -> Plan[WebhookTest]:
        """``POST /api/v2/webhooks/{id}/actions/test``: queue a signed ``webhook.test`` event
        for this endpoint alone; its attempt shows up in ``deliveries`` within seconds.
        Raises ``WebhookNotFound``."""
        return (
            yield from fetch(
                mutation("POST", webhook_path(webhook, "actions", "test")),
                self._runner.policy,
                WebhookTest.parse,
            )
        )

    test = api_method(_test)

    def _deliveries(
        self, webhook: WebhookRef, *, limit: int = 20, cursor: str | None = None
    ) -> PageQuery[WebhookDelivery]:
        """``GET /api/v2/webhooks/{id}/deliveries``: the endpoint's delivery attempts, newest
        first, as a lazy iterator over pages of ``limit`` (1..100). Nothing is sent until it
        is iterated; then ``WebhookNotFound`` for an unknown endpoint, ``InvalidRequest``
        (code ``invalid_cursor``) for a cursor the server did not give."""
        runner = self._runner
        path = webhook_path(webhook, "deliveries")

        def page(at: str | None, size: int) -> Plan[Page[WebhookDelivery]]:
            params = {"limit": str(size), "cursor": at}
            return (yield from fetch(get(path, params), runner.policy, parse_delivery_page))

        return page_query(page, limit, cursor)

    deliveries = api_pager(_deliveries)
