"""The prepaid wallet through the real handler (``functions/wallet``) and the wallet services on moto,
charging through the real Midtrans adapter at the local Midtrans fake over HTTP.

Top-ups: a card credits once (an Idempotency-Key replay charges nothing more); a BCA virtual account
stays pending until Midtrans' settlement notification (the exact bytes the fake sends, through
``notifications.receive_notification`` with the wallet's listener) credits it, once however often it is
delivered; a declined card is 402 and kept failed; an expired transfer fails. Paying invoices:
``pay_from_wallet_first`` in full and in part, never twice, ``return_wallet_credit``; auto-recharge once
per crossing, never two in flight, within the monthly limit, resumed with the same reference after a
crash; and 20 concurrent debits that never overdraw the wallet. What is checked is what a user
sees: HTTP answers, the wallet and its ledger, the invoices, the gateway's charges and the events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock
import pytest

from local.midtrans_fake import MidtransFake
from tagih import clock
from tagih.domain import payments
from tagih.domain.catalog import TaxRate
from tagih.domain.errors import VersionConflict
from tagih.domain.invoices import Invoice, InvoiceLine, draft_invoice
from tagih.events.catalog import catalog
from tagih.gateways.registry import default_gateways
from tagih.services import notifications
from tagih.services.context import Billing
from tagih.services.wallet import WalletPaymentListener, pay_from_wallet_first, return_wallet_credit
from tagih.store.gateway_events import default_gateway_event_items
from tagih.store.invoices import InvoiceItems, default_invoice_items
from tagih.store.payments import default_payment_items
from tagih.store.wallet import WalletItems, default_wallet_items
from tagih.wiring import default_billing
from tests.conftest import BUS_NAME, TABLE_NAME
from tests.fakes.billing_setup import CARD_TOKEN, DECLINING, add_method, set_card_token
from tests.fakes.gateway_env import configure_gateways, event_queue, received_events
from tests.fakes.lambda_runtime import Answer, PinnedClock, call_route
from tests.fakes.midtrans_server import NotificationInbox, running_midtrans_fake

ORG = "org_wallet"
OTHER_ORG = "org_wallet_other"
WALLET = "/billing/wallet"
TOP_UP = "/billing/wallet/top-up"
AUTO_RECHARGE = "/billing/wallet/auto-recharge"
TRANSACTIONS = "/billing/wallet/transactions"
NOW = datetime(2026, 3, 10, 8, 30, 0, 250_000, tzinfo=UTC)  # microseconds: the API answers seconds
PPN = TaxRate(currency="IDR", name="PPN", rate_bps=1100)
SCHEMAS = {entry.type: entry.schema() for entry in catalog()}
WALLET_FIELDS = {"organization_id", "balance", "currency", "auto_recharge", "updated_at"}
AUTO_RECHARGE_FIELDS = {
    "enabled",
    "threshold",
    "amount",
    "payment_method_id",
    "monthly_limit",
    "recharged_this_month",
    "recharge_in_progress",
}
TRANSACTION_FIELDS = {
    "id",
    "type",
    "status",
    "amount",
    "currency",
    "balance_after",
    "invoice_id",
    "payment_url",
    "gateway_order_id",
    "payment_instructions",
    "payment_method_id",
    "auto_recharge",
    "failure_reason",
    "created_at",
}


# -- the stack -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inbox() -> Iterator[NotificationInbox]:
    with NotificationInbox() as receiver:
        yield receiver


@pytest.fixture
def frozen() -> Iterator[PinnedClock]:
    pinned = PinnedClock(NOW)
    clock.use_wall_clock(pinned)
    yield pinned
    clock.use_wall_clock(None)


@pytest.fixture
def midtrans(
    aws: None, inbox: NotificationInbox, frozen: PinnedClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MidtransFake]:
    with running_midtrans_fake(notification_url=inbox.url) as fake:
        configure_gateways(monkeypatch, midtrans=fake, timeout_seconds=1.0)
        yield fake


@pytest.fixture
def events(midtrans: MidtransFake) -> str:
    return event_queue(BUS_NAME)


# -- helpers -------------------------------------------------------------------------------------------
def call(method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    kwargs.setdefault("org", ORG)
    return call_route("wallet", method, path, path, body=body, **kwargs)


def wallet(org: str = ORG) -> dict[str, Any]:
    answer = call("GET", WALLET, org=org, role="member")
    assert answer.status == 200, answer.raw
    return answer.body


def transactions(org: str = ORG) -> list[dict[str, Any]]:
    answer = call("GET", TRANSACTIONS, org=org, role="member")
    assert answer.status == 200, answer.raw
    items: list[dict[str, Any]] = answer.body["items"]
    return items


def top_up(amount: int, method: str | None = None, **kwargs: Any) -> Answer:
    body: dict[str, Any] = {"amount": amount}
    if method is not None:
        body["payment_method_id"] = method
    return call("POST", TOP_UP, body, **kwargs)


def topped_up(amount: int, method: str | None = None) -> dict[str, Any]:
    answer = top_up(amount, method)
    assert answer.status == 201, answer.raw
    assert answer.body["status"] == "succeeded", answer.body
    return answer.body


def set_auto_recharge(body: dict[str, Any], **kwargs: Any) -> Answer:
    return call("PUT", AUTO_RECHARGE, body, **kwargs)


def card(org: str = ORG) -> str:
    return add_method(org, {"type": "credit_card", "token": CARD_TOKEN})


def bca(org: str = ORG) -> str:
    return add_method(org, {"type": "bank_transfer", "bank": "bca"})


def billing() -> Billing:
    """The services' ports as the deployed functions build them, with the wallet."""
    return replace(default_billing(), wallets=default_wallet_items())


def stored_invoice(
    amount: int, *, finalize: bool = True, org: str = ORG, store: InvoiceItems | None = None
) -> Invoice:
    """An invoice of ``amount`` before PPN, as billing stores it: a draft, or finalized (open)."""
    invoices = store or default_invoice_items()
    now = clock.now()
    draft = draft_invoice(
        organization_id=org,
        subscription_id="sub_wallet",
        billing_reason="subscription_cycle",
        currency="IDR",
        lines=[InvoiceLine(description="Pro (monthly)", unit_amount=amount, amount=amount)],
        tax=PPN,
        period_start=now,
        period_end=now + timedelta(days=31),
        due_date=now,
        now=now,
    )
    invoices.save_draft(draft)
    return invoices.finalize(draft, now) if finalize else draft


def ledger_sum(org: str = ORG) -> int:
    return sum(t["amount"] for t in transactions(org) if t["status"] == "succeeded")


def wallet_events(queue: str) -> list[dict[str, Any]]:
    """Wallet events on the bus, each checked against its catalog schema."""
    found = []
    for event in received_events(queue):
        detail = event["detail"]
        assert isinstance(detail, dict)
        jsonschema.validate({**detail, "sequence": 1}, SCHEMAS[str(detail["type"])])
        if str(detail["type"]).startswith("billing.wallet."):
            found.append(detail)
    return found


def notification(inbox: NotificationInbox, send: Callable[[], dict[str, Any]]) -> bytes:
    """Have the fake send one notification; its exact bytes."""
    before = len(inbox.bodies)
    sent = send()
    assert sent["delivery"]["status"] == 200, sent["delivery"]
    assert len(inbox.bodies) == before + 1
    return inbox.bodies[-1]


def deliver(body: bytes, listener: WalletPaymentListener) -> payments.NotificationOutcome:
    """A Midtrans notification, as the gateway notifications function receives it."""
    return notifications.receive_notification(
        default_gateways().get("midtrans"),
        default_payment_items(),
        default_gateway_event_items(),
        {"content-type": "application/json"},
        body,
        listener=listener,
    )


def table_items(prefix: str, org: str = ORG) -> list[dict[str, Any]]:
    items = boto3.resource("dynamodb").Table(TABLE_NAME).scan(ConsistentRead=True)["Items"]
    return [i for i in items if i["PK"] == f"ORG#{org}" and str(i["SK"]).startswith(prefix)]


# -- reading -------------------------------------------------------------------------------------------
def test_a_new_organization_reads_an_empty_idr_wallet_and_nothing_is_written(aws: None) -> None:
    shown = wallet()

    assert set(shown) == WALLET_FIELDS
    assert (shown["organization_id"], shown["balance"], shown["currency"], shown["updated_at"]) == (
        ORG,
        0,
        "IDR",
        None,
    )
    assert set(shown["auto_recharge"]) == AUTO_RECHARGE_FIELDS
    assert shown["auto_recharge"]["enabled"] is False
    assert shown["auto_recharge"]["payment_method_id"] is None
    assert shown["auto_recharge"]["recharge_in_progress"] is False
    assert table_items("WALLET") == []
    assert call("GET", TRANSACTIONS, role="member").body == {
        "items": [],
        "total": 0,
        "page": 1,
        "page_size": 20,
        "has_next": False,
        "has_prev": False,
    }


def test_an_organization_billed_in_dollars_gets_a_dollar_wallet(aws: None) -> None:
    account = call_route(
        "accounts",
        "POST",
        "/billing/accounts",
        "/billing/accounts",
        body={"name": "Acme Inc", "email": "billing@acme.com", "currency": "usd"},
        org=ORG,
    )
    assert account.status == 201, account.raw

    assert wallet()["currency"] == "USD"


# -- topping up ----------------------------------------------------------------------------------------
def test_a_card_top_up_credits_once_and_a_replay_of_its_key_charges_nothing_more(
    midtrans: MidtransFake, events: str
) -> None:
    method = card()
    headers = {"Idempotency-Key": "top-up-1"}

    first = call("POST", TOP_UP, {"amount": 500_000}, headers=headers)

    assert first.status == 201, first.raw
    txn = first.body
    assert set(txn) == TRANSACTION_FIELDS
    assert txn["id"].startswith("txn_")
    assert (txn["type"], txn["status"], txn["amount"], txn["balance_after"]) == (
        "top_up",
        "succeeded",
        500_000,
        500_000,
    )
    assert (txn["currency"], txn["payment_method_id"], txn["invoice_id"]) == ("IDR", method, None)
    assert txn["gateway_order_id"] == f"{txn['id']}-a1"
    assert txn["created_at"] == "2026-03-10T08:30:00Z"
    assert midtrans.charge_count(txn["gateway_order_id"]) == 1

    replay = call("POST", TOP_UP, {"amount": 500_000}, headers=headers)

    assert replay.status == 201
    assert replay.body == txn
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert midtrans.charge_count(txn["gateway_order_id"]) == 1
    shown = wallet()
    assert (shown["balance"], shown["updated_at"]) == (500_000, "2026-03-10T08:30:00Z")
    assert [t["id"] for t in transactions()] == [txn["id"]]
    [event] = wallet_events(events)
    assert event["type"] == "billing.wallet.topped_up"
    assert event["data"]["id"] == txn["id"]
    assert event["data"]["balance_after"] == 500_000


def test_a_virtual_account_top_up_waits_for_the_transfer_and_its_settlement_credits_once(
    midtrans: MidtransFake, inbox: NotificationInbox, events: str
) -> None:
    card()  # the default; the transfer is named
    va = bca()

    answer = top_up(250_000, va)

    assert answer.status == 201, answer.raw
    pending = answer.body
    assert (pending["status"], pending["balance_after"], pending["payment_url"]) == ("pending", None, None)
    assert pending["gateway_order_id"] == f"{pending['id']}-a1"
    instructions = pending["payment_instructions"]
    assert instructions["bank"] == "bca"
    assert instructions["va_number"]
    assert wallet()["balance"] == 0
    assert transactions() == [pending]

    listener = WalletPaymentListener(billing())
    settlement = notification(inbox, lambda: midtrans.settle(pending["gateway_order_id"]))
    outcome = deliver(settlement, listener)

    assert outcome.kind == "settled"
    assert wallet()["balance"] == 250_000
    [credited] = transactions()
    assert (credited["id"], credited["status"], credited["balance_after"]) == (
        pending["id"],
        "succeeded",
        250_000,
    )

    # Midtrans redelivers, and a listener may hear a settlement twice: nothing more is credited.
    assert deliver(settlement, listener).kind == "duplicate"
    assert outcome.settled is not None
    listener.on_payment_settled(outcome.settled)
    assert wallet()["balance"] == 250_000
    assert ledger_sum() == 250_000
    assert [e["type"] for e in wallet_events(events)] == ["billing.wallet.topped_up"]


def test_an_expired_transfer_fails_its_top_up_and_credits_nothing(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    va = bca()
    pending = top_up(100_000, va).body

    outcome = deliver(
        notification(inbox, lambda: midtrans.expire(pending["gateway_order_id"])),
        WalletPaymentListener(billing()),
    )

    assert outcome.kind == "failed"
    [failed] = transactions()
    assert (failed["status"], failed["balance_after"], failed["failure_reason"]) == ("failed", None, "expire")
    assert wallet()["balance"] == 0


def test_a_declined_card_top_up_is_402_and_kept_failed_without_credit(
    midtrans: MidtransFake, events: str
) -> None:
    method = card()
    set_card_token(ORG, method, DECLINING)

    answer = top_up(500_000)

    assert answer.status == 402, answer.raw
    assert answer.error_code == "payment_failed"
    assert wallet()["balance"] == 0
    [failed] = transactions()
    assert (failed["type"], failed["status"], failed["balance_after"]) == ("top_up", "failed", None)
    assert failed["failure_reason"]
    assert wallet_events(events) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 9_999}, "amount"),
        ({"amount": 100_000_001}, "amount"),
        ({"amount": "50000"}, "amount"),
        ({"amount": 50_000.5}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": 50_000, "status": "succeeded"}, "status"),
        ({}, "amount"),
    ],
)
def test_a_top_up_outside_the_rules_is_422_naming_the_field(
    midtrans: MidtransFake, body: dict[str, Any], field: str
) -> None:
    card()

    answer = call("POST", TOP_UP, body)

    assert answer.status == 422, answer.raw
    assert answer.error_code == "validation_error"
    assert field in answer.fields
    assert midtrans.charges == [c for c in midtrans.charges if not c["order_id"].startswith("txn_")]
    assert transactions() == []


def test_a_top_up_needs_a_payment_method_of_the_organization(midtrans: MidtransFake) -> None:
    without = top_up(50_000)
    assert (without.status, without.error_code) == (422, "payment_method_required")

    others = card(OTHER_ORG)
    foreign = top_up(50_000, others)
    assert (foreign.status, foreign.error_code) == (404, "payment_method_not_found")

    card()
    member = top_up(50_000, role="member")
    assert (member.status, member.error_code) == (403, "forbidden")
    assert transactions() == []


# -- auto-recharge settings ----------------------------------------------------------------------------
def test_auto_recharge_is_set_with_the_default_method_and_shown_on_the_wallet(midtrans: MidtransFake) -> None:
    method = card()

    answer = set_auto_recharge({"enabled": True, "threshold": 100_000, "amount": 200_000})

    assert answer.status == 200, answer.raw
    assert answer.body["auto_recharge"] == {
        "enabled": True,
        "threshold": 100_000,
        "amount": 200_000,
        "payment_method_id": method,
        "monthly_limit": 1_000_000,
        "recharged_this_month": 0,
        "recharge_in_progress": False,
    }
    assert wallet() == answer.body
    assert answer.body["updated_at"] == "2026-03-10T08:30:00Z"

    off = set_auto_recharge({"enabled": False, "threshold": 0, "amount": 0})
    assert off.status == 200, off.raw
    assert wallet()["auto_recharge"]["enabled"] is False


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (
            {"enabled": True, "threshold": 100_000, "amount": 200_000, "balance": 1},
            422,
            "validation_error",
            "balance",
        ),
        ({"enabled": True, "threshold": 0, "amount": 200_000}, 422, "validation_error", "threshold"),
        ({"enabled": True, "threshold": 100_000, "amount": 5_000}, 422, "validation_error", "amount"),
        (
            {"enabled": True, "threshold": 100_000, "amount": 200_000, "monthly_limit": 100_000},
            422,
            "validation_error",
            "monthly_limit",
        ),
        ({"enabled": True, "threshold": 100_000}, 422, "validation_error", "amount"),
        ({"enabled": "yes", "threshold": 100_000, "amount": 200_000}, 422, "validation_error", "enabled"),
    ],
)
def test_auto_recharge_settings_outside_the_rules_are_refused(
    midtrans: MidtransFake, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    card()

    answer = set_auto_recharge(body)

    assert (answer.status, answer.error_code) == (status, code), answer.raw
    assert field in answer.fields
    assert table_items("WALLET") == []


def test_auto_recharge_refuses_another_organizations_method_and_a_missing_one(midtrans: MidtransFake) -> None:
    settings = {"enabled": True, "threshold": 100_000, "amount": 200_000}

    missing = set_auto_recharge(settings)
    foreign = set_auto_recharge({**settings, "payment_method_id": card(OTHER_ORG)})
    member = set_auto_recharge(settings, role="member")

    assert (missing.status, missing.error_code) == (422, "payment_method_required")
    assert (foreign.status, foreign.error_code) == (404, "payment_method_not_found")
    assert (member.status, member.error_code) == (403, "forbidden")
    assert table_items("WALLET") == []


# -- paying invoices -----------------------------------------------------------------------------------
def test_the_wallet_pays_an_invoice_in_full_once(midtrans: MidtransFake, frozen: PinnedClock) -> None:
    card()
    topped_up(500_000)
    frozen.at = NOW + timedelta(seconds=1)
    invoice = stored_invoice(100_000)  # 111.000 with PPN
    services = billing()

    paid = pay_from_wallet_first(services, invoice, clock.now())

    assert (paid.credits_applied, paid.amount_due, paid.status) == (111_000, 0, "open")
    assert (paid.version, paid.updated_at) == (invoice.version + 1, clock.now())
    assert default_invoice_items().get(ORG, invoice.id) == paid
    assert wallet()["balance"] == 389_000
    payment = transactions()[0]
    assert (payment["type"], payment["status"], payment["amount"], payment["balance_after"]) == (
        "invoice_payment",
        "succeeded",
        -111_000,
        389_000,
    )
    assert payment["invoice_id"] == invoice.id

    # Again with what it returned: nothing left to pay. Again with the stale copy: refused.
    assert pay_from_wallet_first(services, paid, clock.now()) == paid
    with pytest.raises(VersionConflict):
        pay_from_wallet_first(services, invoice, clock.now())
    assert wallet()["balance"] == 389_000
    assert default_invoice_items().get(ORG, invoice.id) == paid
    assert ledger_sum() == 389_000


def test_the_wallet_pays_part_of_a_draft_and_gives_it_back_when_the_draft_is_dropped(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    card()
    topped_up(50_000)
    frozen.at = NOW + timedelta(seconds=1)
    draft = stored_invoice(100_000, finalize=False)
    services = billing()

    partly = pay_from_wallet_first(services, draft, clock.now())

    assert (partly.status, partly.credits_applied, partly.amount_due) == ("draft", 50_000, 61_000)
    assert wallet()["balance"] == 0
    # Empty now: another invoice gets nothing from it.
    other = stored_invoice(100_000)
    assert pay_from_wallet_first(services, other, clock.now()) == other

    frozen.at = NOW + timedelta(seconds=2)
    returned = return_wallet_credit(services, partly, clock.now())

    assert (returned.credits_applied, returned.amount_due, returned.version) == (
        0,
        111_000,
        partly.version + 1,
    )
    assert default_invoice_items().get(ORG, draft.id) == returned
    assert wallet()["balance"] == 50_000
    refund = transactions()[0]
    assert (refund["type"], refund["amount"], refund["balance_after"], refund["invoice_id"]) == (
        "refund",
        50_000,
        50_000,
        draft.id,
    )
    assert return_wallet_credit(services, returned, clock.now()) == returned
    assert ledger_sum() == 50_000


def test_the_wallet_leaves_alone_an_invoice_awaiting_a_transfer_or_in_another_currency(
    midtrans: MidtransFake,
) -> None:
    card()
    topped_up(500_000)
    awaiting = stored_invoice(100_000)
    invoices = default_invoice_items()
    with_url = awaiting.model_copy(
        update={"payment_url": "https://pay.example/1", "version": awaiting.version + 1}
    )
    invoices.replace(with_url, awaiting.version)
    services = billing()

    assert pay_from_wallet_first(services, with_url, clock.now()) == with_url
    dollars = with_url.model_copy(update={"currency": "USD", "payment_url": None})
    assert pay_from_wallet_first(services, dollars, clock.now()) == dollars
    assert wallet()["balance"] == 500_000


# -- auto-recharge -------------------------------------------------------------------------------------
def recharge_charges(midtrans: MidtransFake) -> list[dict[str, Any]]:
    recharges = {t["gateway_order_id"] for t in transactions() if t["auto_recharge"]}
    return [c for c in midtrans.charges if c["order_id"] in recharges]


def test_a_debit_crossing_the_threshold_starts_one_recharge_and_none_while_it_is_in_flight(
    midtrans: MidtransFake, inbox: NotificationInbox, events: str
) -> None:
    card()
    va = bca()
    topped_up(200_000)
    settings = {"enabled": True, "threshold": 100_000, "amount": 150_000, "payment_method_id": va}
    assert set_auto_recharge(settings).status == 200
    services = billing()

    pay_from_wallet_first(services, stored_invoice(100_000), clock.now())  # 200.000 → 89.000: crosses

    [recharge] = [t for t in transactions() if t["auto_recharge"]]
    assert (recharge["type"], recharge["status"], recharge["amount"]) == ("top_up", "pending", 150_000)
    assert recharge["payment_method_id"] == va
    assert recharge["gateway_order_id"] == f"{recharge['id']}-a1"
    assert recharge["payment_instructions"]["bank"] == "bca"
    assert len(recharge_charges(midtrans)) == 1
    shown = wallet()
    assert (shown["balance"], shown["auto_recharge"]["recharge_in_progress"]) == (89_000, True)

    # Topped up by card over the threshold and crossing it again: the transfer is still awaited.
    topped_up(100_000)
    pay_from_wallet_first(services, stored_invoice(100_000), clock.now())  # 189.000 → 78.000

    assert len([t for t in transactions() if t["auto_recharge"]]) == 1
    assert len(recharge_charges(midtrans)) == 1
    assert wallet()["balance"] == 78_000

    deliver(
        notification(inbox, lambda: midtrans.settle(recharge["gateway_order_id"])),
        WalletPaymentListener(services),
    )

    shown = wallet()
    assert shown["balance"] == 228_000
    assert shown["auto_recharge"]["recharge_in_progress"] is False
    assert shown["auto_recharge"]["recharged_this_month"] == 150_000
    assert ledger_sum() == 228_000
    low = [e["data"] for e in wallet_events(events) if e["type"] == "billing.wallet.low_balance"]
    assert low == [
        {
            "balance": 89_000,
            "currency": "IDR",
            "threshold": 100_000,
            "recharge_transaction_id": recharge["id"],
        },
        {"balance": 78_000, "currency": "IDR", "threshold": 100_000, "recharge_transaction_id": None},
    ]


def test_card_recharges_credit_at_once_until_the_monthly_limit(
    midtrans: MidtransFake, frozen: PinnedClock, events: str
) -> None:
    card()
    topped_up(200_000)
    settings = {"enabled": True, "threshold": 150_000, "amount": 100_000, "monthly_limit": 200_000}
    assert set_auto_recharge(settings).status == 200
    services = billing()
    balances = []
    for _ in range(3):  # each debit of 111.000 crosses 150.000
        pay_from_wallet_first(services, stored_invoice(100_000), clock.now())
        balances.append(wallet()["balance"])

    # 200.000 → 89.000 + 100.000; 189.000 → 78.000 + 100.000; 178.000 → 67.000, the month's limit reached.
    assert balances == [189_000, 178_000, 67_000]
    assert len(recharge_charges(midtrans)) == 2
    assert wallet()["auto_recharge"]["recharged_this_month"] == 200_000

    frozen.at = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)  # a new month
    topped_up(100_000)  # back over the threshold
    pay_from_wallet_first(services, stored_invoice(100_000), clock.now())  # 167.000 → 56.000 + 100.000

    shown = wallet()
    assert (shown["balance"], shown["auto_recharge"]["recharged_this_month"]) == (156_000, 100_000)
    assert len(recharge_charges(midtrans)) == 3
    assert ledger_sum() == 156_000
    recharged = [
        e["data"]
        for e in wallet_events(events)
        if e["type"] == "billing.wallet.topped_up" and e["data"]["auto_recharge"]
    ]
    assert [e["amount"] for e in recharged] == [100_000] * 3


def test_a_declined_recharge_fails_quietly_and_the_invoice_stays_paid(midtrans: MidtransFake) -> None:
    method = card()
    topped_up(200_000)
    assert set_auto_recharge({"enabled": True, "threshold": 100_000, "amount": 100_000}).status == 200
    set_card_token(ORG, method, DECLINING)
    invoice = stored_invoice(100_000)

    paid = pay_from_wallet_first(billing(), invoice, clock.now())

    assert paid.amount_due == 0
    [recharge] = [t for t in transactions() if t["auto_recharge"]]
    assert (recharge["status"], recharge["balance_after"]) == ("failed", None)
    shown = wallet()
    assert (shown["balance"], shown["auto_recharge"]["recharge_in_progress"]) == (89_000, False)


def test_a_recharge_whose_charge_never_finished_is_resumed_later_with_the_same_reference(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    method = card()
    topped_up(500_000)
    assert set_auto_recharge({"enabled": True, "threshold": 400_000, "amount": 100_000}).status == 200
    working = set_card_token(ORG, method, "481111-hang-saved-1114")  # Midtrans does not answer
    services = billing()

    pay_from_wallet_first(services, stored_invoice(100_000), clock.now())  # 500.000 → 389.000: crosses

    [recharge] = [t for t in transactions() if t["auto_recharge"]]
    assert recharge["status"] == "pending"
    assert wallet()["auto_recharge"]["recharge_in_progress"] is True
    assert midtrans.charge_count(recharge["gateway_order_id"]) == 0
    set_card_token(ORG, method, working)

    frozen.at = NOW + timedelta(minutes=1)  # still possibly running elsewhere: left alone
    pay_from_wallet_first(services, stored_invoice(10_000), clock.now())  # 389.000 → 377.900
    assert midtrans.charge_count(recharge["gateway_order_id"]) == 0

    frozen.at = NOW + timedelta(minutes=10)  # abandoned: the next debit charges it, same reference
    pay_from_wallet_first(services, stored_invoice(10_000), clock.now())  # 377.900 → 366.800 + 100.000

    assert midtrans.charge_count(recharge["gateway_order_id"]) == 1
    assert len(recharge_charges(midtrans)) == 1
    shown = wallet()
    assert (shown["balance"], shown["auto_recharge"]["recharge_in_progress"]) == (466_800, False)
    assert ledger_sum() == 466_800


def test_twenty_concurrent_debits_never_overdraw_the_wallet_and_recharge_once(midtrans: MidtransFake) -> None:
    card()
    topped_up(1_000_000)
    settings = {"enabled": True, "threshold": 500_000, "amount": 100_000, "monthly_limit": 100_000}
    assert set_auto_recharge(settings).status == 200
    invoices = [stored_invoice(70_000) for _ in range(20)]  # 77.700 each: 1.554.000 in all
    # Each debit on clients of its own, as concurrent Lambda containers have (made here: creating
    # clients from one session is not thread-safe, using them is).
    session = boto3.session.Session()
    shared = billing()
    services = [
        replace(
            shared,
            wallets=WalletItems(session.resource("dynamodb").Table(TABLE_NAME)),
            invoices=InvoiceItems(session.resource("dynamodb").Table(TABLE_NAME)),
        )
        for _ in invoices
    ]

    def pay(pair: tuple[Billing, Invoice]) -> Invoice:
        own, invoice = pair
        return pay_from_wallet_first(own, invoice, clock.now())

    with ThreadPoolExecutor(max_workers=len(invoices)) as pool:
        results = list(pool.map(pay, zip(services, invoices, strict=True)))

    balance = wallet()["balance"]
    applied = sum(invoice.credits_applied for invoice in results)
    stored = [default_invoice_items().get(ORG, invoice.id) for invoice in invoices]
    assert [invoice.credits_applied for invoice in stored] == [invoice.credits_applied for invoice in results]
    assert balance >= 0
    assert balance == 1_000_000 + 100_000 - applied  # one recharge of 100.000
    assert ledger_sum() == balance
    assert len(recharge_charges(midtrans)) == 1
    assert all(invoice.credits_applied <= invoice.total for invoice in stored)
    payments_of = [t for t in transactions() if t["type"] == "invoice_payment"]
    assert sorted(-t["amount"] for t in payments_of) == sorted(
        i.credits_applied for i in stored if i.credits_applied
    )
    assert json.dumps(transactions())
