"""Money under faults: each charging flow, killed at every boundary between its AWS calls (and so on
either side of the gateway's), then recovered the way the real caller would (a client retrying its
Idempotency-Key once the in-progress record expired; Midtrans redelivering a notification), ends
with what was captured at the gateway equal to what the ledger credited, nothing charged twice and
nothing left in flight. The real handlers run against moto and the Midtrans fake over HTTP; only
botocore's hooks are touched (``tests.fakes.faults``). Each test prints how many cases it ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from local.midtrans_fake import MidtransFake
from tests.conftest import TABLE_NAME
from tests.fakes.billing_setup import CARD_TOKEN, add_method
from tests.fakes.faults import Boundary, run_until_it_finishes
from tests.fakes.gateway_env import configure_gateways
from tests.fakes.lambda_runtime import Answer, call_route
from tests.fakes.midtrans_server import NotificationInbox, running_midtrans_fake

TOP_UP = "/billing/wallet/top-up"
AMOUNT = 150_000


@pytest.fixture
def midtrans(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[MidtransFake]:
    with NotificationInbox() as inbox, running_midtrans_fake(notification_url=inbox.url) as fake:
        configure_gateways(monkeypatch, midtrans=fake, timeout_seconds=2.0)
        yield fake


# -- what a client does --------------------------------------------------------------------------------
def call(org: str, method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    return call_route("wallet", method, path, path, body=body, org=org, **kwargs)


def expire_requests_in_progress(org: str) -> None:
    """What the passing of time does to a dead request's Idempotency-Key record: its in-progress
    mark lapses (Powertools then runs the same key again instead of answering 409)."""
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    found = table.query(
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": f"IDEMPOTENCY#{org}"},
        ConsistentRead=True,
    )["Items"]
    for item in found:
        if item.get("status") == "INPROGRESS":
            table.update_item(
                Key={"PK": item["PK"], "SK": item["SK"]},
                UpdateExpression="SET in_progress_expiration = :lapsed",
                ExpressionAttributeValues={":lapsed": 1},
            )


def ledger(org: str) -> list[dict[str, Any]]:
    answer = call(org, "GET", "/billing/wallet/transactions", role="member")
    assert answer.status == 200, answer.raw
    return list(answer.body["items"])


def balance(org: str) -> int:
    answer = call(org, "GET", "/billing/wallet", role="member")
    assert answer.status == 200, answer.raw
    return int(answer.body["balance"])


def open_payments(org: str) -> list[dict[str, Any]]:
    """Charge attempts still in flight (claimed and never resolved)."""
    items = (
        boto3.resource("dynamodb")
        .Table(TABLE_NAME)
        .query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :payment)",
            ExpressionAttributeValues={":pk": f"ORG#{org}", ":payment": "PAYMENT#"},
            ConsistentRead=True,
        )["Items"]
    )
    return [item for item in items if item.get("status") == "processing"]


def captures(midtrans: MidtransFake, orders: set[str]) -> list[dict[str, Any]]:
    return [c for c in midtrans.charges if c["order_id"] in orders and c["transaction_status"] == "capture"]


# -- wallet top-ups ------------------------------------------------------------------------------------
def test_a_card_top_up_killed_at_any_boundary_and_retried_charges_and_credits_once(
    midtrans: MidtransFake,
) -> None:
    orgs: dict[int, str] = {}

    def attach_card(case: int) -> None:
        orgs[case] = f"org_fault_card_{case}"
        add_method(orgs[case], {"type": "credit_card", "token": CARD_TOKEN})

    def top_up(case: int, boundary: Boundary) -> None:
        org = orgs[case]
        answer = call(org, "POST", TOP_UP, {"amount": AMOUNT}, headers={"Idempotency-Key": "top-up"})
        assert answer.status == 201, (str(boundary), answer.raw)

    def retry_and_check(case: int) -> None:
        org = orgs[case]
        expire_requests_in_progress(org)
        retried = call(org, "POST", TOP_UP, {"amount": AMOUNT}, headers={"Idempotency-Key": "top-up"})
        assert retried.status == 201, (case, retried.raw)
        assert retried.body["status"] == "succeeded", (case, retried.body)
        [entry] = ledger(org)
        assert (entry["id"], entry["status"], entry["amount"]) == (retried.body["id"], "succeeded", AMOUNT)
        assert len(captures(midtrans, {entry["gateway_order_id"]})) == 1, case
        assert balance(org) == AMOUNT, case
        assert open_payments(org) == [], case

    cases = run_until_it_finishes(attach_card, top_up, retry_and_check)
    print(f"card top-up: {cases} (boundary x crash) cases, each retried and reconciled")
    assert cases >= 10
