"""Publishing billing events on the stack's EventBridge bus.

Services receive an ``EventPublisher`` and call it after their write committed. A failed publish
is logged and does not undo the change the caller already made (the event would describe a fact
that is true); EventBridge's own retries and the bus archive cover transient loss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import boto3
from aws_lambda_powertools import Logger

from tagih.config import get_settings
from tagih.events.models import SOURCE, BillingEvent, EventPublisher

if TYPE_CHECKING:
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

logger = Logger()
BATCH = 10  # PutEvents takes at most ten entries


class EventBridgePublisher:
    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish(self, events: Sequence[BillingEvent]) -> None:
        for start in range(0, len(events), BATCH):
            batch = events[start : start + BATCH]
            entries: list[PutEventsRequestEntryTypeDef] = [
                {
                    "Source": SOURCE,
                    "DetailType": event.type,
                    "Detail": json.dumps(event.model_dump(mode="json")),
                    "EventBusName": self._bus,
                    "Resources": [],
                }
                for event in batch
            ]
            answer = self._client.put_events(Entries=entries)
            if answer.get("FailedEntryCount"):
                failed = [
                    {"id": event.id, "type": event.type, "error": result.get("ErrorCode")}
                    for event, result in zip(batch, answer["Entries"], strict=True)
                    if result.get("ErrorCode")
                ]
                logger.error("billing events not published", extra={"failed": failed})


@cache
def _events_client() -> EventBridgeClient:
    return boto3.client("events")


def default_publisher() -> EventPublisher:
    return EventBridgePublisher(_events_client(), get_settings().event_bus_name)


def reset_publisher() -> None:
    """Forget the cached client (tests switch moto accounts)."""
    _events_client.cache_clear()
