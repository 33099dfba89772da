"""The wallet and add-ons on the local stack, over HTTP, on a test clock:

- a BCA virtual-account top-up stays pending until ``/_local/midtrans/settle``, which credits it
  once; settling the same order again credits nothing;
- the next renewal is paid half by the wallet and half by the card, and the debit that empties the
  wallet below its threshold starts exactly one auto-recharge, charged to the card;
- an add-on attached mid-period is invoiced prorated to the rupiah, renewed with its own line, and
  raises the members quota ``GET /billing/usage`` reports.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e

CARD_TOKEN = "481111-1114-one-time-7d1b"
PRO_WITH_PPN = 331_890
HALF = PRO_WITH_PPN // 2  # 165,945: the wallet pays it, the card the other half


class Org:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.id = f"org_wallet_{uuid.uuid4().hex[:8]}"
        self.headers = stack.headers(self.id, "owner")

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        answer = self.stack.request(method, path, headers=self.headers, json=body)
        assert answer.status_code == status, answer.text
        return answer.json()

    def advance(self, to: str) -> list[str]:
        moved = self.call("POST", "/billing/test-clock/advance", {"to": to})
        return [p["action"] for p in moved["processed"]]

    def balance(self) -> int:
        return int(self.call("GET", "/billing/wallet")["balance"])

    def transactions(self) -> list[tuple[str, str, int, int | None]]:
        items = self.call("GET", "/billing/wallet/transactions")["items"]
        return [(t["type"], t["status"], t["amount"], t["balance_after"]) for t in items]

    def events(self, kind: str) -> list[dict[str, Any]]:
        items = self.stack.request("GET", "/_local/events", params={"type": kind}).json()["items"]
        return [e["detail"] for e in items if e["detail"]["organization_id"] == self.id]

    def settle(self, order_id: str) -> None:
        settled = self.stack.request("POST", "/_local/midtrans/settle", json={"order_id": order_id})
        assert settled.status_code == 200, settled.text


def test_top_up_by_transfer_then_a_renewal_paid_half_by_the_wallet_with_one_auto_recharge(
    local_stack: LocalStack,
) -> None:
    org = Org(local_stack)
    org.call("POST", "/billing/test-clock", {"frozen_time": "2027-01-04T00:00:00Z"}, status=201)
    card = org.call(
        "POST", "/billing/payment-methods", {"type": "credit_card", "token": CARD_TOKEN}, status=201
    )
    bca = org.call("POST", "/billing/payment-methods", {"type": "bank_transfer", "bank": "bca"}, status=201)
    org.call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": card["id"]}, status=201)
    assert org.advance("2027-01-18T00:00:00Z")[-1] == "end_trial"  # paid by card: the wallet is empty

    top_up = org.call(
        "POST", "/billing/wallet/top-up", {"amount": HALF, "payment_method_id": bca["id"]}, status=201
    )

    assert (top_up["type"], top_up["status"], top_up["amount"]) == ("top_up", "pending", HALF)
    assert top_up["gateway_order_id"]
    assert org.balance() == 0
    org.settle(top_up["gateway_order_id"])  # answers once the notification was handled
    assert org.balance() == HALF
    org.settle(top_up["gateway_order_id"])  # Midtrans sends the same settlement again
    assert org.balance() == HALF
    assert org.transactions() == [("top_up", "succeeded", HALF, HALF)]
    assert len(org.events("billing.wallet.topped_up")) == 1

    org.call(
        "PUT",
        "/billing/wallet/auto-recharge",
        {"enabled": True, "threshold": 50_000, "amount": 100_000, "payment_method_id": card["id"]},
    )
    assert org.advance("2027-02-18T01:00:00Z") == ["renew"]

    renewal = org.call("GET", "/billing/invoices")["items"][0]
    assert (renewal["billing_reason"], renewal["status"], renewal["total"]) == (
        "subscription_cycle",
        "paid",
        PRO_WITH_PPN,
    )
    assert (renewal["credits_applied"], renewal["amount_paid"]) == (HALF, PRO_WITH_PPN - HALF)
    assert org.balance() == 100_000  # emptied by the renewal, then recharged once
    assert [(kind, status, amount) for kind, status, amount, _ in org.transactions()] == [
        ("top_up", "succeeded", 100_000),
        ("invoice_payment", "succeeded", -HALF),
        ("top_up", "succeeded", HALF),
    ]
    [low] = org.events("billing.wallet.low_balance")
    assert (low["data"]["balance"], low["data"]["threshold"]) == (0, 50_000)
    assert len(org.events("billing.wallet.topped_up")) == 2


def test_an_add_on_is_prorated_renewed_and_raises_the_quota(local_stack: LocalStack) -> None:
    org = Org(local_stack)
    org.call("POST", "/billing/test-clock", {"frozen_time": "2027-03-01T00:00:00Z"}, status=201)
    org.call("POST", "/billing/payment-methods", {"type": "credit_card", "token": CARD_TOKEN}, status=201)
    sub = org.call("POST", "/billing/subscriptions", {"plan": "pro"}, status=201)
    org.advance("2027-03-15T00:00:00Z")  # the trial ends: the period is [03-15, 04-15), 31 days
    org.advance("2027-03-26T00:00:00Z")  # 20 of 31 days left

    seats = org.call(
        "POST",
        f"/billing/subscriptions/{sub['id']}/addons",
        {"addon": "extra-members", "quantity": 4},
        status=201,
    )

    # 4 seats at 15,000 for 20/31 of the period: 60,000 x 20/31 = 38,709.68 -> 38,710; PPN 4,258.1 -> 4,258.
    invoice = seats["prorated_invoice"]
    assert [(line["description"], line["amount"]) for line in invoice["lines"]] == [
        ("Remaining time on Extra members (4 units, monthly)", 38_710)
    ]
    assert (invoice["subtotal"], invoice["tax"], invoice["total"], invoice["status"]) == (
        38_710,
        4_258,
        42_968,
        "paid",
    )
    assert org.call("GET", "/billing/usage")["metrics"]["members"]["quota"] == 24

    assert org.advance("2027-04-15T01:00:00Z") == ["renew"]
    renewal = org.call("GET", "/billing/invoices")["items"][0]
    assert [(line["description"], line["quantity"], line["amount"]) for line in renewal["lines"]] == [
        ("Pro (monthly)", 1, 299_000),
        ("Extra members (4 units, monthly)", 4, 60_000),
    ]
    assert (renewal["subtotal"], renewal["tax"], renewal["total"]) == (359_000, 39_490, 398_490)
