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
from tests.fakes.billing_setup import CARD_TOKEN, add_method, mark_trialled
from tests.fakes.faults import Boundary, run_until_it_finishes
from tests.fakes.gateway_env import configure_gateways
from tests.fakes.lambda_runtime import Answer, call_api, call_route
from tests.fakes.midtrans_server import NotificationInbox, running_midtrans_fake

TOP_UP = "/billing/wallet/top-up"
SUBS = "/billing/subscriptions"
AMOUNT = 150_000
PRO_WITH_PPN = 331_890  # 299,000 + 11 % PPN
KEY = {"Idempotency-Key": "the-request"}


@pytest.fixture
def midtrans(catalog: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[MidtransFake]:
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
    return [item for item in items(org, "PAYMENT#") if item.get("status") == "processing"]


def captures(midtrans: MidtransFake, orders: set[str]) -> list[dict[str, Any]]:
    return [c for c in midtrans.charges if c["order_id"] in orders and c["transaction_status"] == "capture"]


def captured(midtrans: MidtransFake) -> int:
    """Everything the Midtrans fake captured so far (cards' verification charges are not captured)."""
    return sum(int(c["gross_amount"]) for c in midtrans.charges if c["transaction_status"] == "capture")


def items(org: str, prefix: str) -> list[dict[str, Any]]:
    return list(
        boto3.resource("dynamodb")
        .Table(TABLE_NAME)
        .query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues={":pk": f"ORG#{org}", ":prefix": prefix},
            ConsistentRead=True,
        )["Items"]
    )


def invoices_paid(org: str) -> int:
    """What the organization's invoices say was paid to them by a gateway."""
    return sum(int(invoice["amount_paid"]) for invoice in items(org, "INVOICE#"))


def check_gapless_numbers() -> None:
    """Every invoice number handed out, in every organization, is used once, with no gap."""
    scanned = boto3.resource("dynamodb").Table(TABLE_NAME).scan(ConsistentRead=True)["Items"]
    numbers = sorted(
        str(i["number"]) for i in scanned if str(i["SK"]).startswith("INVOICE#") and i.get("number")
    )
    sequence = [int(number.rsplit("-", 1)[1]) for number in numbers]
    assert sequence == list(range(1, len(sequence) + 1)), numbers


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


# -- invoices charged by a request -----------------------------------------------------------------------
def test_a_first_subscription_killed_at_any_boundary_and_retried_is_charged_and_paid_once(
    midtrans: MidtransFake,
) -> None:
    orgs: dict[int, tuple[str, str, int]] = {}

    def add_card(case: int) -> None:
        org = f"org_fault_sub_{case}"
        mark_trialled(org)  # charged at once, no trial
        orgs[case] = (org, add_method(org, {"type": "credit_card", "token": CARD_TOKEN}), captured(midtrans))

    def subscribe(case: int, boundary: Boundary) -> None:
        org, card, _ = orgs[case]
        answer = call_api("POST", SUBS, body={"plan": "pro", "payment_method_id": card}, org=org, headers=KEY)
        assert answer.status == 201, (str(boundary), answer.raw)

    def retry_and_check(case: int) -> None:
        org, card, before = orgs[case]
        expire_requests_in_progress(org)
        retried = call_api(
            "POST", SUBS, body={"plan": "pro", "payment_method_id": card}, org=org, headers=KEY
        )
        assert retried.status == 201, (case, retried.raw)
        assert retried.body["status"] == "active", (case, retried.body)
        [invoice] = items(org, "INVOICE#")
        assert (invoice["status"], int(invoice["amount_paid"])) == ("paid", PRO_WITH_PPN), case
        assert captured(midtrans) - before == invoices_paid(org) == PRO_WITH_PPN, case
        assert open_payments(org) == [], case

    cases = run_until_it_finishes(add_card, subscribe, retry_and_check)
    check_gapless_numbers()
    print(f"first subscription charge: {cases} (boundary x crash) cases, each retried and reconciled")
    assert cases >= 10
