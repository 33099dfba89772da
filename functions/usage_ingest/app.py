"""Usage from the product's own producers: EventBridge ``tagih.usage`` events → SQS → this batch.

Each SQS message is one EventBridge event whose ``detail`` is ``{organization_id, events: [...]}``
(the body of ``POST /billing/usage/events`` plus the organization). Records are parsed one by one
with Powertools' batch processing, so a malformed message fails alone (and reaches the dead-letter
queue after its retries); then each organization's events of the whole batch are written together,
aggregated per metric and day. An organization whose write fails fails only its own messages
(partial batch response): they come back and are counted once, as ids are claimed with the counts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from tagih import clock
from tagih.config import get_settings
from tagih.domain.text import ORGANIZATION_ID_PATTERN, RequestBody
from tagih.domain.usage import MAX_EVENTS, UsageEvent
from tagih.events.publisher import default_publisher
from tagih.observability import TRACED_LIBRARIES
from tagih.services import usage
from tagih.store.test_clocks import frozen_time_of
from tagih.store.usage import default_terms, default_usage_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()


class UsageReport(RequestBody):
    """The ``detail`` of a ``tagih.usage`` EventBridge event."""

    organization_id: str = Field(min_length=1, max_length=128, pattern=ORGANIZATION_ID_PATTERN)
    events: list[UsageEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class OrganizationBatches(BatchProcessor):
    """Powertools' SQS batch processor whose records are written per organization, together."""

    def __init__(self, write: Callable[[str, list[UsageEvent]], None]) -> None:
        super().__init__(event_type=EventType.SQS)
        self._write = write

    def process(self) -> list[tuple[Any, ...]]:
        results = super().process()  # each record parsed alone: a malformed one fails alone
        parsed: dict[str, list[tuple[dict[str, Any], UsageReport]]] = {}
        for status, report, record in results:
            if status == "success":
                parsed.setdefault(report.organization_id, []).append((record, report))
        for organization_id, reports in parsed.items():
            try:
                self._write(organization_id, [event for _, report in reports for event in report.events])
            except Exception:
                logger.exception("usage not written", extra={"organization_id": organization_id})
                failure = sys.exc_info()
                for record, _ in reports:
                    self.success_messages.remove(record)  # type: ignore[arg-type]  # raw records, as stored
                    self.failure_handler(SQSRecord(record), failure)
        return results


def parse(record: SQSRecord) -> UsageReport:
    return UsageReport.model_validate(json.loads(record.body)["detail"])


def now_for(organization_id: str) -> datetime:
    """The organization's test clock outside prod (as the API kernel does), else wall time."""
    frozen = None if get_settings().is_prod else frozen_time_of(organization_id)
    return frozen or clock.now()


def write(organization_id: str, events: list[UsageEvent]) -> None:
    receipt = usage.report_usage(
        organization_id,
        events,
        store=default_usage_items(),
        terms=default_terms(),
        publisher=default_publisher(),
        now=now_for(organization_id),
    )
    metrics.add_metric(name="UsageEventsAccepted", unit=MetricUnit.Count, value=receipt.accepted)
    log = logger.warning if receipt.rejected else logger.info
    log(
        "usage ingested",
        extra={
            "organization_id": organization_id,
            "accepted": receipt.accepted,
            "duplicates": receipt.duplicates,
            "rejected": [r.model_dump() for r in receipt.rejected],
        },
    )


processor = OrganizationBatches(write)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=parse, processor=processor, context=context)
