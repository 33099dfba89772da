"""The webhook dispatcher: two SQS sources, one handler (``domain.webhooks`` explains the design).

- the events queue (an EventBridge rule on the billing bus): each billing event fans out into one
  delivery per subscribed endpoint, each queued for its first attempt;
- the delivery queue: each message is one attempt of one delivery, retried by a delayed message.

A record that raises is reported as a batch item failure: SQS hands it back after the visibility
timeout and, after the redrive policy's receives, keeps it in the dead-letter queue. A failed
delivery (an endpoint that never answered 2xx within the window) is not an error of the handler.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih import clock
from tagih.config import get_settings
from tagih.domain.webhook_urls import system_resolver
from tagih.domain.webhooks import DeliveryRef, RetryPolicy
from tagih.events.models import BillingEvent
from tagih.gateways.webhook_http import HttpTransport
from tagih.gateways.webhook_queue import default_delivery_queue
from tagih.observability import TRACED_LIBRARIES
from tagih.services import webhooks
from tagih.store.webhooks import default_delivery_items, default_webhook_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
# Every failed record is reported, even when all failed (no exception): SQS retries exactly those.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
transport = HttpTransport()


def handle_record(record: SQSRecord) -> None:
    message: dict[str, Any] = json.loads(record.body)
    if "detail-type" in message:  # an EventBridge event, from the events queue
        event = BillingEvent.model_validate(message["detail"])
        queued = webhooks.fan_out(
            event, default_webhook_items(), default_delivery_items(), default_delivery_queue(), clock.now()
        )
        logger.info(
            "event fanned out", extra={"event_id": event.id, "type": event.type, "deliveries": len(queued)}
        )
        return
    ref = DeliveryRef.model_validate(message)
    settings = get_settings()
    outcome = webhooks.attempt_delivery(
        ref,
        store=default_webhook_items(),
        deliveries=default_delivery_items(),
        queue=default_delivery_queue(),
        transport=transport,
        resolve=system_resolver,
        policy=RetryPolicy(
            base_seconds=settings.webhook_retry_base_seconds,
            max_delay_seconds=settings.webhook_retry_max_delay_seconds,
            window_seconds=settings.webhook_retry_window_seconds,
        ),
        allow_loopback=settings.webhook_allow_loopback and not settings.is_prod,
        timeout_seconds=settings.webhook_timeout_seconds,
        now=clock.now,
    )
    logger.info(
        "delivery attempt",
        extra={
            "webhook_id": ref.webhook_id,
            "event_id": ref.event_id,
            "attempt": ref.attempt,
            "outcome": outcome,
        },
    )
    if outcome in ("succeeded", "retry_scheduled", "failed"):
        metrics.add_metric(name=f"WebhookAttempt_{outcome}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=handle_record, processor=processor, context=context
        )
    )
