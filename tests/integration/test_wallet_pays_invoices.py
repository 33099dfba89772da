"""The wallet pays invoices before any card, through the real handlers on moto and the Midtrans fake:

- a first invoice is paid partly by the wallet and the rest by card; when that card is declined,
  nothing is kept and the wallet gets its money back (a ``refund`` entry);
- a dunned renewal is paid entirely from the wallet by ``POST /billing/invoices/{id}/pay``, and
  the subscription recovers without any card charge;
- a dunning retry takes what was topped up since and charges the card only the rest;
- a first invoice the wallet covers whole starts the subscription with no card charge;
- a first invoice left unpaid by a bank transfer that never came is voided and the wallet's part
  given back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from local.midtrans_fake import MidtransFake
from tagih.clock import to_rfc3339
from tests.fakes.billing_setup import (
    CARD_TOKEN,
    DECLINING,
    add_method,
    invoice_charges,
    mark_trialled,
    set_card_token,
)
from tests.fakes.lambda_runtime import Answer, call_api

ORG = "org_wallet_pays"
PRO_WITH_PPN = 331_890
STARTED = datetime(2027, 3, 1, tzinfo=UTC)
RENEWED = datetime(2027, 4, 1, tzinfo=UTC)


def call(method: str, path: str, body: Any = None) -> Answer:
    return call_api(method, path, body=body, org=ORG)


def top_up(amount: int, method: str) -> None:
    answer = call("POST", "/billing/wallet/top-up", {"amount": amount, "payment_method_id": method})
    assert answer.status == 201, answer.raw
    assert answer.body["status"] == "succeeded"


def ledger() -> list[tuple[str, int, int]]:
    items = call("GET", "/billing/wallet/transactions").body["items"]
    return [(t["type"], t["amount"], t["balance_after"]) for t in reversed(items)]  # oldest first


def a_declined_renewal() -> tuple[str, dict[str, Any]]:
    """Pro on a test clock from ``STARTED``, its card declining since: (the card, the open renewal)."""
    assert call("POST", "/billing/test-clock", {"frozen_time": to_rfc3339(STARTED)}).status == 201
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    assert call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": card}).status == 201
    set_card_token(ORG, card, DECLINING)
    renewed = call("POST", "/billing/test-clock/advance", {"to": to_rfc3339(RENEWED + timedelta(hours=1))})
    assert renewed.status == 200, renewed.raw
    return card, call("GET", "/billing/invoices").body["items"][0]


def test_a_first_invoice_is_paid_by_the_wallet_first_and_a_declined_rest_gives_it_back(
    midtrans: MidtransFake,
) -> None:
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    top_up(100_000, card)
    set_card_token(ORG, card, DECLINING)

    declined = call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": card})

    assert declined.status == 402, declined.raw
    assert call("GET", "/billing/wallet").body["balance"] == 100_000
    assert ledger() == [
        ("top_up", 100_000, 100_000),
        ("invoice_payment", -100_000, 0),
        ("refund", 100_000, 100_000),
    ]
    assert call("GET", "/billing/invoices").body["items"] == []

    set_card_token(ORG, card, CARD_TOKEN)
    subscribed = call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": card})

    assert subscribed.status == 201, subscribed.raw
    [invoice] = call("GET", "/billing/invoices").body["items"]
    assert (invoice["status"], invoice["credits_applied"], invoice["amount_paid"]) == (
        "paid",
        100_000,
        PRO_WITH_PPN - 100_000,
    )
    assert invoice_charges(midtrans)[-1]["gross_amount"] == PRO_WITH_PPN - 100_000
    assert call("GET", "/billing/wallet").body["balance"] == 0


def test_a_first_invoice_the_wallet_covers_starts_the_subscription_with_no_card_charge(
    midtrans: MidtransFake,
) -> None:
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    top_up(400_000, card)
    charges_before = len(invoice_charges(midtrans))

    subscribed = call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": card})

    assert subscribed.status == 201, subscribed.raw
    assert subscribed.body["status"] == "active"
    [invoice] = call("GET", "/billing/invoices").body["items"]
    assert (invoice["status"], invoice["credits_applied"], invoice["amount_paid"]) == (
        "paid",
        PRO_WITH_PPN,
        0,
    )
    assert len(invoice_charges(midtrans)) == charges_before
    assert call("GET", "/billing/wallet").body["balance"] == 400_000 - PRO_WITH_PPN


def test_a_dunned_renewal_paid_now_from_the_wallet_recovers_the_subscription(midtrans: MidtransFake) -> None:
    _, renewal = a_declined_renewal()
    assert (renewal["status"], call("GET", "/billing/subscription").body["status"]) == ("open", "past_due")
    other = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN, "is_default": False})
    top_up(400_000, other)
    charges_before = len(invoice_charges(midtrans))

    paid = call("POST", f"/billing/invoices/{renewal['id']}/pay", {})

    assert paid.status == 200, paid.raw
    assert (paid.body["status"], paid.body["credits_applied"], paid.body["amount_paid"]) == (
        "paid",
        PRO_WITH_PPN,
        0,
    )
    assert len(invoice_charges(midtrans)) == charges_before  # no card was charged
    assert call("GET", "/billing/wallet").body["balance"] == 400_000 - PRO_WITH_PPN
    assert call("GET", "/billing/subscription").body["status"] == "active"
    replay = call("POST", f"/billing/invoices/{renewal['id']}/pay", {})
    assert (replay.status, replay.error_code) == (409, "invoice_not_payable")
    assert call("GET", "/billing/wallet").body["balance"] == 400_000 - PRO_WITH_PPN


def test_a_dunning_retry_takes_what_was_topped_up_since_before_the_card(midtrans: MidtransFake) -> None:
    card, renewal = a_declined_renewal()
    other = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN, "is_default": False})
    top_up(200_000, other)
    set_card_token(ORG, card, CARD_TOKEN)  # the customer's card works again
    charges_before = len(invoice_charges(midtrans))

    retried = call(
        "POST", "/billing/test-clock/advance", {"to": to_rfc3339(RENEWED + timedelta(days=1, hours=1))}
    )

    assert [p["action"] for p in retried.body["processed"]] == ["retry_payment"]
    paid = call("GET", f"/billing/invoices/{renewal['id']}").body
    assert (paid["status"], paid["credits_applied"], paid["amount_paid"]) == (
        "paid",
        200_000,
        PRO_WITH_PPN - 200_000,
    )
    assert call("GET", "/billing/subscription").body["status"] == "active"
    # The subscription's card was charged only the rest, once; the wallet is empty.
    assert [c["gross_amount"] for c in invoice_charges(midtrans)[charges_before:]] == [PRO_WITH_PPN - 200_000]
    assert call("GET", "/billing/wallet").body["balance"] == 0


def test_an_expired_first_invoice_gives_the_wallet_back(midtrans: MidtransFake) -> None:
    assert call("POST", "/billing/test-clock", {"frozen_time": to_rfc3339(STARTED)}).status == 201
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN, "is_default": False})
    top_up(50_000, card)
    bca = add_method(ORG, {"type": "bank_transfer", "bank": "bca"})

    started = call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": bca})

    assert started.status == 201, started.raw
    assert started.body["status"] == "incomplete"
    assert call("GET", "/billing/wallet").body["balance"] == 0
    expired = call("POST", "/billing/test-clock/advance", {"to": to_rfc3339(STARTED + timedelta(days=2))})
    assert [p["action"] for p in expired.body["processed"]] == ["expire_incomplete"]
    [invoice] = call("GET", "/billing/invoices").body["items"]
    assert (invoice["status"], invoice["credits_applied"]) == ("void", 0)
    assert call("GET", "/billing/wallet").body["balance"] == 50_000
    assert ledger()[-1] == ("refund", 50_000, 50_000)
