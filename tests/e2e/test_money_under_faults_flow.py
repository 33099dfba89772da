"""Money under faults on the local stack, over HTTP, with real process deaths: the wallet
function's worker is killed (``POST /_local/faults``: it ``os._exit``\\s right after its k-th AWS
call was answered, as a Lambda instance killed mid-request stops) at every boundary of a keyed
card top-up, and the client then retries the same ``Idempotency-Key`` once the dead request's
in-progress mark lapsed. Each case ends with one capture at the Midtrans fake, one credited entry
and the balance it says: never an entry pending for ever, a second charge, or a credit twice.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e

CARD_TOKEN = "481111-1114-one-time-7d1b"
AMOUNT = 100_000
MAX_CALLS = 40  # far more AWS calls than a top-up makes: the loop ends when one goes through


def lapse_requests_in_progress(stack: LocalStack, org: str) -> None:
    """What time does to a dead request's key: its in-progress mark expires (Powertools then runs
    the same key again rather than answering 409 request_in_progress)."""
    dynamodb, table = stack.aws_client("dynamodb"), stack.table_name()
    found = dynamodb.query(
        TableName=table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"IDEMPOTENCY#{org}"}},
    )["Items"]
    for item in found:
        if item.get("status", {}).get("S") == "INPROGRESS":
            dynamodb.update_item(
                TableName=table,
                Key={"PK": item["PK"], "SK": item["SK"]},
                UpdateExpression="SET in_progress_expiration = :lapsed",
                ExpressionAttributeValues={":lapsed": {"N": "1"}},
            )


def captures(stack: LocalStack, order_id: str) -> int:
    charges = requests.get(
        f"{stack.health['midtrans_endpoint']}/_fake/charges", params={"order_id": order_id}, timeout=10
    )
    charges.raise_for_status()
    body: Any = charges.json()
    listed = body["items"] if isinstance(body, dict) else body
    return sum(1 for charge in listed if charge["transaction_status"] == "capture")


def test_a_keyed_card_top_up_killed_after_any_aws_call_and_retried_charges_and_credits_once(
    local_stack: LocalStack,
) -> None:
    killed, orgs = 0, []
    for call in range(1, MAX_CALLS + 1):
        org = f"org_kill_{call}_{uuid.uuid4().hex[:6]}"
        orgs.append(org)
        headers = {**local_stack.headers(org, "owner"), "Idempotency-Key": "top-up-1"}
        card = local_stack.request(
            "POST",
            "/billing/payment-methods",
            headers=headers | {"Idempotency-Key": "card"},
            json={"type": "credit_card", "token": CARD_TOKEN},
        )
        assert card.status_code == 201, card.text
        planned = local_stack.request(
            "POST", "/_local/faults", json={"function": "WalletFunction", "at_call": call, "when": "after"}
        )
        assert planned.status_code == 202, planned.text

        first = local_stack.request(
            "POST", "/billing/wallet/top-up", headers=headers, json={"amount": AMOUNT}
        )
        if first.status_code == 201:  # the request made fewer calls: every boundary was tried
            break
        assert first.status_code >= 500, first.text  # the instance died: no answer of ours
        killed += 1
        lapse_requests_in_progress(local_stack, org)

        retried = local_stack.request(
            "POST", "/billing/wallet/top-up", headers=headers, json={"amount": AMOUNT}
        )

        assert retried.status_code == 201, (call, retried.text)
        entry = retried.json()
        assert entry["status"] == "succeeded", (call, entry)
        ledger = local_stack.request("GET", "/billing/wallet/transactions", headers=headers).json()["items"]
        assert [(t["id"], t["status"]) for t in ledger] == [(entry["id"], "succeeded")], call
        assert local_stack.request("GET", "/billing/wallet", headers=headers).json()["balance"] == AMOUNT
        assert captures(local_stack, entry["gateway_order_id"]) == 1, call
    print(f"keyed card top-up: the wallet function killed after each of its {killed} AWS calls, then retried")
    assert killed >= 5
    local_stack.run_the_janitor()
    assert [org for org in orgs if local_stack.in_flight(org)] == []


def test_an_invoice_paid_by_card_cancels_its_virtual_account_so_it_cannot_be_paid_twice(
    local_stack: LocalStack,
) -> None:
    org = f"org_superseded_{uuid.uuid4().hex[:6]}"
    headers = local_stack.headers(org, "owner")
    local_stack.aws_client("dynamodb").put_item(
        TableName=local_stack.table_name(), Item={"PK": {"S": f"ORG#{org}"}, "SK": {"S": "TRIALLED"}}
    )

    def call(method: str, path: str, body: Any = None) -> Any:
        answer = local_stack.request(method, path, headers=headers, json=body)
        assert answer.status_code < 300, answer.text
        return answer.json()

    bca = call("POST", "/billing/payment-methods", {"type": "bank_transfer", "bank": "bca"})["id"]
    card = call("POST", "/billing/payment-methods", {"type": "credit_card", "token": CARD_TOKEN})["id"]
    assert (
        call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": bca})["status"]
        == "incomplete"
    )
    [invoice] = call("GET", "/billing/invoices")["items"]
    order_id = f"{invoice['id']}-a1"  # the virtual account the payer was shown
    assert (
        call("POST", f"/billing/invoices/{invoice['id']}/pay", {"payment_method_id": card})["status"]
        == "paid"
    )

    late = local_stack.request("POST", "/_local/midtrans/settle", json={"order_id": order_id})

    assert (late.status_code, late.json()["error"]["code"]) == (409, "order_closed"), late.text
    assert call("GET", "/billing/wallet/transactions")["items"] == []  # nothing taken, nothing to credit
    assert [i["status"] for i in call("GET", "/billing/invoices")["items"]] == ["paid"]
