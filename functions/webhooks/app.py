"""Tenant webhook endpoints: create (the secret shown once), list, delete, rotate the secret, send a
test event, read the delivery log. Owners and admins write; any member reads.

Neither events nor responses are logged or traced: create and rotate answers carry a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from tagih import clock
from tagih.api.app import RoutePolicy, create_resolver
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.config import get_settings
from tagih.domain.text import RequestBody
from tagih.domain.webhook_urls import system_resolver
from tagih.domain.webhooks import Delivery, DeliveryStatus, WebhookEndpoint
from tagih.events.models import EventType
from tagih.gateways.webhook_queue import default_delivery_queue
from tagih.observability import TRACED_LIBRARIES
from tagih.services import webhooks
from tagih.store.webhooks import default_delivery_items, default_webhook_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
SHOWS_SECRET = RoutePolicy(role="admin", secret_fields=("secret",))
app = create_resolver(
    "webhooks",
    policies={
        "POST /billing/webhooks": SHOWS_SECRET,
        "POST /billing/webhooks/{webhook_id}/rotate-secret": SHOWS_SECRET,
    },
)

TAGS = ["Webhooks"]
WebhookId = Annotated[str, Path(min_length=1, max_length=64)]


class CreateWebhook(RequestBody):
    multiline_fields = frozenset({"description"})

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="An https URL whose host resolves to public addresses only.",
        examples=["https://example.com/tagih/webhooks"],
    )
    events: list[EventType | Literal["*"]] = Field(
        min_length=1,
        max_length=20,
        description='Event types to receive, or `["*"]` for all.',
        # `*` only alone (tagih.domain.webhooks refuses it beside others), stated for the schema.
        json_schema_extra={"if": {"contains": {"const": "*"}}, "then": {"maxItems": 1}},
    )
    description: Annotated[str, Field(max_length=200)] | None = None


class WebhookView(BaseModel):
    id: str = Field(examples=["wh_3kTMd9Qz1vXbR7pL0aYc"])
    url: str
    events: list[str]
    description: str | None
    previous_secret_expires_at: datetime | None = Field(
        description="Until then, after a rotation, deliveries are signed with the previous secret too."
    )
    created_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookView:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=list(endpoint.events),
            description=endpoint.description,
            previous_secret_expires_at=_seconds(endpoint.overlap_ends_at(clock.now())),
            created_at=endpoint.created_at.replace(microsecond=0),  # the API's whole seconds
        )


class WebhookWithSecret(WebhookView):
    secret: str | None = Field(
        description="The signing secret (`whsec_…`), shown only in this response; `null` when the "
        "response is an Idempotency-Key replay.",
        examples=["whsec_9yQ2rT6vXbL0aYcK3kTMd9Qz1vXbR7pL0aYcK3kTMd9"],
    )


class DeletedWebhook(BaseModel):
    id: str
    deleted: Literal[True] = True


class AttemptView(BaseModel):
    number: int
    at: datetime
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None


class DeliveryView(BaseModel):
    id: str = Field(examples=["whd_3kTMd9Qz1vXbR7pL0aYc"])
    webhook_id: str
    event_id: str
    event_type: str
    sequence: int
    status: DeliveryStatus
    attempts: list[AttemptView]
    next_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryView:
        return cls(
            id=delivery.id,
            webhook_id=delivery.webhook_id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            sequence=delivery.sequence,
            status=delivery.status,
            attempts=[
                AttemptView(**a.model_dump(exclude={"at"}), at=a.at.replace(microsecond=0))
                for a in delivery.attempts
            ],
            next_attempt_at=_seconds(delivery.next_attempt_at),
            created_at=delivery.created_at.replace(microsecond=0),
        )


def _seconds(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(microsecond=0)


# -- routes ------------------------------------------------------------------------------------------
@app.post("/billing/webhooks", status_code=201, summary="Create a webhook endpoint", tags=TAGS)
def create_webhook(body: CreateWebhook) -> WebhookWithSecret:
    settings = get_settings()
    endpoint = webhooks.create_webhook(
        default_webhook_items(),
        organization_id=app.auth.organization_id,
        url=body.url,
        events=body.events,
        description=body.description,
        now=clock.now(),
        resolve=system_resolver,
        allow_loopback=settings.webhook_allow_loopback and not settings.is_prod,
    )
    logger.info("webhook endpoint created", extra={"webhook_id": endpoint.id, "events": endpoint.events})
    return WebhookWithSecret(**WebhookView.of(endpoint).model_dump(), secret=endpoint.secret)


@app.get("/billing/webhooks", summary="List webhook endpoints", tags=TAGS)
def list_webhooks(page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE) -> Page[WebhookView]:
    found = webhooks.list_webhooks(default_webhook_items(), app.auth.organization_id)
    return paginate([WebhookView.of(e) for e in found], page, page_size)


@app.delete("/billing/webhooks/<webhook_id>", summary="Delete a webhook endpoint", tags=TAGS)
def delete_webhook(webhook_id: WebhookId) -> DeletedWebhook:
    webhooks.delete_webhook(default_webhook_items(), app.auth.organization_id, webhook_id)
    logger.info("webhook endpoint deleted", extra={"webhook_id": webhook_id})
    return DeletedWebhook(id=webhook_id)


@app.post(
    "/billing/webhooks/<webhook_id>/rotate-secret",
    summary="Rotate an endpoint's signing secret",
    description="Returns the new secret, shown only here. The previous secret stays valid for 24 h: "
    "until `previous_secret_expires_at`, `Tagih-Signature` carries a `v1` for each secret.",
    tags=TAGS,
)
def rotate_secret(webhook_id: WebhookId) -> WebhookWithSecret:
    endpoint = webhooks.rotate_secret(
        default_webhook_items(), app.auth.organization_id, webhook_id, clock.now()
    )
    logger.info("webhook secret rotated", extra={"webhook_id": endpoint.id})
    return WebhookWithSecret(**WebhookView.of(endpoint).model_dump(), secret=endpoint.secret)


@app.post(
    "/billing/webhooks/<webhook_id>/test",
    status_code=202,
    summary="Send a test event",
    description="Queues a `billing.webhook.test` event for this endpoint alone; it is delivered, "
    "signed and retried like any event. Follow it in the endpoint's deliveries.",
    tags=TAGS,
)
def send_test_event(webhook_id: WebhookId) -> DeliveryView:
    delivery = webhooks.send_test_event(
        default_webhook_items(),
        default_delivery_items(),
        default_delivery_queue(),
        organization_id=app.auth.organization_id,
        webhook_id=webhook_id,
        now=clock.now(),
    )
    logger.info("webhook test event queued", extra={"webhook_id": webhook_id, "event_id": delivery.event_id})
    return DeliveryView.of(delivery)


@app.get(
    "/billing/webhooks/<webhook_id>/deliveries",
    summary="List an endpoint's deliveries",
    description="Newest event first, each with every attempt (status, latency, response excerpt); "
    "kept 30 days.",
    tags=TAGS,
)
def list_deliveries(
    webhook_id: WebhookId, page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE
) -> Page[DeliveryView]:
    found = webhooks.list_deliveries(
        default_webhook_items(), default_delivery_items(), app.auth.organization_id, webhook_id
    )
    return paginate([DeliveryView.of(d) for d in found], page, page_size)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
