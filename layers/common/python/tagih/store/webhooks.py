"""Webhook items: endpoints, deliveries (with their attempts) and the per-organization event sequence.

- endpoint ``ORG#<org>`` / ``HOOK#<id>``: URL, event types, the signing secret and, for 24 h after a
  rotation, the previous one;
- delivery ``ORG#<org>`` / ``DELIVERY#<webhook id>#<event sequence, 12 digits>`` (TTL 30 days): one
  per endpoint and event (a sequence number is one event's), so an endpoint's log is one Query newest
  first, and a redelivered event finds its delivery by key (DESIGN.md sketched
  ``DELIVERY#<ts>#<id>``; the endpoint id comes first so listing one endpoint's deliveries reads only
  its items, and the sequence orders events of the same second). Attempts live on the item;
  ``attempt_count`` is what every record is conditioned on;
- sequence counter ``ORG#<org>`` / ``SEQ#EVENTS`` and per event ``ORG#<org>`` / ``EVENTSEQ#<event id>``
  (TTL 35 days, past any redelivery): both written in one transaction, so a number is given once.

Secrets: the API cannot show a secret again because no response model has a field for it (only the
create and rotate answers carry the new one, and the kernel keeps it out of idempotency records).
At rest each is encrypted with the stack's KMS key for its endpoint (``store.webhook_secrets``):
the item holds ciphertext, and only the functions granted that key read the secret. They are not
logged, and ``WebhookEndpoint``'s repr leaves them out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from tagih.clock import epoch_seconds
from tagih.domain.errors import VersionConflict, WebhookEndpointNotFound
from tagih.domain.webhooks import DELIVERY_RETENTION, Delivery, DeliveryRef, WebhookEndpoint
from tagih.store.items import from_item, to_item
from tagih.store.organizations import org_pk
from tagih.store.table import table
from tagih.store.transactions import transact
from tagih.store.webhook_secrets import SecretSealer, default_secret_sealer, is_sealed

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

HOOK_PREFIX = "HOOK#"
DELIVERY_PREFIX = "DELIVERY#"
SEQUENCE_SK = "SEQ#EVENTS"
EVENT_SEQUENCE_PREFIX = "EVENTSEQ#"
EVENT_SEQUENCE_RETENTION = timedelta(days=35)
ABSENT = "attribute_not_exists(PK)"
MAX_SEQUENCE_TRIES = 10
CONFLICT = "The webhook endpoint changed meanwhile; retry."
SECRET_FIELDS = ("secret", "previous_secret")


def endpoint_key(organization_id: str, webhook_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": f"{HOOK_PREFIX}{webhook_id}"}


def delivery_key(organization_id: str, webhook_id: str, sequence: int) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": f"{DELIVERY_PREFIX}{webhook_id}#{sequence:012d}"}


def sequence_key(organization_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": SEQUENCE_SK}


def event_sequence_key(organization_id: str, event_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": f"{EVENT_SEQUENCE_PREFIX}{event_id}"}


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class WebhookItems:
    """Implements ``domain.webhooks.WebhookStore`` on the single table, secrets encrypted."""

    def __init__(self, billing_table: Table, sealer: SecretSealer) -> None:
        self._table = billing_table
        self._sealer = sealer

    def _item(self, endpoint: WebhookEndpoint) -> dict[str, Any]:
        item = to_item(endpoint_key(endpoint.organization_id, endpoint.id), "webhook_endpoint", endpoint)
        for field in SECRET_FIELDS:
            if item.get(field) and not is_sealed(item[field]):  # a listed endpoint's stay as they are
                item[field] = self._sealer.seal(
                    item[field], organization_id=endpoint.organization_id, webhook_id=endpoint.id
                )
        return item

    def _endpoint(self, item: dict[str, Any]) -> WebhookEndpoint:
        """The endpoint with its secrets opened, for signing (one ``kms:Decrypt`` each when cold)."""
        endpoint = from_item(WebhookEndpoint, item)
        opened = {
            field: self._sealer.open(value, organization_id=endpoint.organization_id, webhook_id=endpoint.id)
            for field in SECRET_FIELDS
            if (value := getattr(endpoint, field))
        }
        return endpoint.model_copy(update=opened)

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._table.query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- endpoints --------------------------------------------------------------------------------
    def create(self, endpoint: WebhookEndpoint) -> None:
        self._table.put_item(Item=self._item(endpoint), ConditionExpression=ABSENT)

    def list_for_organization(self, organization_id: str) -> list[WebhookEndpoint]:
        items = self._query(
            KeyConditionExpression=Key("PK").eq(org_pk(organization_id)) & Key("SK").begins_with(HOOK_PREFIX),
            ConsistentRead=True,
        )
        # Listing (the count on create, GET, the fan-out) never signs: secrets stay sealed here.
        return [from_item(WebhookEndpoint, item) for item in items]

    def find(self, organization_id: str, webhook_id: str) -> WebhookEndpoint | None:
        item = self._table.get_item(Key=endpoint_key(organization_id, webhook_id), ConsistentRead=True).get(
            "Item"
        )
        return None if item is None else self._endpoint(item)

    def get(self, organization_id: str, webhook_id: str) -> WebhookEndpoint:
        endpoint = self.find(organization_id, webhook_id)
        if endpoint is None:
            raise WebhookEndpointNotFound(f"No webhook endpoint {webhook_id!r} in this organization.")
        return endpoint

    def delete(self, organization_id: str, webhook_id: str) -> None:
        try:
            self._table.delete_item(
                Key=endpoint_key(organization_id, webhook_id), ConditionExpression="attribute_exists(PK)"
            )
        except ClientError as error:
            if _condition_failed(error):
                raise WebhookEndpointNotFound(
                    f"No webhook endpoint {webhook_id!r} in this organization."
                ) from error
            raise

    def replace(self, endpoint: WebhookEndpoint, seen_version: int) -> None:
        try:
            self._table.put_item(
                Item=self._item(endpoint),
                ConditionExpression="#version = :seen",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":seen": seen_version},
            )
        except ClientError as error:
            if _condition_failed(error):
                raise VersionConflict(CONFLICT) from error
            raise


class DeliveryItems:
    """Implements ``domain.webhooks.DeliveryStore`` on the single table."""

    def __init__(self, billing_table: Table) -> None:
        self._table = billing_table
        self._client = billing_table.meta.client
        self._name = billing_table.name

    def next_sequence(self, organization_id: str, event_id: str, now: datetime) -> int:
        for _ in range(MAX_SEQUENCE_TRIES):
            assigned = self._table.get_item(
                Key=event_sequence_key(organization_id, event_id), ConsistentRead=True
            ).get("Item")
            if assigned is not None:
                return int(str(assigned["sequence"]))
            counter = self._table.get_item(Key=sequence_key(organization_id), ConsistentRead=True).get("Item")
            last = int(str(counter["last"])) if counter is not None else 0
            number = last + 1
            counter_write: dict[str, Any]
            if counter is None:
                counter_write = {
                    "Put": {
                        "TableName": self._name,
                        "Item": {**sequence_key(organization_id), "entity": "event_sequence", "last": number},
                        "ConditionExpression": ABSENT,
                    }
                }
            else:
                counter_write = {
                    "Update": {
                        "TableName": self._name,
                        "Key": sequence_key(organization_id),
                        "UpdateExpression": "SET #last = :next",
                        "ConditionExpression": "#last = :seen",
                        "ExpressionAttributeNames": {"#last": "last"},
                        "ExpressionAttributeValues": {":next": number, ":seen": last},
                    }
                }
            event_item = {
                **event_sequence_key(organization_id, event_id),
                "entity": "event_sequence_number",
                "sequence": number,
                "ttl": epoch_seconds(now + EVENT_SEQUENCE_RETENTION),
            }
            try:
                transact(
                    self._client,
                    [
                        {"Put": {"TableName": self._name, "Item": event_item, "ConditionExpression": ABSENT}},
                        counter_write,
                    ],
                    "The event sequence moved meanwhile.",
                )
            except VersionConflict:
                continue  # another event took this number, or this event got one meanwhile
            return number
        raise VersionConflict("The organization's event sequence is too busy; retry.")

    def _item(self, delivery: Delivery) -> dict[str, Any]:
        key = delivery_key(delivery.organization_id, delivery.webhook_id, delivery.sequence)
        return to_item(
            key,
            "webhook_delivery",
            delivery,
            attempt_count=len(delivery.attempts),
            ttl=epoch_seconds(delivery.created_at + DELIVERY_RETENTION),
        )

    def create(self, delivery: Delivery) -> tuple[Delivery, bool]:
        try:
            self._table.put_item(Item=self._item(delivery), ConditionExpression=ABSENT)
        except ClientError as error:
            if not _condition_failed(error):
                raise
            existing = self.get(delivery.ref(1))
            if existing is None:  # expired between the two calls: nothing left to deliver
                return delivery, False
            return existing, False
        return delivery, True

    def get(self, ref: DeliveryRef) -> Delivery | None:
        item = self._table.get_item(
            Key=delivery_key(ref.organization_id, ref.webhook_id, ref.sequence),
            ConsistentRead=True,
        ).get("Item")
        return None if item is None else from_item(Delivery, item)

    def record(self, delivery: Delivery, seen_attempts: int) -> bool:
        try:
            self._table.put_item(
                Item=self._item(delivery),
                ConditionExpression="attempt_count = :seen",
                ExpressionAttributeValues={":seen": seen_attempts},
            )
        except ClientError as error:
            if _condition_failed(error):
                return False
            raise
        return True

    def list_for_webhook(self, organization_id: str, webhook_id: str) -> list[Delivery]:
        items = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(org_pk(organization_id))
            & Key("SK").begins_with(f"{DELIVERY_PREFIX}{webhook_id}#"),
            "ScanIndexForward": False,
        }
        while True:
            page = self._table.query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [from_item(Delivery, item) for item in items]


def default_webhook_items() -> WebhookItems:
    return WebhookItems(table(), default_secret_sealer())


def default_delivery_items() -> DeliveryItems:
    return DeliveryItems(table())
