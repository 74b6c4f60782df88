"""``/api/v2/webhooks``: the account's webhook endpoints, a test event, delivery attempts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from vpsnap.api.deps import ServicesDep, require
from vpsnap.api.openapi import problem_responses
from vpsnap.api.ops_schemas import (
    CreatedWebhookOut,
    DeliveryOut,
    DeliveryPageOut,
    WebhookIn,
    WebhookListOut,
    WebhookOut,
    WebhookTestOut,
)
from vpsnap.api.params import CursorParam, WebhookIdPath
from vpsnap.domain.auth import Principal, Scope

router = APIRouter(prefix="/api/v2/webhooks", tags=["Webhooks"])

WriteVm = Annotated[Principal, Depends(require(Scope.WRITE_VM))]


@router.get(
    "",
    operation_id="listWebhooks",
    response_model=WebhookListOut,
    responses=problem_responses("forbidden"),
)
async def list_webhooks(principal: WriteVm, services: ServicesDep) -> WebhookListOut:
    """The account's webhook endpoints (secrets are never shown again)."""
    return WebhookListOut(data=[WebhookOut.of(e) for e in await services.webhooks.list(principal)])


@router.post(
    "",
    operation_id="createWebhook",
    status_code=201,
    response_model=CreatedWebhookOut,
    responses=problem_responses("invalid_request", "forbidden", "conflict"),
)
async def create_webhook(
    body: WebhookIn, principal: WriteVm, services: ServicesDep
) -> CreatedWebhookOut:
    """Register an endpoint. The answer holds its signing secret, shown this once."""
    created = await services.webhooks.create(
        principal, body.url, body.event_types, body.description
    )
    return CreatedWebhookOut(**WebhookOut.of(created.endpoint).model_dump(), secret=created.secret)


@router.get(
    "/{webhook_id}",
    operation_id="getWebhook",
    response_model=WebhookOut,
    responses=problem_responses("forbidden", "webhook_not_found"),
)
async def get_webhook(
    webhook_id: WebhookIdPath, principal: WriteVm, services: ServicesDep
) -> WebhookOut:
    """One endpoint: its events, whether it is enabled, its last success and failure."""
    return WebhookOut.of(await services.webhooks.get(principal, webhook_id))


@router.delete(
    "/{webhook_id}",
    operation_id="deleteWebhook",
    status_code=204,
    response_class=Response,
    responses=problem_responses("forbidden", "webhook_not_found"),
)
async def delete_webhook(
    webhook_id: WebhookIdPath, principal: WriteVm, services: ServicesDep
) -> Response:
    """Remove the endpoint; undelivered events for it are dropped."""
    await services.webhooks.delete(principal, webhook_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/actions/test",
    operation_id="testWebhook",
    status_code=202,
    response_model=WebhookTestOut,
    responses=problem_responses("forbidden", "webhook_not_found"),
)
async def test_webhook(
    webhook_id: WebhookIdPath, principal: WriteVm, services: ServicesDep
) -> WebhookTestOut:
    """Queue a signed `webhook.test` event for this endpoint; its delivery shows up in
    `deliveries` within seconds."""
    message = await services.webhooks.test(principal, webhook_id)
    return WebhookTestOut(message_id=message.id, event_type=message.event_type)


@router.get(
    "/{webhook_id}/deliveries",
    operation_id="listWebhookDeliveries",
    response_model=DeliveryPageOut,
    responses=problem_responses(
        "invalid_request", "invalid_cursor", "forbidden", "webhook_not_found"
    ),
)
async def list_deliveries(
    webhook_id: WebhookIdPath,
    principal: WriteVm,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorParam = None,
) -> DeliveryPageOut:
    """Delivery attempts, newest first: status code or error, duration, attempt number."""
    page = await services.webhooks.deliveries(principal, webhook_id, cursor, limit)
    return DeliveryPageOut(
        data=[DeliveryOut.of(d) for d in page.items],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )
