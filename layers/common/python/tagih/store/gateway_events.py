"""Processed gateway events: ``GWEVENT#<gateway>#<event id>`` / ``GWEVENT`` (ttl 35 days).

A marker is written in the same transaction as the payment change the event caused (see
``store.payments``), so "this event was applied" and "the payment changed" are one fact. Events
that changed nothing leave no marker: a notification that arrived before the gateway's status API
caught up must still work when the gateway redelivers it.

Thirty-five days outlast every retry schedule: Stripe retries for 3 days, Midtrans for less.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tagih.clock import epoch_seconds
from tagih.domain.gateway_names import GatewayName

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

    from tagih.domain.payments import ProcessedEvent

EVENT_SK = "GWEVENT"
RETENTION = timedelta(days=35)


def event_key(gateway: GatewayName, event_id: str) -> dict[str, str]:
    return {"PK": f"GWEVENT#{gateway}#{event_id}", "SK": EVENT_SK}


def marker_item(event: ProcessedEvent) -> dict[str, Any]:
    return {
        **event_key(event.gateway, event.event_id),
        "entity": "gateway_event",
        "gateway": event.gateway,
        "event_id": event.event_id,
        "reference": event.reference,
        "processed_at": event.processed_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "ttl": epoch_seconds(event.processed_at + RETENTION),
    }


class GatewayEventItems:
    """Implements ``domain.payments.GatewayEventStore`` on the single table."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def is_processed(self, gateway: GatewayName, event_id: str) -> bool:
        key = event_key(gateway, event_id)
        item = self._client.get_item(
            TableName=self._table,
            Key={name: {"S": value} for name, value in key.items()},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return False
        # DynamoDB deletes expired items lazily (up to days later); an expired marker is gone.
        ttl = int(str(item.get("ttl", {}).get("N", "0")))
        return ttl == 0 or ttl > epoch_seconds(datetime.now(UTC))


def default_gateway_event_items() -> GatewayEventItems:
    from tagih.config import get_settings
    from tagih.store.table import dynamodb_client

    return GatewayEventItems(dynamodb_client(), get_settings().table_name)
