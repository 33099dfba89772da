"""Usage on the local stack over HTTP: a Pro organization reports 85 000 API calls and is warned once
at 80 %; sending the same ids again counts nothing; its product's own producer then reports more
through EventBridge (``tagih.usage`` → SQS → the ingest batch) and crossing 100 % warns once more.
A downgrade from Business to Pro with 30 members makes members read-only in the entitlements."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import LocalStack, eventually

pytestmark = pytest.mark.e2e


def new_org() -> str:
    return f"org_usage_{uuid.uuid4().hex[:8]}"


def thresholds(stack: LocalStack, org: str) -> list[dict[str, Any]]:
    items = stack.request("GET", "/_local/events?type=billing.usage.threshold").json()["items"]
    return [e["detail"]["data"] for e in items if e["detail"]["organization_id"] == org]


def calls(count: int, quantity: int, prefix: str) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i}", "metric": "api_calls", "quantity": quantity} for i in range(count)]


def put_usage_event(stack: LocalStack, org: str, events: list[dict[str, Any]]) -> None:
    """What the product's own producer does: a ``tagih.usage`` event on the billing bus."""
    client = stack.aws_client("events")
    [bus] = [b["Name"] for b in client.list_event_buses()["EventBuses"] if b["Name"].startswith("tagih-")]
    answer = client.put_events(
        Entries=[
            {
                "EventBusName": bus,
                "Source": "tagih.usage",
                "DetailType": "usage.reported",
                "Detail": json.dumps({"organization_id": org, "events": events}),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0, answer


def test_a_pro_organization_is_warned_at_80_and_100_percent_once_each(local_stack: LocalStack) -> None:
    org = new_org()
    owner = local_stack.headers(org, "owner")
    subscribed = local_stack.request("POST", "/billing/subscriptions", headers=owner, json={"plan": "pro"})
    assert subscribed.status_code == 201, subscribed.text

    reported = local_stack.request(
        "POST", "/billing/usage/events", headers=owner, json={"events": calls(850, 100, "batch1")}
    )

    assert reported.status_code == 202, reported.text
    assert reported.json() == {"accepted": 850, "duplicates": 0, "rejected": []}
    usage = local_stack.request("GET", "/billing/usage", headers=owner).json()
    assert usage["plan"] == "pro"
    assert usage["metrics"]["api_calls"] == {"used": 85_000, "quota": 100_000, "percent": 85.0}
    [warning] = eventually(lambda: thresholds(local_stack, org), "80 % event")
    assert (warning["threshold"], warning["used"], warning["quota"]) == (80, 85_000, 100_000)

    again = local_stack.request(
        "POST", "/billing/usage/events", headers=owner, json={"events": calls(850, 100, "batch1")}
    )
    assert again.json() == {"accepted": 0, "duplicates": 850, "rejected": []}
    assert (
        local_stack.request("GET", "/billing/usage", headers=owner).json()["metrics"]["api_calls"]["used"]
        == 85_000
    )

    put_usage_event(local_stack, org, calls(150, 100, "producer"))

    def api_calls_used() -> int:
        used: int = local_stack.request("GET", "/billing/usage", headers=owner).json()["metrics"][
            "api_calls"
        ]["used"]
        return used

    eventually(lambda: api_calls_used() == 100_000, "API calls counted from the producer's event")
    found = eventually(
        lambda: len(thresholds(local_stack, org)) >= 2 and thresholds(local_stack, org), "100 % event"
    )
    assert [(w["threshold"], w["used"]) for w in found] == [(80, 85_000), (100, 100_000)]
    entitlements = local_stack.request("GET", "/billing/entitlements", headers=owner).json()
    assert entitlements["allowed"]["api_calls"] is True  # Pro prices API calls beyond the quota


def test_a_downgrade_with_30_members_lists_members_read_only(local_stack: LocalStack) -> None:
    org = new_org()
    owner = local_stack.headers(org, "owner")
    business = local_stack.request("POST", "/billing/subscriptions", headers=owner, json={"plan": "business"})
    assert business.status_code == 201, business.text
    members = {"events": [{"id": "members-1", "metric": "members", "quantity": 30, "action": "set"}]}
    assert (
        local_stack.request("POST", "/billing/usage/events", headers=owner, json=members).status_code == 202
    )
    assert local_stack.request("GET", "/billing/entitlements", headers=owner).json()["read_only"] == []

    changed = local_stack.request(
        "POST", f"/billing/subscriptions/{business.json()['id']}/change", headers=owner, json={"plan": "pro"}
    )

    assert changed.status_code == 200, changed.text
    entitlements = local_stack.request("GET", "/billing/entitlements", headers=owner).json()
    assert entitlements["plan"] == "pro"
    assert entitlements["read_only"] == ["members"]
    assert (entitlements["usage"]["members"], entitlements["limits"]["members"]) == (30, 20)
    assert entitlements["allowed"]["members"] is False
