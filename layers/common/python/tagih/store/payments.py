"""Payment items: ``ORG#<org>`` / ``PAYMENT#<reference>``, GSI1 ``ORDER#<reference>`` / ``PAYMENT``.

The GSI1 entry lets a gateway notification, which knows only the order id / reference, find the
payment without knowing its organization; the base item is then read strongly consistent, since
an index read may lag and every write here carries a ``version`` condition.

While a payment is open (``processing``, ``pending``) it also carries the SPARSE entry GSI2
``OPENPAY#<YYYY-MM-DD it was claimed>`` / ``<claimed at>#<org>#<reference>``; once final, GSI2
``DONEPAY#<YYYY-MM-DDTHH it became final>`` / ``<then>#<org>#<reference>``. Every write is a
whole-item Put, so a payment moves from one to the other with the write that settles or fails it,
and the janitor reads only what is open (``open_payments``) and what became final in the last hour
(``recently_final``: to hand it once more to what it pays, in case that step died), never every
payment.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from tagih.clock import parse_rfc3339
from tagih.store.gateway_events import marker_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

    from tagih.domain.gateway import PaymentInstructions
    from tagih.domain.payments import Payment, ProcessedEvent, TransitionResult

PAYMENT_PREFIX = "PAYMENT#"
OPEN_PREFIX = "OPENPAY#"
DONE_PREFIX = "DONEPAY#"
HOUR_FORMAT = "%Y-%m-%dT%H"
JANITOR_INDEX = "GSI2"
INDEX = "GSI1"
INDEX_SK = "PAYMENT"
ABSENT = "attribute_not_exists(PK)"
STILL_PROCESSING = "#version = :version AND #status = :processing"
AT_VERSION = "#version = :version"
CONDITION_NAMES = {"#version": "version", "#status": "status"}
MAX_CLAIM_TRIES = 3

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def payment_key(organization_id: str, reference: str) -> dict[str, str]:
    return {"PK": f"ORG#{organization_id}", "SK": f"{PAYMENT_PREFIX}{reference}"}


def order_index_key(reference: str) -> dict[str, str]:
    return {"GSI1PK": f"ORDER#{reference}", "GSI1SK": INDEX_SK}


def janitor_index_key(payment: Payment) -> dict[str, str]:
    """GSI2's attributes: the day it was claimed while open, the hour it became final after."""
    if payment.status in ("processing", "pending"):
        claimed = payment.created_at.astimezone(UTC)
        return {
            "GSI2PK": f"{OPEN_PREFIX}{claimed.date().isoformat()}",
            "GSI2SK": f"{_timestamp(claimed)}#{payment.organization_id}#{payment.reference}",
        }
    final = payment.updated_at.astimezone(UTC)
    return {
        "GSI2PK": f"{DONE_PREFIX}{final.strftime(HOUR_FORMAT)}",
        "GSI2SK": f"{_timestamp(final)}#{payment.organization_id}#{payment.reference}",
    }


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def payment_item(payment: Payment) -> dict[str, Any]:
    instructions = (
        {k: v for k, v in asdict(payment.instructions).items() if v is not None}
        if payment.instructions
        else None
    )
    fields: dict[str, Any] = {
        "organization_id": payment.organization_id,
        "reference": payment.reference,
        "purpose": payment.purpose,
        "subject_id": payment.subject_id,
        "attempt": payment.attempt,
        "gateway": payment.gateway,
        "payment_method_id": payment.payment_method_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "version": payment.version,
        "gateway_charge_id": payment.gateway_charge_id,
        "decline_reason": payment.decline_reason,
        "payment_url": payment.payment_url,
        "instructions": instructions,
        "reusable_method_id": payment.reusable_method_id,
        "created_at": _timestamp(payment.created_at),
        "updated_at": _timestamp(payment.updated_at),
    }
    return {
        **payment_key(payment.organization_id, payment.reference),
        **order_index_key(payment.reference),
        **janitor_index_key(payment),
        "entity": "payment",
        **{name: value for name, value in fields.items() if value is not None},
    }


def payment_from_item(item: dict[str, Any]) -> Payment:
    # domain.payments loads with the first payment read: wiring builds this store for every request
    from tagih.domain.payments import Payment

    instructions: PaymentInstructions | None = None
    if item.get("instructions"):  # a pending bank transfer's; the port's dataclasses load only then
        from tagih.domain.gateway import PaymentInstructions

        instructions = PaymentInstructions(**item["instructions"])
    return Payment(
        organization_id=item["organization_id"],
        reference=item["reference"],
        purpose=item["purpose"],
        subject_id=item["subject_id"],
        attempt=int(item["attempt"]),
        gateway=item["gateway"],
        payment_method_id=item.get("payment_method_id"),
        amount=int(item["amount"]),
        currency=item["currency"],
        status=item["status"],
        version=int(item["version"]),
        gateway_charge_id=item.get("gateway_charge_id"),
        decline_reason=item.get("decline_reason"),
        payment_url=item.get("payment_url"),
        instructions=instructions,
        reusable_method_id=item.get("reusable_method_id"),
        created_at=parse_rfc3339(item["created_at"]),
        updated_at=parse_rfc3339(item["updated_at"]),
    )


def _typed(values: dict[str, Any]) -> dict[str, AttributeValueTypeDef]:
    return {name: _serializer.serialize(value) for name, value in values.items()}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    values = {name: _deserializer.deserialize(value) for name, value in item.items()}
    return {k: int(v) if isinstance(v, Decimal) else v for k, v in values.items()}


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _cancellation_codes(error: ClientError) -> list[str] | None:
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = cast(list[dict[str, Any]], error.response.get("CancellationReasons") or [])
    return [str(reason.get("Code", "None")) for reason in reasons]


class PaymentItems:
    """Implements ``domain.payments.PaymentStore`` on the single table."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def claim(self, payment: Payment) -> Payment | None:
        for _ in range(MAX_CLAIM_TRIES):
            try:
                self._client.put_item(
                    TableName=self._table, Item=_typed(payment_item(payment)), ConditionExpression=ABSENT
                )
                return None
            except ClientError as error:
                if not _condition_failed(error):
                    raise
            existing = self.get(payment.organization_id, payment.reference)
            if existing is not None:
                return existing
            # Released by a transient failure between our put and our read: claim again.
        raise RuntimeError(f"could not claim charge attempt {payment.reference!r}")

    def get(self, organization_id: str, reference: str) -> Payment | None:
        item = self._client.get_item(
            TableName=self._table, Key=_typed(payment_key(organization_id, reference)), ConsistentRead=True
        ).get("Item")
        return payment_from_item(_plain(cast(dict[str, Any], item))) if item else None

    def find_by_reference(self, reference: str) -> Payment | None:
        page = self._client.query(
            TableName=self._table,
            IndexName=INDEX,
            KeyConditionExpression="GSI1PK = :pk AND GSI1SK = :sk",
            ExpressionAttributeValues=_typed({":pk": f"ORDER#{reference}", ":sk": INDEX_SK}),
            ProjectionExpression="organization_id",
            Limit=2,
        )
        items = page.get("Items", [])
        if not items:
            return None
        organization_id = str(_plain(cast(dict[str, Any], items[0]))["organization_id"])
        return self.get(organization_id, reference)

    def save_outcome(self, payment: Payment, expected_version: int) -> bool:
        try:
            self._client.put_item(
                TableName=self._table,
                Item=_typed(payment_item(payment)),
                ConditionExpression=STILL_PROCESSING,
                ExpressionAttributeNames=CONDITION_NAMES,
                ExpressionAttributeValues=_typed({":version": expected_version, ":processing": "processing"}),
            )
            return True
        except ClientError as error:
            if _condition_failed(error):
                return False
            raise

    def release_claim(self, organization_id: str, reference: str, expected_version: int) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=_typed(payment_key(organization_id, reference)),
                ConditionExpression=STILL_PROCESSING,
                ExpressionAttributeNames=CONDITION_NAMES,
                ExpressionAttributeValues=_typed({":version": expected_version, ":processing": "processing"}),
            )
        except ClientError as error:
            if not _condition_failed(error):  # moved on meanwhile: nothing of ours to release
                raise

    def transition(self, payment: Payment, expected_version: int, event: ProcessedEvent) -> TransitionResult:
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _typed(payment_item(payment)),
                            "ConditionExpression": AT_VERSION,
                            "ExpressionAttributeNames": {"#version": "version"},
                            "ExpressionAttributeValues": _typed({":version": expected_version}),
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _typed(marker_item(event)),
                            "ConditionExpression": ABSENT,
                        }
                    },
                ]
            )
            return "written"
        except ClientError as error:
            codes = _cancellation_codes(error)
            if codes is None:
                raise
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                return "duplicate_event"
            if codes and codes[0] in ("ConditionalCheckFailed", "TransactionConflict"):
                return "version_conflict"  # the caller re-reads and decides again
            raise

    def open_payments(self, claimed_before: datetime, lookback: timedelta) -> list[tuple[str, str]]:
        """(organization, reference) of the payments still open that were claimed in the
        ``lookback`` before ``claimed_before`` (index copies: re-read each before acting). One
        Query per day, reading only open payments."""
        found: list[tuple[str, str]] = []
        day, last = (claimed_before - lookback).astimezone(UTC).date(), claimed_before.astimezone(UTC).date()
        while day <= last:
            found += self._index_range(f"{OPEN_PREFIX}{day.isoformat()}", "", _timestamp(claimed_before))
            day += timedelta(days=1)
        return found

    def recently_final(self, since: datetime, until: datetime) -> list[tuple[str, str]]:
        """(organization, reference) of the payments that became final between ``since`` and
        ``until`` (an hour or so: one Query per hour bucket)."""
        found: list[tuple[str, str]] = []
        hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while hour <= until:
            bucket = f"{DONE_PREFIX}{hour.strftime(HOUR_FORMAT)}"
            found += self._index_range(bucket, _timestamp(since), _timestamp(until))
            hour += timedelta(hours=1)
        return found

    def _index_range(self, partition: str, start: str, end: str) -> list[tuple[str, str]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": JANITOR_INDEX,
            "KeyConditionExpression": "GSI2PK = :pk AND GSI2SK BETWEEN :start AND :end",
            # DynamoDB refuses an empty key value: "0" sorts before every timestamp.
            "ExpressionAttributeValues": _typed(
                {":pk": partition, ":start": start or "0", ":end": f"{end}#~"}
            ),
            "ProjectionExpression": "organization_id, #reference",
            "ExpressionAttributeNames": {"#reference": "reference"},
        }
        found: list[tuple[str, str]] = []
        while True:
            page = self._client.query(**kwargs)
            for item in page.get("Items", []):
                plain = _plain(cast(dict[str, Any], item))
                found.append((str(plain["organization_id"]), str(plain["reference"])))
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def default_payment_items() -> PaymentItems:
    from tagih.config import get_settings
    from tagih.store.table import dynamodb_client

    return PaymentItems(dynamodb_client(), get_settings().table_name)
