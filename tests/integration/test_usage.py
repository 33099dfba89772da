"""Usage through the real handlers on moto: reporting over HTTP and from SQS, duplicates, the
DynamoDB requests a batch costs, single-Query reads, thresholds once under racing batches, the
entitlements after a downgrade and while suspended, and the previous period's totals for overage."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tagih import clock
from tagih.domain.usage import UsageEvent
from tagih.services.usage import report_usage
from tagih.store.table import reset_clients
from tagih.store.usage import UsageItems, default_terms, default_usage_items
from tests.conftest import BUS_NAME, TABLE_NAME
from tests.fakes.aws_calls import count_calls
from tests.fakes.gateway_env import event_queue, received_events
from tests.fakes.lambda_runtime import (
    Answer,
    FakeLambdaContext,
    PinnedClock,
    call_api,
    http_event,
    load_function,
    principal,
)
from tests.fakes.usage_store import RecordingPublisher

ORG = "org_usage"
NOW = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)
EVENTS = "/billing/usage/events"
WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


@pytest.fixture(autouse=True)
def pinned(catalog: None) -> Iterator[PinnedClock]:
    at = PinnedClock(NOW)
    clock.use_wall_clock(at)
    yield at
    clock.use_wall_clock(None)


def call(method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    kwargs.setdefault("org", ORG)
    if "?" not in path:
        return call_api(method, path, body=body, **kwargs)
    # A query string: the event carries it apart from the path, as API Gateway builds it.
    path, raw_query = path.split("?", 1)
    route = "/billing/usage/{metric}" if path.count("/") == 3 and not path.endswith("/history") else path
    event = http_event(
        method,
        path,
        route=route,
        query=dict(pair.split("=", 1) for pair in raw_query.split("&")),
        path_parameters={"metric": path.rsplit("/", 1)[1]} if route != path else None,
        authorizer=principal(kwargs["org"], kwargs.get("role", "owner")),
    )
    return Answer(load_function("usage").lambda_handler(event, FakeLambdaContext()))


def api_calls(count: int, *, quantity: int = 1, prefix: str = "call") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i}", "metric": "api_calls", "quantity": quantity} for i in range(count)]


def report(events: list[dict[str, Any]], **kwargs: Any) -> Answer:
    answer = call("POST", EVENTS, {"events": events}, **kwargs)
    return answer


def subscribe(plan: str, org: str = ORG) -> dict[str, Any]:
    answer = call("POST", "/billing/subscriptions", {"plan": plan}, org=org)
    assert answer.status == 201, answer.raw
    return answer.body


def thresholds_on_the_bus(queue: str) -> list[dict[str, Any]]:
    return [
        e["detail"]["data"]  # type: ignore[index]
        for e in received_events(queue)
        if e["detail-type"] == "billing.usage.threshold"
    ]


# -- reporting over HTTP --------------------------------------------------------------------------------
def test_a_pro_organization_reports_85_000_api_calls_and_is_warned_once() -> None:
    queue = event_queue(BUS_NAME)
    subscribe("pro")

    first = report(api_calls(850, quantity=100))
    again = report(api_calls(850, quantity=100))

    assert first.status == 202, first.raw
    assert first.body == {"accepted": 850, "duplicates": 0, "rejected": []}
    assert again.body == {"accepted": 0, "duplicates": 850, "rejected": []}
    usage = call("GET", "/billing/usage").body
    assert (usage["plan"], usage["period"]) == ("pro", "2026-02")
    assert usage["metrics"]["api_calls"] == {"used": 85_000, "quota": 100_000, "percent": 85.0}
    assert usage["metrics"]["members"] == {"used": 0, "quota": 20, "percent": 0.0}
    [warning] = thresholds_on_the_bus(queue)
    assert warning == {
        "metric": "api_calls",
        "period": "2026-02",
        "threshold": 80,
        "used": 85_000,
        "quota": 100_000,
        "percent": 85,
    }

    report(api_calls(150, quantity=100, prefix="more"))
    assert [w["threshold"] for w in thresholds_on_the_bus(queue)] == [100]


def test_a_batch_of_1000_events_costs_a_transaction_per_hundred_items() -> None:
    with count_calls() as calls:
        answer = report(api_calls(1000))

    assert answer.body["accepted"] == 1000
    writes = {name: n for name, n in calls.items() if name in WRITES}
    # 98 claims + the day and month counters per transaction: ceil(1000 / 98) = 11.
    assert writes == {"TransactWriteItems": 11}
    assert call("GET", "/billing/usage").body["metrics"]["api_calls"]["used"] == 1000


def test_every_read_is_one_query_of_one_partition() -> None:
    report([*api_calls(5), {"id": "m", "metric": "members", "quantity": 2}])
    for path in (
        "/billing/usage",
        "/billing/usage/api-calls?period=2026-02",
        "/billing/usage/history?period=6m",
        "/billing/entitlements",
    ):
        queries: list[str] = []

        def record(params: dict[str, Any], queries: list[str] = queries, **_: Any) -> None:
            queries.append(params["ExpressionAttributeValues"][":pk"]["S"])

        session = boto3._get_default_session()
        reset_clients()
        session.events.register("provide-client-params.dynamodb.Query", record)
        try:
            with count_calls() as calls:
                answer = call("GET", path)
        finally:
            session.events.unregister("provide-client-params.dynamodb.Query", record)
        assert answer.status == 200, answer.raw
        assert "Scan" not in calls
        assert len(queries) == 1, (path, queries)
        assert queries[0].startswith(f"USAGE#{ORG}")


def test_a_metric_by_day_and_the_history() -> None:
    january = datetime(2026, 1, 31, 22, 0, tzinfo=UTC)
    report(
        [
            {"id": "jan", "metric": "api_calls", "quantity": 7, "timestamp": "2026-01-31T22:00:00Z"},
            {"id": "feb-1", "metric": "api_calls", "quantity": 3, "timestamp": "2026-02-01T00:00:00Z"},
            {"id": "feb-20", "metric": "api_calls", "quantity": 4},
            {"id": "exports", "metric": "exports", "quantity": 2},
        ]
    )
    february = call("GET", "/billing/usage/api_calls").body
    previous = call("GET", "/billing/usage/api-calls?period=2026-01").body
    history = call("GET", "/billing/usage/history?period=3m").body

    assert february == {
        "metric": "api_calls",
        "period": "2026-02",
        "used": 7,
        "quota": 10_000,
        "percent": 0.1,
        "daily": [{"date": "2026-02-01", "used": 3}, {"date": "2026-02-20", "used": 4}],
    }
    assert (previous["used"], previous["daily"]) == (7, [{"date": january.date().isoformat(), "used": 7}])
    assert [(i["period"], i["metrics"]["api_calls"]["used"]) for i in history["items"]] == [
        ("2026-02", 7),
        ("2026-01", 7),
        ("2025-12", 0),
    ]
    assert history["items"][0]["metrics"]["exports"] == {"used": 2, "quota": None, "percent": None}


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", EVENTS, {"events": []}, "events"),
        ("POST", EVENTS, {"events": api_calls(1001)}, "events"),
        ("POST", EVENTS, {"events": [{"id": "a", "metric": "api_calls"}]}, "events.0.quantity"),
        (
            "POST",
            EVENTS,
            {"events": [{"id": "a", "metric": "api_calls", "quantity": 1, "org": "x"}]},
            "events.0.org",
        ),
        ("POST", EVENTS, {"events": api_calls(1), "organization_id": "org_2"}, "organization_id"),
        ("GET", "/billing/usage/api_calls?period=2026-13", None, "query.period"),
        ("GET", "/billing/usage/history?period=36m", None, "query.period"),
        ("GET", "/billing/usage/no%20such", None, "path.metric"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(method: str, path: str, body: Any, field: str) -> None:
    answer = call(method, path, body)
    assert answer.status == 422, answer.raw
    assert answer.error_code == "validation_error"
    assert field in answer.fields


def test_members_read_and_admins_report() -> None:
    assert report(api_calls(1), role="member").error_code == "forbidden"
    assert call("GET", "/billing/usage", role="member").status == 200
    assert call("GET", "/billing/entitlements", role="member").status == 200


def test_an_idempotency_key_replays_the_receipt() -> None:
    headers = {"Idempotency-Key": "usage-batch-1"}
    first = report(api_calls(3), headers=headers)
    second = report(api_calls(3), headers=headers)
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.body == first.body == {"accepted": 3, "duplicates": 0, "rejected": []}


def test_one_organizations_usage_is_not_anothers() -> None:
    report(api_calls(4, quantity=10))
    assert call("GET", "/billing/usage", org="org_other").body["metrics"]["api_calls"]["used"] == 0
    assert report(api_calls(4, quantity=10), org="org_other").body["accepted"] == 4  # same ids, other org


# -- thresholds under racing batches --------------------------------------------------------------------
def test_twenty_concurrent_batches_crossing_80_percent_publish_one_event() -> None:
    queue = event_queue(BUS_NAME)
    subscribe("pro")
    report(api_calls(1, quantity=70_000, prefix="base"))
    # Every batch reads the totals only once all twenty have written theirs, so each sees 82 000
    # of 100 000 and each tries to write the marker: the conditional write must pick one.
    barrier = threading.Barrier(20, timeout=60)

    def wait_for_all(params: dict[str, Any], **_: Any) -> None:
        if params.get("ExpressionAttributeValues", {}).get(":pk", {}).get("S") == f"USAGE#{ORG}":
            barrier.wait()

    session = boto3._get_default_session()
    reset_clients()
    session.events.register("provide-client-params.dynamodb.Query", wait_for_all)
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(
                pool.map(
                    lambda n: report(api_calls(6, quantity=100, prefix=f"batch{n}"), container=n + 1),
                    range(20),
                )
            )
    finally:
        session.events.unregister("provide-client-params.dynamodb.Query", wait_for_all)
        reset_clients()

    assert [a.status for a in answers] == [202] * 20
    assert call("GET", "/billing/usage").body["metrics"]["api_calls"]["used"] == 82_000
    assert [(w["threshold"], w["used"]) for w in thresholds_on_the_bus(queue)] == [(80, 82_000)]


# -- entitlements -----------------------------------------------------------------------------------------
def test_a_downgrade_from_business_to_pro_with_30_members_makes_members_read_only() -> None:
    subscription = subscribe("business")  # a trial: the change below applies at once
    report([{"id": "members-1", "metric": "members", "quantity": 30}])
    before = call("GET", "/billing/entitlements").body
    assert (before["plan"], before["read_only"], before["allowed"]["members"]) == ("business", [], True)

    changed = call("POST", f"/billing/subscriptions/{subscription['id']}/change", {"plan": "pro"})
    assert changed.status == 200, changed.raw

    after = call("GET", "/billing/entitlements").body
    assert after["plan"] == "pro"
    assert after["read_only"] == ["members"]
    assert after["usage"]["members"] == 30
    assert after["limits"]["members"] == 20
    assert after["allowed"]["members"] is False
    assert after["allowed"]["api_calls"] is True
    assert after["features"]["sso"] is False
    # Nothing was deleted: the figures still say 30.
    assert call("GET", "/billing/usage").body["metrics"]["members"]["used"] == 30


def suspend(org: str) -> None:
    event = http_event(
        "POST",
        f"/billing/operator/organizations/{org}/suspend",
        route="/billing/operator/organizations/{org_id}/suspend",
        body={"reason": "unpaid"},
        path_parameters={"org_id": org},
        authorizer={
            "organization_id": "org_ops",
            "role": "",
            "subject": "operator_1",
            "scopes": "billing:operator",
            "method": "jwt",
        },
    )
    answer = Answer(load_function("operator").lambda_handler(event, FakeLambdaContext()))
    assert answer.status == 200, answer.raw


def test_a_suspended_organization_may_write_nothing() -> None:
    subscribe("pro")
    report(api_calls(2))
    suspend(ORG)

    refused = report(api_calls(2, prefix="later"))
    seen = call("GET", "/billing/entitlements").body

    assert (refused.status, refused.error_code) == (403, "organization_suspended")
    assert seen["status"] == "suspended"
    assert set(seen["allowed"].values()) == {False}
    assert call("GET", "/billing/usage").body["metrics"]["api_calls"]["used"] == 2


def test_entitlements_of_an_organization_on_free() -> None:
    seen = call("GET", "/billing/entitlements").body
    assert (seen["plan"], seen["status"], seen["read_only"]) == ("free", "active", [])
    assert seen["limits"]["api_calls"] == 10_000
    assert seen["allowed"]["webhooks"] is False  # Free has no webhooks (quota 0)


# -- from the product's producers: EventBridge → SQS → the ingest batch ------------------------------------
def sqs_event(*details: Any) -> dict[str, Any]:
    records = []
    for detail in details:
        body = (
            detail
            if isinstance(detail, str)
            else json.dumps(
                {
                    "version": "0",
                    "id": str(uuid.uuid4()),
                    "detail-type": "usage.reported",
                    "source": "tagih.usage",
                    "detail": detail,
                }
            )
        )
        records.append(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "handle",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:usage",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


def ingest(event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = load_function("usage_ingest").lambda_handler(event, FakeLambdaContext())
    return result


def used(org: str, metric: str = "api_calls") -> int:
    return int(call("GET", "/billing/usage", org=org).body["metrics"][metric]["used"])


def test_a_batch_of_messages_is_written_per_organization_and_a_malformed_one_fails_alone() -> None:
    event = sqs_event(
        {"organization_id": "org_a", "events": api_calls(3, quantity=10)},
        {"organization_id": "org_b", "events": api_calls(2, quantity=5)},
        {"organization_id": "org_a", "events": api_calls(3, quantity=10, prefix="next")},
        {"organization_id": "org_a", "events": [{"id": "x", "metric": "api_calls"}]},
        "not json",
    )

    with count_calls() as calls:
        result = ingest(event)

    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    assert failed == {event["Records"][3]["messageId"], event["Records"][4]["messageId"]}
    assert calls["TransactWriteItems"] == 2  # one per organization: its six events together
    assert (used("org_a"), used("org_b")) == (60, 10)

    assert ingest(event)["batchItemFailures"] == result["batchItemFailures"]  # redelivered
    assert (used("org_a"), used("org_b")) == (60, 10)


def test_an_organization_whose_write_fails_fails_only_its_messages() -> None:
    event = sqs_event(
        {"organization_id": "org_a", "events": api_calls(2)},
        {"organization_id": "org_b", "events": api_calls(2)},
    )

    def refuse_org_b(params: dict[str, Any], **_: Any) -> None:
        if "USAGEEVT#org_b#" in json.dumps(params):
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "injected"}}, "TransactWriteItems"
            )

    session = boto3._get_default_session()
    reset_clients()
    session.events.register("provide-client-params.dynamodb.TransactWriteItems", refuse_org_b)
    try:
        result = ingest(event)
    finally:
        session.events.unregister("provide-client-params.dynamodb.TransactWriteItems", refuse_org_b)
        reset_clients()

    assert result["batchItemFailures"] == [{"itemIdentifier": event["Records"][1]["messageId"]}]
    assert (used("org_a"), used("org_b")) == (2, 0)
    assert ingest(event)["batchItemFailures"] == []  # the retry counts org_b once, org_a not again
    assert (used("org_a"), used("org_b")) == (2, 2)


# -- the store: gauges, claims that expired, totals of a billing period --------------------------------------
def store() -> UsageItems:
    return default_usage_items()


def usage_event(id_: str, metric: str, quantity: int, at: str) -> UsageEvent:
    return UsageEvent.model_validate({"id": id_, "metric": metric, "quantity": quantity, "timestamp": at})


def test_gauges_keep_the_latest_reading_and_what_was_in_force_before() -> None:
    publisher = RecordingPublisher()
    for id_, value, at in (
        ("m1", 4, "2026-01-20T00:00:00Z"),
        ("m3", 9, "2026-02-03T00:00:00Z"),
        ("m2", 6, "2026-02-02T00:00:00Z"),
    ):
        report_usage(
            ORG,
            [usage_event(id_, "members", value, at)],
            store=store(),
            terms=default_terms(),
            publisher=publisher,
            now=NOW,
        )

    history = store().history(ORG, "2026-01")
    assert store().period_summary(ORG, "2026-02").gauges == {"members": 9}
    assert history.gauge_months["2026-02"]["members"].used == 9
    assert history.gauge_months["2026-02"]["members"].previous == 4
    assert [(d.day.day, d.used) for d in store().daily(ORG, "2026-02", "members")] == [(2, 6), (3, 9)]


def test_a_claim_past_its_ttl_no_longer_makes_a_duplicate() -> None:
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    table.put_item(Item={"PK": f"USAGEEVT#{ORG}#old", "SK": "USAGEEVT", "ttl": int(NOW.timestamp()) - 1})
    assert report([{"id": "old", "metric": "api_calls", "quantity": 1}]).body["accepted"] == 1
    claim = table.get_item(Key={"PK": f"USAGEEVT#{ORG}#old", "SK": "USAGEEVT"})["Item"]
    assert claim["ttl"] == int(NOW.timestamp()) + 35 * 86_400


def test_counted_totals_of_a_billing_period_for_overage() -> None:
    # A period from 15 January to 15 February: the 14th and the 15th of February are outside.
    events = [
        usage_event(f"e{i}", "api_calls", quantity, at)
        for i, (quantity, at) in enumerate(
            (
                (1, "2026-01-14T23:59:59Z"),
                (10, "2026-01-15T00:00:00Z"),
                (100, "2026-01-31T12:00:00Z"),
                (1_000, "2026-02-14T23:59:59Z"),
                (10_000, "2026-02-15T00:00:00Z"),
            )
        )
    ]
    events.append(usage_event("x", "exports", 3, "2026-02-01T00:00:00Z"))
    events.append(usage_event("m", "members", 50, "2026-02-01T00:00:00Z"))
    now = datetime(2026, 2, 16, tzinfo=UTC)
    receipt = report_usage(
        ORG, events, store=store(), terms=default_terms(), publisher=RecordingPublisher(), now=now
    )
    assert receipt.accepted == len(events)

    totals = store().counted_between(
        ORG, datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 2, 15, tzinfo=UTC)
    )

    assert totals == {"api_calls": 1_110, "exports": 3}
