"""Gateway notifications: ``POST /webhooks/midtrans`` and ``POST /webhooks/stripe`` (no authorizer).

A notification is authenticated by its signature over the raw body, exactly as received (API
Gateway base64-encodes bodies that are not text). After that the gateway's status API, not the
notification, says what happened. Answers (API.md, Gateway notifications): 200 when the
notification was applied, was a verified duplicate or is not ours to act on (so the gateway stops
retrying); 401 ``invalid_signature`` with nothing changed; 503 ``gateway_unavailable`` when the
status API cannot be asked, so the gateway retries.

Bodies are never logged: a Midtrans notification may carry ``saved_token_id``, a reusable card
token. Logs keep the reference, event id, event type and outcome.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from tagih.api.app import create_resolver
from tagih.domain.errors import InvalidSignature
from tagih.domain.gateway_names import GatewayName
from tagih.gateways.registry import default_gateways
from tagih.observability import TRACED_LIBRARIES
from tagih.services import notifications, settlement
from tagih.store.gateway_events import default_gateway_event_items
from tagih.store.payments import default_payment_items
from tagih.wiring import default_billing

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
app = create_resolver("gateway_webhooks", authenticated=False)

TAGS = ["Gateway notifications"]
RESPONSES: dict[int, OpenAPIResponse] = {
    401: {"description": "`invalid_signature`: the signature does not verify; nothing changed."},
    503: {"description": "`gateway_unavailable`: the gateway's status API did not answer; retry."},
}


class NotificationReceived(BaseModel):
    received: Literal[True] = True
    result: Literal["settled", "failed", "duplicate", "ignored"] = Field(
        description="What the notification did: `settled` or `failed` changed a payment; "
        "`duplicate` and `ignored` changed nothing."
    )


def raw_body() -> bytes:
    """The body as the gateway sent it: signatures are over these exact bytes."""
    event = app.current_event
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSignature() from None
    return str(body).encode("utf-8")


def receive(gateway: GatewayName) -> NotificationReceived:
    try:
        outcome = notifications.receive_notification(
            default_gateways().get(gateway),
            default_payment_items(),
            default_gateway_event_items(),
            dict(app.current_event.headers or {}),
            raw_body(),
            listener=settlement.BillingPaymentListener(default_billing()),
        )
    except InvalidSignature:
        logger.warning("gateway notification with an invalid signature", extra={"gateway": gateway})
        metrics.add_metric(name="Notification_invalid_signature", unit=MetricUnit.Count, value=1)
        raise
    payment = outcome.payment
    log = logger.warning if outcome.needs_review else logger.info
    log(
        "gateway notification needs review" if outcome.needs_review else "gateway notification",
        extra={
            "gateway": gateway,
            "result": outcome.kind,
            "reason": outcome.reason,
            "reference": payment.reference if payment else None,
            "payment_status": payment.status if payment else None,
        },
    )
    metrics.add_metric(name=f"Notification_{outcome.kind}", unit=MetricUnit.Count, value=1)
    if outcome.needs_review:  # an alarm on this metric tells a person to reconcile the payment
        metrics.add_metric(name="Notification_needs_review", unit=MetricUnit.Count, value=1)
    return NotificationReceived(result=outcome.kind)


@app.post(
    "/webhooks/midtrans",
    summary="Midtrans HTTP notification",
    description="Checks `signature_key`, then applies the status from Midtrans' status API.",
    tags=TAGS,
    responses=RESPONSES,
)
def midtrans_notification() -> NotificationReceived:
    return receive("midtrans")


@app.post(
    "/webhooks/stripe",
    summary="Stripe event",
    description="Verifies `Stripe-Signature` (300 s tolerance, no future timestamps), deduplicates by "
    "event id, then applies the PaymentIntent's status as Stripe's API reports it.",
    tags=TAGS,
    responses=RESPONSES,
)
def stripe_notification() -> NotificationReceived:
    return receive("stripe")


# Neither the event nor the response goes to logs or traces: bodies may hold card tokens.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
