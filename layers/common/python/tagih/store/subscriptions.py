"""Subscription items: the organization's current subscription and its trial marker.

- subscription ``ORG#<org>`` / ``SUBSCRIPTION``: every field of ``domain.subscriptions.Subscription``
  (internal ones included, JSON-mode values; ``status`` and ``plan`` are top-level attributes, which
  the ConditionChecks of ``store.accounts.not_paid_subscription_check`` read), plus
  GSI1 ``SUB#<id>`` / ``SUBSCRIPTION`` for callers that know only the id (timers), plus the SPARSE
  renewal entry GSI2 ``RENEW#<YYYY-MM-DDTHH>`` / ``<next renewal, RFC 3339 UTC>#<org>``, present
  only while ``next_renewal_at(sub)`` is not None (active or trialing, not cancelling). Every write
  is a whole-item Put, so a subscription that stops renewing drops out of GSI2 in the same write,
  and the hourly sweep reads O(due), never O(all subscriptions);
- trial marker ``ORG#<org>`` / ``TRIALLED``: written once, in the transaction that creates the
  organization's first trialing subscription (a trial is once per organization, DESIGN.md).

One item per organization: a new subscription REPLACES a cancelled one (a Put conditioned on the
cancelled one's id and version), so "the organization's subscription" is always one strongly
consistent GetItem.

Every write is conditioned on ``version`` AND ``id``: a holder of a replaced subscription that
happens to carry the version of its successor still gets a ``VersionConflict``, never a lost write.
Invoices written alongside (the first draft, "paid + active") go in the same transaction, with the
invariants of ``store.invoices``: a new invoice is an unnumbered draft, and only ``finalize`` numbers
one.

GSI reads may lag a write by a moment: ``find_by_id`` re-reads the base item strongly consistent
before returning it; ``due_renewals`` answers index copies, and each renewal re-reads and re-checks
its subscription (``services.lifecycle``) before it acts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Key

from tagih.domain.errors import AlreadySubscribed, SubscriptionNotFound, VersionConflict
from tagih.domain.invoices import Invoice
from tagih.domain.subscriptions import Subscription, next_renewal_at
from tagih.store.invoices import invoice_item, invoice_key, replace_condition
from tagih.store.items import from_item, to_item
from tagih.store.organizations import org_pk, subscription_key
from tagih.store.table import ABSENT, table
from tagih.store.transactions import transact

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

ENTITY = "subscription"
ID_INDEX = "GSI1"
ID_INDEX_SK = "SUBSCRIPTION"
RENEWAL_INDEX = "GSI2"
RENEWAL_PREFIX = "RENEW#"
TRIAL_MARKER_SK = "TRIALLED"
BUCKET_FORMAT = "%Y-%m-%dT%H"
# Fixed width (always microseconds), so the index's string order is the time order.
SORT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
CONFLICT = "The subscription changed since it was read; read it again and retry."


# -- keys and items -----------------------------------------------------------------------------------
def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("renewal times must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def renewal_bucket(moment: datetime) -> str:
    """The renewal index partition of ``moment``: its UTC hour, ``YYYY-MM-DDTHH``."""
    return _utc(moment).strftime(BUCKET_FORMAT)


def renewal_buckets_between(start: datetime, end: datetime) -> list[str]:
    """Every hour bucket a moment of ``[start, end]`` falls in, oldest first, both ends' buckets
    included (a sweep catching up from its last run to now). Empty when ``end`` is before ``start``."""
    first, last = _utc(start), _utc(end)
    if last < first:
        return []
    hour = first.replace(minute=0, second=0, microsecond=0)
    buckets: list[str] = []
    while hour <= last:
        buckets.append(renewal_bucket(hour))
        hour += timedelta(hours=1)
    return buckets


@dataclass(frozen=True)
class DueRenewal:
    """A renewal the sweep found due (an index copy: the renewal re-reads and re-checks it)."""

    organization_id: str
    subscription_id: str
    version: int
    trialing: bool = False  # its trial ends (the sweep ends it) rather than its period


def _encode_cursor(bucket_index: int, start_key: dict[str, Any] | None) -> str:
    raw = json.dumps({"bucket": bucket_index, "key": start_key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[int, dict[str, Any] | None]:
    if not cursor:
        return 0, None
    decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    return int(decoded["bucket"]), decoded["key"]


def trial_marker_key(organization_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": TRIAL_MARKER_SK}


def id_index_key(subscription_id: str) -> dict[str, str]:
    return {"GSI1PK": f"SUB#{subscription_id}", "GSI1SK": ID_INDEX_SK}


def renewal_index_key(subscription: Subscription) -> dict[str, str]:
    """GSI2's attributes for ``subscription``: none unless it renews (the index is sparse)."""
    renews_at = next_renewal_at(subscription)
    if renews_at is None:
        return {}
    return {
        "GSI2PK": f"{RENEWAL_PREFIX}{renewal_bucket(renews_at)}",
        "GSI2SK": f"{_utc(renews_at).strftime(SORT_TIME_FORMAT)}#{subscription.organization_id}",
    }


def _stored_id(subscription: Subscription) -> str:
    if subscription.id is None:
        raise ValueError("the Free stand-in (no id) is never stored")
    return subscription.id


def subscription_item(subscription: Subscription) -> dict[str, Any]:
    return to_item(
        subscription_key(subscription.organization_id),
        ENTITY,
        subscription,
        **id_index_key(_stored_id(subscription)),
        **renewal_index_key(subscription),
    )


def _as_utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, dict):
        return {k: _as_utc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_utc(v) for v in value]
    return value


def subscription_from_item(item: dict[str, Any]) -> Subscription:
    """The model as it was written: numbers as ``int``, every datetime (nested ones too) in UTC."""
    parsed = from_item(Subscription, item)
    return Subscription.model_validate(_as_utc(parsed.model_dump()))


class SubscriptionItems:
    """The subscription items of the single table."""

    def __init__(self, billing_table: Table) -> None:
        self._table = billing_table
        self._client = billing_table.meta.client  # takes plain Python values, like the resource
        self._name = billing_table.name

    # -- reads --------------------------------------------------------------------------------------
    def current(self, organization_id: str) -> Subscription | None:
        """The organization's stored subscription (a cancelled one too), strongly consistent."""
        item = self._table.get_item(Key=subscription_key(organization_id), ConsistentRead=True).get("Item")
        return None if item is None else subscription_from_item(item)

    def get(self, organization_id: str, subscription_id: str) -> Subscription:
        """``SubscriptionNotFound`` unless ``subscription_id`` is the organization's current one
        (another organization's, or one replaced since, is not found)."""
        current = self.current(organization_id)
        if current is None or current.id != subscription_id:
            raise SubscriptionNotFound(f"No subscription {subscription_id!r} in this organization.")
        return current

    def find_by_id(self, subscription_id: str) -> Subscription | None:
        """For callers that know only the id: GSI1 gives the organization, then the base item is read
        strongly consistent. None when unknown, or no longer the organization's subscription."""
        page = self._table.query(
            IndexName=ID_INDEX,
            KeyConditionExpression=Key("GSI1PK").eq(id_index_key(subscription_id)["GSI1PK"])
            & Key("GSI1SK").eq(ID_INDEX_SK),
        )
        if not page["Items"]:
            return None
        found = page["Items"][0]
        item = self._table.get_item(Key={"PK": found["PK"], "SK": found["SK"]}, ConsistentRead=True).get(
            "Item"
        )
        if item is None:
            return None
        subscription = subscription_from_item(item)
        return subscription if subscription.id == subscription_id else None

    def has_trialled(self, organization_id: str) -> bool:
        item = self._table.get_item(Key=trial_marker_key(organization_id), ConsistentRead=True).get("Item")
        return item is not None

    def due_renewals(
        self, until: datetime, *, lookback: timedelta, page_size: int, cursor: str = ""
    ) -> tuple[list[DueRenewal], str]:
        """One page of the renewals due by ``until``, from the hour buckets of the last ``lookback``
        (a sweep that was missed or failed is caught up by the next one), and the cursor of the next
        page ("" when done). Each bucket is one Query whose sort-key condition stops at ``until``,
        so only due entries are read: O(due) items, whatever the number of subscriptions."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        buckets = renewal_buckets_between(until - lookback, until)
        index, start_key = _decode_cursor(cursor)
        due_key = f"{_utc(until).strftime(SORT_TIME_FORMAT)}#~"  # "~" sorts after any organization id
        found: list[DueRenewal] = []
        while index < len(buckets) and len(found) < page_size:
            kwargs: dict[str, Any] = {
                "IndexName": RENEWAL_INDEX,
                "KeyConditionExpression": Key("GSI2PK").eq(f"{RENEWAL_PREFIX}{buckets[index]}")
                & Key("GSI2SK").lte(due_key),
                "ProjectionExpression": "#org, #id, #version, #status",
                "ExpressionAttributeNames": {
                    "#org": "organization_id",
                    "#id": "id",
                    "#version": "version",
                    "#status": "status",
                },
                "Limit": page_size - len(found),
            }
            if start_key is not None:
                kwargs["ExclusiveStartKey"] = start_key
            page = self._table.query(**kwargs)
            found += [
                DueRenewal(
                    str(item["organization_id"]),
                    str(item["id"]),
                    int(str(item["version"])),
                    trialing=item.get("status") == "trialing",
                )
                for item in page["Items"]
            ]
            start_key = page.get("LastEvaluatedKey")
            if start_key is None:
                index += 1
        return found, (_encode_cursor(index, start_key) if index < len(buckets) else "")

    # -- transaction parts --------------------------------------------------------------------------
    def _put_subscription(self, subscription: Subscription, condition: str, **values: Any) -> dict[str, Any]:
        put: dict[str, Any] = {
            "TableName": self._name,
            "Item": subscription_item(subscription),
            "ConditionExpression": condition,
        }
        if values:
            put["ExpressionAttributeNames"] = {"#version": "version", "#id": "id"}
            put["ExpressionAttributeValues"] = values
        return {"Put": put}

    def _put_new_invoice(self, invoice: Invoice, subscription: Subscription) -> dict[str, Any]:
        _check_invoice_owner(invoice, subscription)
        if invoice.status != "draft" or invoice.number is not None:
            raise ValueError("only a draft without a number is written as new; finalize numbers it")
        return {
            "Put": {"TableName": self._name, "Item": invoice_item(invoice), "ConditionExpression": ABSENT}
        }

    def _put_invoice_at(self, invoice: Invoice, expected: int, subscription: Subscription) -> dict[str, Any]:
        """The invariants of ``InvoiceItems.replace``: at ``expected``, an unnumbered invoice is
        still a draft where stored, and a numbered one keeps the number ``finalize`` gave it."""
        _check_invoice_owner(invoice, subscription)
        if invoice.version <= expected:
            raise ValueError("a changed invoice carries a later version than the one it replaces")
        condition, names, values = replace_condition(invoice, expected)
        return {
            "Put": {
                "TableName": self._name,
                "Item": invoice_item(invoice),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    # -- writes -------------------------------------------------------------------------------------
    def create(
        self,
        subscription: Subscription,
        *,
        replacing: Subscription | None = None,
        trial_started: bool = False,
        invoices: Sequence[Invoice] = (),
    ) -> None:
        """Write a new subscription, and with it the trial marker (``trial_started``) and its first
        draft invoices, in ONE transaction.

        With ``replacing`` None the organization must have no subscription item (else
        ``AlreadySubscribed``); otherwise the stored one must still be ``replacing`` at its version
        (else ``VersionConflict``). A trial marker already there is a ``VersionConflict`` too: the
        caller checked ``has_trialled`` before, so another request started a trial meanwhile."""
        org = subscription.organization_id
        _stored_id(subscription)
        items: list[dict[str, Any]] = []
        on_condition: dict[int, Exception] = {}
        if replacing is None:
            items.append(self._put_subscription(subscription, ABSENT))
            on_condition[0] = AlreadySubscribed(
                "The organization already has a subscription; change or reactivate it instead."
            )
        else:
            if replacing.organization_id != org:
                raise ValueError("a subscription replaces only its own organization's")
            items.append(
                self._put_subscription(
                    subscription,
                    "#version = :seen AND #id = :replaced",
                    **{":seen": replacing.version, ":replaced": _stored_id(replacing)},
                )
            )
        if trial_started:
            on_condition[len(items)] = VersionConflict(
                "The organization has already started a trial (another request did meanwhile); "
                "read the subscription again."
            )
            items.append(
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": {
                            **trial_marker_key(org),
                            "entity": "trial_marker",
                            "subscription_id": subscription.id,
                            "created_at": _utc(subscription.created_at).isoformat(),
                        },
                        "ConditionExpression": ABSENT,
                    }
                }
            )
        for invoice in invoices:
            on_condition[len(items)] = _invoice_conflict(invoice, None)
            items.append(self._put_new_invoice(invoice, subscription))
        transact(self._client, items, CONFLICT, on_condition)

    def save(
        self,
        subscription: Subscription,
        expected_version: int,
        *,
        invoices: Sequence[tuple[Invoice, int | None]] = (),
    ) -> None:
        """Write ``subscription`` over the stored one if that is still the same subscription at
        ``expected_version``, and each ``(invoice, expected)`` with it: a new draft when ``expected``
        is None, else over the stored invoice at version ``expected``. All or nothing;
        ``VersionConflict`` when anything changed meanwhile."""
        subscription_id = _stored_id(subscription)
        if subscription.version <= expected_version:
            raise ValueError("a changed subscription carries a later version than the one it replaces")
        items = [
            self._put_subscription(
                subscription,
                "#version = :seen AND #id = :id",
                **{":seen": expected_version, ":id": subscription_id},
            )
        ]
        on_condition: dict[int, Exception] = {}
        for invoice, expected in invoices:
            on_condition[len(items)] = _invoice_conflict(invoice, expected)
            if expected is None:
                items.append(self._put_new_invoice(invoice, subscription))
            else:
                items.append(self._put_invoice_at(invoice, expected, subscription))
        transact(self._client, items, CONFLICT, on_condition)

    def delete(self, subscription: Subscription, *, invoices: Sequence[Invoice] = ()) -> None:
        """Remove a subscription that never started (a first card payment declined: "402 and nothing
        kept") with its draft invoices, in ONE transaction: the subscription at its version, each
        invoice only while still a draft at its version (else ``VersionConflict``, nothing removed)."""
        subscription_id = _stored_id(subscription)
        items: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self._name,
                    "Key": subscription_key(subscription.organization_id),
                    "ConditionExpression": "#version = :seen AND #id = :id",
                    "ExpressionAttributeNames": {"#version": "version", "#id": "id"},
                    "ExpressionAttributeValues": {":seen": subscription.version, ":id": subscription_id},
                }
            }
        ]
        on_condition: dict[int, Exception] = {}
        for invoice in invoices:
            _check_invoice_owner(invoice, subscription)
            on_condition[len(items)] = VersionConflict(
                f"Invoice {invoice.id} is no longer a draft at version {invoice.version}; nothing removed."
            )
            items.append(
                {
                    "Delete": {
                        "TableName": self._name,
                        "Key": invoice_key(invoice.organization_id, invoice.id),
                        "ConditionExpression": "#version = :seen AND #status = :draft",
                        "ExpressionAttributeNames": {"#version": "version", "#status": "status"},
                        "ExpressionAttributeValues": {":seen": invoice.version, ":draft": "draft"},
                    }
                }
            )
        transact(self._client, items, CONFLICT, on_condition)


def _invoice_conflict(invoice: Invoice, expected: int | None) -> VersionConflict:
    if expected is None:
        return VersionConflict(f"Invoice {invoice.id} already exists; nothing was written.")
    return VersionConflict(f"Invoice {invoice.id} changed since version {expected}; nothing was written.")


def _check_invoice_owner(invoice: Invoice, subscription: Subscription) -> None:
    if invoice.organization_id != subscription.organization_id:
        raise ValueError("an invoice is written only with its own organization's subscription")


def default_subscription_items() -> SubscriptionItems:
    return SubscriptionItems(table())
