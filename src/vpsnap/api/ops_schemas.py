"""Request and response bodies of the operations endpoints: audit events and webhooks."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from vpsnap.api.schemas import ApiModel, RequestModel, Timestamp
from vpsnap.domain.audit import Actor, AuditEvent
from vpsnap.domain.webhooks import SUBSCRIBABLE_EVENTS, WebhookDelivery, WebhookEndpoint


class ActorOut(ApiModel):
    kind: str = Field(examples=["api_key"])
    id: str = Field(examples=["key_01hxa3b4c5d6e7f8g9h0j1k2m3"])
    label: str | None

    @classmethod
    def of(cls, actor: Actor) -> ActorOut:
        return cls(kind=actor.kind.value, id=actor.id, label=actor.label)


class TargetOut(ApiModel):
    type: str = Field(examples=["snapshot"])
    id: str = Field(examples=["before-upgrade"])


class AuditEventOut(ApiModel):
    id: str = Field(examples=["aud_01hxa3b4c5d6e7f8g9h0j1k2m3"])
    occurred_at: Timestamp
    actor: ActorOut
    action: str = Field(examples=["snapshot.create"])
    outcome: str = Field(examples=["succeeded"])
    target: TargetOut | None
    vps_id: str | None
    request_id: str | None
    client_ip: str | None
    problem_code: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            occurred_at=event.occurred_at,
            actor=ActorOut.of(event.actor),
            action=event.action,
            outcome=event.outcome.value,
            target=TargetOut(type=event.target.type, id=event.target.id) if event.target else None,
            vps_id=event.vps_id,
            request_id=event.request_id,
            client_ip=event.client_ip,
            problem_code=event.problem_code,
            details=event.details,
        )


class AuditPageOut(ApiModel):
    data: list[AuditEventOut]
    has_more: bool
    next_cursor: str | None


_EVENTS = ", ".join(e.value for e in SUBSCRIBABLE_EVENTS)


class WebhookIn(RequestModel):
    url: str = Field(
        min_length=1,
        max_length=2000,
        examples=["https://hooks.example.com/vpsnap"],
        description="http(s) URL; must resolve to public addresses unless the operator allows "
        "more.",
    )
    event_types: list[str] | None = Field(
        default=None,
        max_length=len(SUBSCRIBABLE_EVENTS),
        description=f"Events to receive (default: all of {_EVENTS}).",
    )
    description: str | None = Field(default=None, max_length=255)


class WebhookOut(ApiModel):
    id: str = Field(examples=["whk_01hxa3b4c5d6e7f8g9h0j1k2m3"])
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    created_at: Timestamp
    last_success_at: Timestamp | None
    last_failure_at: Timestamp | None
    disabled_at: Timestamp | None
    disabled_reason: str | None

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookOut:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            description=endpoint.description,
            event_types=sorted(endpoint.event_types),
            enabled=endpoint.enabled,
            created_at=endpoint.created_at,
            last_success_at=endpoint.last_success_at,
            last_failure_at=endpoint.last_failure_at,
            disabled_at=endpoint.disabled_at,
            disabled_reason=endpoint.disabled_reason,
        )


class CreatedWebhookOut(WebhookOut):
    secret: str = Field(
        description="The signing secret (Standard Webhooks, `whsec_…`). Shown only here: "
        "store it now."
    )


class WebhookListOut(ApiModel):
    data: list[WebhookOut]


class WebhookTestOut(ApiModel):
    message_id: str = Field(description="The `webhook-id` the test event is sent with.")
    event_type: str


class DeliveryOut(ApiModel):
    id: str = Field(examples=["dlv_01hxa3b4c5d6e7f8g9h0j1k2m3"])
    message_id: str = Field(description="The `webhook-id` header of the attempt.")
    event_type: str
    attempt: int
    attempted_at: Timestamp
    outcome: str = Field(examples=["delivered", "failed"])
    status_code: int | None
    error: str | None
    duration_ms: int

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=delivery.id,
            message_id=delivery.message_id,
            event_type=delivery.event_type,
            attempt=delivery.attempt,
            attempted_at=delivery.attempted_at,
            outcome=delivery.outcome.value,
            status_code=delivery.status_code,
            error=delivery.error,
            duration_ms=delivery.duration_ms,
        )


class DeliveryPageOut(ApiModel):
    data: list[DeliveryOut]
    has_more: bool
    next_cursor: str | None
