"""The wallet's pure decisions: how much a debit takes, when it crosses the auto-recharge threshold
and claims a recharge (one at a time, within the monthly limit), what a credit does to the wallet,
which invoices the wallet pays, and the bounds of amounts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock
import pytest

from tagih.domain.catalog import TaxRate
from tagih.domain.errors import InvalidField
from tagih.domain.invoices import Invoice, InvoiceLine, draft_invoice
from tagih.domain.wallet import (
    RECHARGE_ABANDONED,
    AutoRecharge,
    Wallet,
    WalletTransaction,
    check_amount,
    check_auto_recharge,
    crosses_threshold,
    debit_amount,
    decide_credit,
    decide_debit,
    may_claim_recharge,
    month_of,
    new_wallet,
    payable_from_wallet,
    recharge_abandoned,
    top_up_bounds,
)
from tagih.events.catalog import catalog

NOW = datetime(2026, 3, 31, 23, 59, 0, tzinfo=UTC)
ORG = "org_unit"
RECHARGE = AutoRecharge(
    enabled=True, threshold=100_000, amount=200_000, payment_method_id="pm_card", gateway="midtrans"
)


def a_wallet(balance: int, settings: AutoRecharge = RECHARGE, **extra: object) -> Wallet:
    return new_wallet(ORG, "IDR", NOW).model_copy(
        update={"balance": balance, "auto_recharge": settings, "version": 3, **extra}
    )


def an_invoice(subtotal: int, **update: object) -> Invoice:
    invoice = draft_invoice(
        organization_id=ORG,
        subscription_id="sub_unit",
        billing_reason="subscription_cycle",
        currency="IDR",
        lines=[InvoiceLine(description="Pro (monthly)", unit_amount=subtotal, amount=subtotal)],
        tax=TaxRate(currency="IDR", name="PPN", rate_bps=0),
        period_start=NOW,
        period_end=NOW + timedelta(days=30),
        due_date=NOW,
        now=NOW,
    )
    return invoice.model_copy(update=update)


# -- how much, and when the threshold is crossed -------------------------------------------------------
@pytest.mark.parametrize(
    ("balance", "due", "taken"), [(500, 200, 200), (150, 200, 150), (0, 200, 0), (200, 200, 200), (50, 0, 0)]
)
def test_a_debit_takes_what_is_due_or_the_whole_balance(balance: int, due: int, taken: int) -> None:
    assert debit_amount(balance, due) == taken


@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [(150_000, 90_000, True), (100_000, 99_999, True), (100_000, 100_000, False), (90_000, 10_000, False)],
)
def test_only_a_debit_from_at_or_over_the_threshold_to_under_it_crosses(
    before: int, after: int, crossed: bool
) -> None:
    assert crosses_threshold(before, after, RECHARGE) is crossed
    assert crosses_threshold(before, after, RECHARGE.model_copy(update={"enabled": False})) is False


# -- claiming a recharge -------------------------------------------------------------------------------
def test_a_crossing_debit_claims_one_recharge_with_its_order_id() -> None:
    wallet = a_wallet(150_000)

    debit = decide_debit(wallet, an_invoice(60_000), NOW)

    assert debit is not None
    assert (debit.amount, debit.crossed) == (60_000, True)
    assert (debit.wallet.balance, debit.wallet.version) == (90_000, 4)
    # Listed in the order they happened, even when one request writes both at one moment.
    assert NOW <= debit.wallet.updated_at == debit.entry.created_at
    assert (debit.entry.type, debit.entry.amount, debit.entry.balance_after) == (
        "invoice_payment",
        -60_000,
        90_000,
    )
    recharge = debit.recharge
    assert recharge is not None
    assert (recharge.type, recharge.status, recharge.amount, recharge.auto_recharge) == (
        "top_up",
        "pending",
        200_000,
        True,
    )
    assert recharge.gateway_order_id == f"{recharge.id}-a1"
    assert recharge.created_at > debit.entry.created_at
    assert (debit.wallet.recharge_in_flight, debit.wallet.recharge_claimed_at) == (recharge.id, NOW)


def test_no_second_recharge_while_one_is_in_flight() -> None:
    wallet = a_wallet(150_000, recharge_in_flight="txn_flying", recharge_claimed_at=NOW)

    debit = decide_debit(wallet, an_invoice(60_000), NOW)

    assert debit is not None
    assert debit.crossed
    assert debit.recharge is None
    assert debit.wallet.recharge_in_flight == "txn_flying"


def test_the_monthly_limit_counts_this_calendar_month_only() -> None:
    limited = RECHARGE.model_copy(update={"monthly_limit": 400_000})
    this_month = a_wallet(0, limited, recharged_month="2026-03", recharged_amount=200_000)
    full = this_month.model_copy(update={"recharged_amount": 400_000})

    assert may_claim_recharge(this_month, NOW)  # 200.000 + 200.000 ≤ 400.000
    assert not may_claim_recharge(full, NOW)
    assert may_claim_recharge(full, NOW + timedelta(minutes=1))  # April: a new month
    assert full.recharged_in(NOW + timedelta(minutes=1)) == 0


def test_the_default_monthly_limit_is_five_recharges() -> None:
    assert RECHARGE.effective_monthly_limit == 1_000_000
    wallet = a_wallet(0, recharged_month="2026-03", recharged_amount=800_000)
    assert may_claim_recharge(wallet, NOW)
    assert not may_claim_recharge(wallet.model_copy(update={"recharged_amount": 800_001}), NOW)


def test_no_recharge_without_a_method_or_when_disabled() -> None:
    assert not may_claim_recharge(a_wallet(0, RECHARGE.model_copy(update={"payment_method_id": None})), NOW)
    assert not may_claim_recharge(a_wallet(0, RECHARGE.model_copy(update={"enabled": False})), NOW)


def test_a_claim_is_abandoned_only_after_a_while() -> None:
    claimed = a_wallet(0, recharge_in_flight="txn_flying", recharge_claimed_at=NOW)

    assert not recharge_abandoned(claimed, NOW + RECHARGE_ABANDONED - timedelta(seconds=1))
    assert recharge_abandoned(claimed, NOW + RECHARGE_ABANDONED)
    assert not recharge_abandoned(a_wallet(0), NOW + timedelta(days=1))


def test_an_empty_wallet_debits_nothing() -> None:
    assert decide_debit(a_wallet(0), an_invoice(60_000), NOW) is None


# -- crediting -----------------------------------------------------------------------------------------
def pending_top_up(amount: int, *, auto: bool, transaction_id: str = "txn_up") -> WalletTransaction:
    return WalletTransaction(
        id=transaction_id,
        organization_id=ORG,
        type="top_up",
        status="pending",
        amount=amount,
        currency="IDR",
        auto_recharge=auto,
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_recharge_credit_releases_its_claim_and_counts_in_the_month_it_lands() -> None:
    wallet = a_wallet(
        90_000,
        recharge_in_flight="txn_up",
        recharge_claimed_at=NOW,
        recharged_month="2026-02",
        recharged_amount=7,
    )
    april = NOW + timedelta(minutes=5)

    credited_wallet, credited = decide_credit(wallet, pending_top_up(200_000, auto=True), april)

    assert (credited_wallet.balance, credited_wallet.version) == (290_000, 4)
    assert (credited_wallet.recharge_in_flight, credited_wallet.recharge_claimed_at) == (None, None)
    assert (credited_wallet.recharged_month, credited_wallet.recharged_amount) == ("2026-04", 200_000)
    assert (credited.status, credited.balance_after, credited.updated_at) == ("succeeded", 290_000, april)


def test_a_manual_top_up_leaves_another_claim_and_the_monthly_count_alone() -> None:
    wallet = a_wallet(90_000, recharge_in_flight="txn_other", recharge_claimed_at=NOW)

    credited_wallet, _ = decide_credit(wallet, pending_top_up(50_000, auto=False), NOW)

    assert credited_wallet.recharge_in_flight == "txn_other"
    assert credited_wallet.recharged_amount == 0


# -- which invoices ------------------------------------------------------------------------------------
def test_the_wallet_pays_unpaid_invoices_with_no_payment_in_flight() -> None:
    assert payable_from_wallet(an_invoice(1_000))
    assert payable_from_wallet(an_invoice(1_000, status="open", number="INV-2026-0001"))
    assert payable_from_wallet(an_invoice(1_000, status="overdue", number="INV-2026-0001"))
    assert not payable_from_wallet(an_invoice(1_000, status="paid", number="INV-2026-0001"))
    assert not payable_from_wallet(an_invoice(1_000, status="void"))
    assert not payable_from_wallet(an_invoice(1_000, status="uncollectible", number="INV-2026-0001"))
    assert not payable_from_wallet(an_invoice(1_000, payment_url="https://pay.example/x"))
    assert not payable_from_wallet(an_invoice(1_000, credits_applied=1_000))
    assert not payable_from_wallet(an_invoice(0))


# -- bounds --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("currency", "amount", "ok"),
    [
        ("IDR", 10_000, True),
        ("IDR", 9_999, False),
        ("IDR", 100_000_000, True),
        ("IDR", 100_000_001, False),
        ("USD", 100, True),
        ("USD", 99, False),
        ("EUR", 10_000_000, True),
        ("EUR", 10_000_001, False),
    ],
)
def test_top_up_amounts_are_bounded_per_currency(currency: str, amount: int, ok: bool) -> None:
    if ok:
        check_amount("amount", amount, currency)
    else:
        with pytest.raises(InvalidField) as refused:
            check_amount("amount", amount, currency)
        assert refused.value.details[0]["field"] == "amount"
    assert top_up_bounds(currency)[0] > 0


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (RECHARGE.model_copy(update={"threshold": 0}), "threshold"),
        (RECHARGE.model_copy(update={"amount": 5_000}), "amount"),
        (RECHARGE.model_copy(update={"monthly_limit": 199_999}), "monthly_limit"),
        (RECHARGE.model_copy(update={"monthly_limit": 10**10}), "monthly_limit"),
    ],
)
def test_enabled_auto_recharge_settings_are_checked(settings: AutoRecharge, field: str) -> None:
    with pytest.raises(InvalidField) as refused:
        check_auto_recharge(settings, "IDR")
    assert refused.value.details[0]["field"] == field
    check_auto_recharge(settings.model_copy(update={"enabled": False}), "IDR")  # kept as given


def test_months_are_utc_calendar_months() -> None:
    jakarta_april_first = datetime(2026, 3, 31, 17, 30, tzinfo=UTC)  # 00:30 on 1 April in Jakarta
    assert month_of(jakarta_april_first) == "2026-03"


def test_a_transactions_event_data_matches_the_catalog() -> None:
    schemas = {entry.type: entry.schema() for entry in catalog()}
    _, credited = decide_credit(a_wallet(0), pending_top_up(200_000, auto=True), NOW)
    envelope = {
        "id": "evt_1",
        "type": "billing.wallet.topped_up",
        "created_at": "2026-03-31T23:59:00Z",
        "organization_id": ORG,
        "sequence": 1,
        "data": credited.event_data(),
    }

    jsonschema.validate(envelope, schemas["billing.wallet.topped_up"])
