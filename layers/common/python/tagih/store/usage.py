"""Usage items: sharded counters, gauges, event-id claims and threshold markers.

- day counter ``USAGE#<org>#<yyyy-mm>`` / ``<metric>#<dd>#<shard>`` ``{used}`` (DESIGN.md): the
  daily figures of ``GET /billing/usage/{metric}`` are one Query of that partition;
- month counter ``USAGE#<org>`` / ``<yyyy-mm>#<metric>#<shard>`` ``{used}``, written with the day
  counter, so the current period (``GET /billing/usage``, entitlements, the threshold check) and
  N months of history are each one Query of ``USAGE#<org>``;
- gauges: the day's and the month's last value (``…#00`` in the same two places, with ``as_of``;
  the month's also ``previous``, the value in force before its first report) and the current value
  ``USAGE#<org>`` / ``GAUGE#<metric>``. Each is set only when the reading is not older than the
  stored one, so repeating or reordering readings cannot move a gauge back;
- threshold marker ``USAGE#<org>`` / ``<yyyy-mm>#THRESHOLD#<metric>#<pct>``: in the usage partition
  rather than ``ORG#<org>`` (where DESIGN.md sketched it) so the Query that reads the totals also
  tells which thresholds are already marked, and a batch past a threshold writes nothing more;
- event-id claim ``USAGEEVT#<org>#<id>`` / ``USAGEEVT`` with ``ttl`` 35 days on: one partition per
  id, so claims spread over partitions however busy one organization is.

Writes per batch: the claims and the counter additions go together in ``TransactWriteItems`` of at
most 100 items (the events sorted by metric and day, each chunk adding one sum per metric, day and
period partition), so a retry after a crash neither counts twice nor loses a count, and a batch of
1 000 events of one metric and day costs about 11 requests. A claim that fails its condition is a
duplicate: the chunk is written again without it. The counters are sharded
(``COUNTER_SHARDS``): each batch adds to one shard per metric and day, chosen at random, so
concurrent batches of one busy organization spread over items (a single item takes at most
1 000 writes per second, and a transactional write counts twice) and rarely conflict; a conflict
is retried on another shard.

The low-level client is used throughout: it is thread-safe and skips the resource layer's
per-attribute serialisation on the hot path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from tagih.clock import epoch_seconds
from tagih.config import get_settings
from tagih.domain.addons import addon_increments
from tagih.domain.catalog import GAUGE_METRICS, OveragePrice, Plan
from tagih.domain.errors import PlanNotFound
from tagih.domain.plan_slugs import FREE_PLAN
from tagih.domain.subscriptions import Subscription, current_or_free
from tagih.domain.usage import (
    DEDUP_WINDOW,
    DayFigure,
    GaugeMonth,
    GaugeReading,
    History,
    Measurement,
    PeriodSummary,
    Terms,
    effective_quotas,
)
from tagih.events.models import BillingEvent
from tagih.store.table import dynamodb_client

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

COUNTER_SHARDS = 10
GAUGE_SLOT = "00"
MAX_TRANSACTION_ITEMS = 100
MAX_ATTEMPTS = 6
THRESHOLD = "THRESHOLD"
GAUGE_PREFIX = "GAUGE#"
CLAIM_SK = "USAGEEVT"
AS_OF_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width: string order is time order
NEWER = "attribute_not_exists(as_of) OR as_of <= :as_of"


# -- keys ---------------------------------------------------------------------------------------------
def summary_pk(organization_id: str) -> str:
    return f"USAGE#{organization_id}"


def period_pk(organization_id: str, period: str) -> str:
    return f"USAGE#{organization_id}#{period}"


def claim_pk(organization_id: str, event_id: str) -> str:
    return f"USAGEEVT#{organization_id}#{event_id}"


def day_sk(metric: str, day: str, shard: str) -> str:
    return f"{metric}#{day}#{shard}"


def month_sk(period: str, metric: str, shard: str) -> str:
    return f"{period}#{metric}#{shard}"


def gauge_sk(metric: str) -> str:
    return f"{GAUGE_PREFIX}{metric}"


def threshold_sk(period: str, metric: str, threshold: int) -> str:
    return f"{period}#{THRESHOLD}#{metric}#{threshold}"


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"PK": {"S": pk}, "SK": {"S": sk}}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _as_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(AS_OF_FORMAT)


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class UsageItems:
    """The usage items of the single table (``domain.usage.UsageStore``)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        shard_of: Callable[[], int] | None = None,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table_name
        self._shard_of = shard_of or (lambda: random.randrange(COUNTER_SHARDS))  # noqa: S311 — spread, not secrecy
        self._pause = pause

    # -- writes ------------------------------------------------------------------------------------
    def set_gauges(self, organization_id: str, readings: Sequence[GaugeReading]) -> None:
        for reading in readings:  # oldest first: each month's "previous" is the value before it
            values = {":used": _n(reading.value), ":as_of": {"S": _as_of(reading.at)}}
            previous = self._set_if_newer(summary_pk(organization_id), gauge_sk(reading.metric), values)
            month_update = "SET used = :used, as_of = :as_of"
            month_values = dict(values)
            if previous is not None:
                month_update += ", previous = if_not_exists(previous, :previous)"
                month_values[":previous"] = _n(previous)
            self._set_if_newer(
                summary_pk(organization_id),
                month_sk(reading.period, reading.metric, GAUGE_SLOT),
                month_values,
                month_update,
            )
            self._set_if_newer(
                period_pk(organization_id, reading.period),
                day_sk(reading.metric, reading.day, GAUGE_SLOT),
                values,
            )

    def _set_if_newer(
        self,
        pk: str,
        sk: str,
        values: dict[str, Any],
        update: str = "SET used = :used, as_of = :as_of",
    ) -> int | None:
        """Set the item unless it holds a later reading. Returns the value it held before (0 when
        it did not exist), or None when a later reading kept it."""
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=_key(pk, sk),
                UpdateExpression=update,
                ConditionExpression=NEWER,
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_OLD",
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return None
            raise
        return int(answer.get("Attributes", {}).get("used", {}).get("N", "0"))

    def record(self, organization_id: str, measurements: Sequence[Measurement], now: datetime) -> set[str]:
        shards: dict[tuple[str, str, str], str] = {}
        duplicates: set[str] = set()
        ordered = sorted(measurements, key=lambda m: (m.period, m.metric, m.day))
        for chunk in _chunks(ordered):
            duplicates |= self._record_chunk(organization_id, chunk, now, shards)
        return duplicates

    def _record_chunk(
        self,
        organization_id: str,
        chunk: list[Measurement],
        now: datetime,
        shards: dict[tuple[str, str, str], str],
    ) -> set[str]:
        duplicates: set[str] = set()
        pending = chunk
        expires = _n(epoch_seconds(now + DEDUP_WINDOW))
        now_epoch = _n(epoch_seconds(now))
        attempt = 0
        while pending:
            items = [self._claim(organization_id, m.id, expires, now_epoch) for m in pending]
            sums: dict[tuple[str, str, str], int] = {}
            for m in pending:
                if m.metric not in GAUGE_METRICS and m.quantity:
                    key = (m.period, m.metric, m.day)
                    sums[key] = sums.get(key, 0) + m.quantity
            months: dict[tuple[str, str, str], int] = {}  # days of one metric may share a month shard
            for (period, metric, day), quantity in sums.items():
                shard = shards.setdefault((period, metric, day), f"{self._shard_of():02d}")
                items.append(
                    self._add(period_pk(organization_id, period), day_sk(metric, day, shard), quantity)
                )
                months[(period, metric, shard)] = months.get((period, metric, shard), 0) + quantity
            for (period, metric, shard), quantity in months.items():
                items.append(
                    self._add(summary_pk(organization_id), month_sk(period, metric, shard), quantity)
                )
            try:
                self._client.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
                return duplicates
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                reasons = cast(list[dict[str, Any]], error.response.get("CancellationReasons") or [])
                claimed = {
                    pending[i].id
                    for i, reason in enumerate(reasons[: len(pending)])
                    if reason.get("Code") == "ConditionalCheckFailed"
                }
                if claimed:
                    duplicates |= claimed
                    pending = [m for m in pending if m.id not in claimed]
                    continue
                # Another batch was writing one of these items at the same moment: try again,
                # on other shards, after a short randomized wait.
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    raise
                for key in sums:
                    shards[key] = f"{self._shard_of():02d}"
                self._pause(random.uniform(0, 0.02 * 2**attempt))  # noqa: S311
        return duplicates

    def _claim(
        self, organization_id: str, event_id: str, expires: dict[str, str], now_epoch: dict[str, str]
    ) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._table,
                "Item": {
                    "PK": {"S": claim_pk(organization_id, event_id)},
                    "SK": {"S": CLAIM_SK},
                    "ttl": expires,
                },
                # A claim past its ttl that DynamoDB has not deleted yet no longer counts.
                "ConditionExpression": "attribute_not_exists(PK) OR #ttl < :now",
                "ExpressionAttributeNames": {"#ttl": "ttl"},
                "ExpressionAttributeValues": {":now": now_epoch},
            }
        }

    def _add(self, pk: str, sk: str, quantity: int) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": _key(pk, sk),
                "UpdateExpression": "ADD used :quantity",
                "ExpressionAttributeValues": {":quantity": _n(quantity)},
            }
        }

    def mark_threshold(self, organization_id: str, period: str, event: BillingEvent) -> bool:
        data = event.data
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    **_key(
                        summary_pk(organization_id),
                        threshold_sk(period, str(data["metric"]), int(data["threshold"])),
                    ),
                    "event_id": {"S": event.id},
                    "used": _n(int(data["used"])),
                    "quota": _n(int(data["quota"])),
                    "created_at": {"S": event.created_at},
                },
                ConditionExpression="attribute_not_exists(PK)",
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    # -- reads -------------------------------------------------------------------------------------
    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        kwargs = {"TableName": self._table, "ConsistentRead": True, **kwargs}
        while True:
            page = self._client.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _summary_items(
        self, organization_id: str, first_period: str
    ) -> Iterator[tuple[list[str], int, dict[str, Any]]]:
        """``USAGE#<org>`` from ``first_period`` on: month counters, gauge months, markers, gauges."""
        for item in self._query(
            KeyConditionExpression="PK = :pk AND SK >= :from",
            ExpressionAttributeValues={
                ":pk": {"S": summary_pk(organization_id)},
                ":from": {"S": f"{first_period}#"},
            },
        ):
            yield item["SK"]["S"].split("#"), int(item.get("used", {}).get("N", "0")), item

    def period_summary(self, organization_id: str, period: str) -> PeriodSummary:
        summary = PeriodSummary()
        for parts, used, _ in self._summary_items(organization_id, period):
            if parts[0] == "GAUGE":
                summary.gauges[parts[1]] = used
            elif parts[0] != period:
                continue  # a later period (a test clock that went back is the only way to see one)
            elif parts[1] == THRESHOLD:
                summary.thresholds.add((parts[2], int(parts[3])))
            elif parts[1] not in GAUGE_METRICS:
                summary.counters[parts[1]] = summary.counters.get(parts[1], 0) + used
        return summary

    def history(self, organization_id: str, first_period: str) -> History:
        history = History()
        for parts, used, item in self._summary_items(organization_id, first_period):
            if parts[0] == "GAUGE":
                history.gauges[parts[1]] = used
            elif parts[1] == THRESHOLD:
                continue
            elif parts[1] in GAUGE_METRICS:
                previous = item.get("previous", {}).get("N")
                history.gauge_months.setdefault(parts[0], {})[parts[1]] = GaugeMonth(
                    used=used, previous=None if previous is None else int(previous)
                )
            else:
                totals = history.counters.setdefault(parts[0], {})
                totals[parts[1]] = totals.get(parts[1], 0) + used
        return history

    def daily(self, organization_id: str, period: str, metric: str) -> list[DayFigure]:
        year, month = (int(part) for part in period.split("-"))
        days: dict[int, int] = {}
        for item in self._query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :metric)",
            ExpressionAttributeValues={
                ":pk": {"S": period_pk(organization_id, period)},
                ":metric": {"S": f"{metric}#"},
            },
        ):
            day = int(item["SK"]["S"].split("#")[1])
            days[day] = days.get(day, 0) + int(item.get("used", {}).get("N", "0"))
        return [DayFigure(day=date(year, month, day), used=used) for day, used in sorted(days.items())]

    def counted_between(self, organization_id: str, start: datetime, end: datetime) -> dict[str, int]:
        """Counted metrics' totals over the UTC days of ``[start, end)`` (a billing period: each
        day belongs to the period it starts in, so consecutive periods count every day once).
        One Query per calendar month the period touches (two for a monthly period); for renewals,
        never on a request path."""
        first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        totals: dict[str, int] = {}
        month = first.replace(day=1)
        while month < last:
            period = f"{month.year:04d}-{month.month:02d}"
            for item in self._query(
                KeyConditionExpression="PK = :pk",
                ExpressionAttributeValues={":pk": {"S": period_pk(organization_id, period)}},
            ):
                metric, day, _ = item["SK"]["S"].split("#")
                if metric in GAUGE_METRICS or not first <= date(month.year, month.month, int(day)) < last:
                    continue
                totals[metric] = totals.get(metric, 0) + int(item.get("used", {}).get("N", "0"))
            month = (month + timedelta(days=32)).replace(day=1)
        return totals


def _chunks(ordered: Sequence[Measurement]) -> Iterator[list[Measurement]]:
    """Consecutive runs whose claims plus counter additions (two per metric and day with a counted
    quantity: day and month) fit one transaction."""
    chunk: list[Measurement] = []
    groups: set[tuple[str, str, str]] = set()
    size = 0
    for m in ordered:
        key = (m.period, m.metric, m.day)
        grows = 1 + (2 if m.metric not in GAUGE_METRICS and key not in groups else 0)
        if size + grows > MAX_TRANSACTION_ITEMS:
            yield chunk
            chunk, groups, size = [], set(), 0
            grows = 1 + (0 if m.metric in GAUGE_METRICS else 2)
        chunk.append(m)
        size += grows
        if m.metric not in GAUGE_METRICS:
            groups.add(key)
    if chunk:
        yield chunk


class SubscriptionTerms:
    """``domain.usage.TermsSource`` over the subscription item and the catalog; the quotas take
    the attached add-ons' increments."""

    def __init__(
        self,
        current: Callable[[str], Subscription | None],
        plan: Callable[[str], Plan],
        addon_increments: Callable[[Subscription], Sequence[Mapping[str, int]]] = lambda subscription: (),
    ) -> None:
        self._current = current
        self._plan = plan
        self._addon_increments = addon_increments

    def terms(self, organization_id: str, now: datetime) -> Terms:
        subscription = current_or_free(
            organization_id, self._current(organization_id), partial(self._plan, FREE_PLAN), now
        )
        return Terms(
            plan=subscription.plan,
            status=subscription.status,
            features=subscription.features,
            quotas=effective_quotas(subscription.limits, self._addon_increments(subscription)),
        )

    def overage(self, plan: str) -> Mapping[str, OveragePrice]:
        try:
            return dict(self._plan(plan).overage)
        except PlanNotFound:
            return {}


def default_usage_items() -> UsageItems:
    return UsageItems(dynamodb_client(), get_settings().table_name)


def default_terms() -> SubscriptionTerms:
    from tagih.store.catalog import get_plan
    from tagih.store.subscriptions import default_subscription_items

    return SubscriptionTerms(default_subscription_items().current, get_plan, addon_increments)
