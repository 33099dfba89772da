"""The wallet pays invoices before any card, through the real handlers on moto and the Midtrans fake:

- a first invoice is paid partly by the wallet and the rest by card; when that card is declined,
  nothing is kept and the wallet gets its money back (a ``refund`` entry);
- a dunned renewal is paid entirely from the wallet by ``POST /billing/invoices/{id}/pay``, and
  the subscription recovers without any card charge;
- a dunning retry takes what was topped up since and charges the card only the rest;
- a plan change or an add-on is paid by the wallet first: the card is charged only the rest, or
  nothing; a declined rest voids that try and gives the wallet its money back;
- a first invoice left unpaid by a bank transfer that never came is voided and the wallet's part
  given back.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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


def pro_on_a_test_clock() -> str:
    """Pro paid by card at ``STARTED`` (a 31-day period): the card's id."""
    assert call("POST", "/billing/test-clock", {"frozen_time": to_rfc3339(STARTED)}).status == 201
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    assert call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": card}).status == 201
    return card


def subscription_id() -> str:
    return str(call("GET", "/billing/subscription").body["id"])


def test_an_upgrade_is_paid_by_the_wallet_first_and_the_card_only_the_rest(midtrans: MidtransFake) -> None:
    card = pro_on_a_test_clock()
    top_up(200_000, card)
    assert (
        call("POST", "/billing/test-clock/advance", {"to": to_rfc3339(STARTED + timedelta(days=10))}).status
        == 200
    )
    charges_before = len(invoice_charges(midtrans))

    upgraded = call("POST", f"/billing/subscriptions/{subscription_id()}/change", {"plan": "business"})

    assert upgraded.status == 200, upgraded.raw
    invoice = call("GET", "/billing/invoices").body["items"][0]
    assert invoice["billing_reason"] == "subscription_update"
    # 21 of 31 days: Business 990,000 x 21/31 = 670,645 less Pro's unused 299,000 x 21/31 = 202,548.
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (468_097, 51_491, 519_588)
    assert (invoice["status"], invoice["credits_applied"], invoice["amount_paid"]) == (
        "paid",
        200_000,
        319_588,
    )
    assert [c["gross_amount"] for c in invoice_charges(midtrans)[charges_before:]] == [319_588]
    assert call("GET", "/billing/subscription").body["plan"] == "business"
    assert call("GET", "/billing/wallet").body["balance"] == 0
    assert ledger()[-1] == ("invoice_payment", -200_000, 0)


def test_an_add_on_the_wallet_covers_charges_no_card(midtrans: MidtransFake) -> None:
    card = pro_on_a_test_clock()
    top_up(100_000, card)
    charges_before = len(invoice_charges(midtrans))

    attached = call(
        "POST",
        f"/billing/subscriptions/{subscription_id()}/addons",
        {"addon": "extra-members", "quantity": 2},
    )

    assert attached.status == 201, attached.raw
    invoice = attached.body["prorated_invoice"]
    # 2 seats at 15,000 for the whole 31-day period: 30,000, PPN 3,300.
    assert (invoice["total"], invoice["credits_applied"], invoice["amount_paid"], invoice["status"]) == (
        33_300,
        33_300,
        0,
        "paid",
    )
    assert len(invoice_charges(midtrans)) == charges_before
    assert call("GET", "/billing/wallet").body["balance"] == 100_000 - 33_300
    assert call("GET", "/billing/usage").body["metrics"]["members"]["quota"] == 22


def test_a_declined_rest_voids_the_try_and_gives_the_wallet_back(midtrans: MidtransFake) -> None:
    card = pro_on_a_test_clock()
    top_up(10_000, card)
    set_card_token(ORG, card, DECLINING)
    sub = subscription_id()
    body = {"addon": "extra-members", "quantity": 5}

    declined = call("POST", f"/billing/subscriptions/{sub}/addons", body)

    assert declined.status == 402, declined.raw
    assert call("GET", f"/billing/subscriptions/{sub}/addons").body["items"] == []
    assert call("GET", "/billing/wallet").body["balance"] == 10_000
    assert ledger()[-2:] == [("invoice_payment", -10_000, 0), ("refund", 10_000, 10_000)]
    [void] = [
        i
        for i in call("GET", "/billing/invoices").body["items"]
        if i["billing_reason"] == "subscription_update"
    ]
    assert (void["status"], void["credits_applied"]) == ("void", 0)

    set_card_token(ORG, card, CARD_TOKEN)
    attached = call("POST", f"/billing/subscriptions/{sub}/addons", body)

    assert attached.status == 201, attached.raw
    paid = attached.body["prorated_invoice"]
    # 5 seats at 15,000 for 31 of 31 days: 75,000, PPN 8,250; the wallet's 10,000 first.
    assert (paid["total"], paid["credits_applied"], paid["amount_paid"], paid["status"]) == (
        83_250,
        10_000,
        73_250,
        "paid",
    )
    assert paid["id"] != void["id"]
    assert invoice_charges(midtrans)[-1]["gross_amount"] == 73_250
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


def test_two_concurrent_upgrades_take_from_the_wallet_once_and_charge_once(midtrans: MidtransFake) -> None:
    card = pro_on_a_test_clock()
    top_up(200_000, card)
    sub = call("GET", "/billing/subscription").body
    charges_before = len(invoice_charges(midtrans))
    body = {"plan": "business", "expected_version": sub["version"]}

    def upgrade(container: int) -> Answer:  # each on a warm container of its own, as Lambda runs them
        return call_api(
            "POST", f"/billing/subscriptions/{sub['id']}/change", body=body, org=ORG, container=container
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(upgrade, [1, 2]))

    assert sorted(a.status for a in answers) == [200, 409], [a.raw for a in answers]
    changes = [
        i
        for i in call("GET", "/billing/invoices").body["items"]
        if i["billing_reason"] == "subscription_update"
    ]
    assert [(i["status"], i["credits_applied"]) for i in changes] == [("paid", 200_000)]
    assert len(invoice_charges(midtrans)) == charges_before + 1
    assert [t for t in ledger() if t[0] == "invoice_payment"] == [("invoice_payment", -200_000, 0)]
    assert call("GET", "/billing/subscription").body["version"] == sub["version"] + 1
