"""Invoice arithmetic and statuses, as pure functions: PPN once per invoice, proration credits,
numbers, and which status changes are allowed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tagih.domain.catalog import TaxRate
from tagih.domain.errors import (
    Conflict,
    InvoiceAmountMismatch,
    InvoiceNotDraft,
    InvoiceNotDue,
    InvoiceNotOpen,
    InvoiceNotPayable,
)
from tagih.domain.invoices import (
    INTERNAL_FIELDS,
    Invoice,
    InvoiceLine,
    draft_invoice,
    finalize,
    format_invoice_number,
    mark_overdue,
    mark_paid,
    mark_uncollectible,
    percent_from_bps,
    record_retry,
    void,
)
from tagih.domain.proration import prorate

PPN = TaxRate(currency="IDR", name="PPN", rate_bps=1100)
NO_TAX_USD = TaxRate(currency="USD", name=None, rate_bps=0)
NOW = datetime(2026, 2, 1, 3, 0, tzinfo=UTC)
START = datetime(2026, 2, 1, tzinfo=UTC)
END = datetime(2026, 3, 1, tzinfo=UTC)
DUE = NOW + timedelta(days=7)
LATER = NOW + timedelta(days=8)
NUMBER = "INV-2026-0001"

API_FIELDS = {
    "id", "number", "organization_id", "subscription_id", "billing_reason", "currency", "lines",
    "subtotal", "tax_name", "tax_rate", "tax", "credits_applied", "total", "amount", "amount_paid",
    "amount_due", "status", "due_date", "period_start", "period_end", "paid_at", "retry_count",
    "last_retry_at", "next_retry_at", "payment_url", "gateway_invoice_id", "pdf_url",
    "hosted_invoice_url", "created_at",
}  # fmt: skip


def line(amount: int, description: str = "Pro (monthly)", **kwargs: Any) -> InvoiceLine:
    return InvoiceLine(description=description, unit_amount=amount, amount=amount, **kwargs)


def draft(*lines: InvoiceLine, tax: TaxRate = PPN, currency: str = "IDR") -> Invoice:
    return draft_invoice(
        organization_id="org_a",
        subscription_id="sub_a",
        billing_reason="subscription_create",
        currency=currency,  # type: ignore[arg-type]
        lines=list(lines) or [line(299_000)],
        tax=tax,
        period_start=START,
        period_end=END,
        due_date=DUE,
        now=NOW,
    )


def open_invoice(amount: int = 299_000) -> Invoice:
    return finalize(draft(line(amount)), NUMBER, NOW)


# -- totals -------------------------------------------------------------------------------------------
def test_pro_month_carries_ppn_eleven_percent() -> None:
    invoice = draft(line(299_000))

    assert (invoice.subtotal, invoice.tax, invoice.total) == (299_000, 32_890, 331_890)
    assert invoice.amount == invoice.total == 331_890
    assert invoice.amount_due == 331_890
    assert (invoice.amount_paid, invoice.credits_applied) == (0, 0)
    assert (invoice.tax_name, invoice.tax_rate, invoice.tax_rate_bps) == ("PPN", "11", 1100)
    assert (invoice.status, invoice.number, invoice.version) == ("draft", None, 1)


def test_an_invoice_shows_every_api_field_and_the_internal_ones_are_named() -> None:
    dumped = draft().model_dump(mode="json")

    assert set(dumped) == API_FIELDS | INTERNAL_FIELDS
    assert dumped["pdf_url"] == f"/billing/invoices/{dumped['id']}/pdf"
    hosted = f"/billing/invoices/{dumped['id']}/hosted?token={dumped['hosted_token']}"
    assert dumped["hosted_invoice_url"] == hosted
    assert dumped["id"].startswith("inv_")


def test_each_draft_gets_its_own_unguessable_hosted_token() -> None:
    tokens = {draft().hosted_token for _ in range(20)}
    assert len(tokens) == 20
    assert all(len(token) >= 32 for token in tokens)


def test_proration_invoice_credits_the_old_plan_and_taxes_the_net_once() -> None:
    change = prorate(299_000, 990_000, START, END, START + timedelta(days=14))
    invoice = draft(
        line(change.credit, "Unused time on Pro", proration=True),
        line(change.debit, "Remaining time on Business", proration=True),
    )

    assert [entry.amount for entry in invoice.lines] == [-149_500, 495_000]
    assert invoice.subtotal == 345_500
    assert invoice.tax == 38_005  # 11 % of 345 500 = 38 005, on the net, not line by line
    assert invoice.total == 383_505 == invoice.amount_due


def test_tax_is_rounded_half_up_once_per_invoice_not_per_line() -> None:
    # 11 % of 50 is 5.5 → 6 on each line alone (12), but 11 % of 100 is exactly 11.
    invoice = draft(line(50, "a"), line(50, "b"))
    assert invoice.tax == 11


@pytest.mark.parametrize(
    ("amounts", "tax", "total"),
    [((0,), 0, 0), ((-149_500, 149_500), 0, 0), ((-495_000, 299_000), 0, -196_000)],
)
def test_zero_and_negative_totals_owe_nothing_and_carry_no_tax(
    amounts: tuple[int, ...], tax: int, total: int
) -> None:
    invoice = draft(*(line(amount) for amount in amounts))

    assert (invoice.tax, invoice.total, invoice.amount) == (tax, total, total)
    assert invoice.amount_due == 0


def test_nothing_due_is_paid_the_moment_it_is_finalized() -> None:
    invoice = finalize(draft(line(-495_000), line(299_000)), NUMBER, NOW)

    assert (invoice.status, invoice.number, invoice.version) == ("paid", NUMBER, 2)
    assert (invoice.paid_at, invoice.finalized_at) == (NOW, NOW)
    assert (invoice.amount_paid, invoice.amount_due) == (0, 0)


def test_usd_without_tax_shows_a_zero_rate() -> None:
    invoice = draft(line(2_900), tax=NO_TAX_USD, currency="USD")
    assert (invoice.tax, invoice.total, invoice.tax_rate, invoice.tax_name) == (0, 2_900, "0", None)


@pytest.mark.parametrize(
    ("bps", "shown"), [(1100, "11"), (1250, "12.5"), (1205, "12.05"), (5, "0.05"), (0, "0")]
)
def test_rates_are_shown_as_exact_percentages(bps: int, shown: str) -> None:
    assert percent_from_bps(bps) == shown


def test_a_draft_needs_lines_and_a_tax_rate_of_its_currency() -> None:
    with pytest.raises(ValueError, match="at least one line"):
        draft_invoice(
            organization_id="org_a",
            subscription_id=None,
            billing_reason="manual",
            currency="IDR",
            lines=[],
            tax=PPN,
            period_start=START,
            period_end=END,
            due_date=DUE,
            now=NOW,
        )
    with pytest.raises(ValueError, match="USD tax rate"):
        draft(line(100), tax=NO_TAX_USD, currency="IDR")


# -- numbers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("year", "sequence", "number"),
    [(2026, 1, "INV-2026-0001"), (2026, 9999, "INV-2026-9999"), (2026, 10_000, "INV-2026-10000"),
     (2027, 123_456, "INV-2027-123456")],
)  # fmt: skip
def test_invoice_numbers_have_at_least_four_digits(year: int, sequence: int, number: str) -> None:
    assert format_invoice_number(year, sequence) == number


def test_sequences_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        format_invoice_number(2026, 0)


# -- transitions --------------------------------------------------------------------------------------
def test_finalize_opens_a_draft_with_its_number() -> None:
    before = draft()
    invoice = finalize(before, NUMBER, LATER)

    assert (invoice.status, invoice.number, invoice.finalized_at) == ("open", NUMBER, LATER)
    assert (invoice.version, invoice.updated_at, invoice.created_at, invoice.paid_at) == (2, LATER, NOW, None)
    # A new invoice, not a mutation of the draft.
    assert (before.status, before.number, before.version) == ("draft", None, 1)


def test_only_a_draft_is_finalized() -> None:
    with pytest.raises(InvoiceNotDraft) as refused:
        finalize(open_invoice(), "INV-2026-0002", LATER)
    assert refused.value.code == "invoice_not_draft"


def test_paying_the_amount_due_settles_the_invoice() -> None:
    invoice = mark_paid(open_invoice(), 331_890, LATER)

    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == ("paid", 331_890, 0)
    assert (invoice.paid_at, invoice.version, invoice.updated_at) == (LATER, 3, LATER)


def test_mark_paid_is_idempotent() -> None:
    paid = mark_paid(open_invoice(), 331_890, LATER)
    again = mark_paid(paid, 331_890, LATER + timedelta(hours=1))

    assert again is paid
    assert (again.version, again.paid_at, again.amount_paid) == (3, LATER, 331_890)


def test_a_payment_of_another_amount_is_refused() -> None:
    with pytest.raises(InvoiceAmountMismatch) as refused:
        mark_paid(open_invoice(), 299_000, LATER)
    assert refused.value.code == "invoice_amount_mismatch"


def test_overdue_and_uncollectible_invoices_can_still_be_paid() -> None:
    overdue = mark_overdue(open_invoice(), DUE)
    assert mark_paid(overdue, 331_890, LATER).status == "paid"
    uncollectible = mark_uncollectible(overdue, LATER)
    assert mark_paid(uncollectible, 331_890, LATER).status == "paid"  # a late transfer is still money


@pytest.mark.parametrize("invoice", [draft(), void(draft(), NOW)], ids=["draft", "void"])
def test_drafts_and_void_invoices_cannot_be_paid(invoice: Invoice) -> None:
    with pytest.raises(InvoiceNotPayable) as refused:
        mark_paid(invoice, invoice.amount_due, LATER)
    assert refused.value.code == "invoice_not_payable"


def test_an_open_invoice_becomes_overdue_from_its_due_date() -> None:
    with pytest.raises(InvoiceNotDue) as refused:
        mark_overdue(open_invoice(), DUE - timedelta(seconds=1))
    assert refused.value.code == "invoice_not_due"

    overdue = mark_overdue(open_invoice(), DUE)
    assert (overdue.status, overdue.version, overdue.updated_at) == ("overdue", 3, DUE)
    assert mark_overdue(overdue, LATER) is overdue  # a late or repeated timer changes nothing


def test_uncollectible_ends_the_retries() -> None:
    retried = record_retry(mark_overdue(open_invoice(), DUE), LATER, LATER + timedelta(days=2))
    invoice = mark_uncollectible(retried, LATER + timedelta(days=2))

    assert (invoice.status, invoice.next_retry_at, invoice.retry_count, invoice.version) == (
        "uncollectible", None, 1, 5,
    )  # fmt: skip
    assert mark_uncollectible(invoice, LATER + timedelta(days=3)) is invoice


def test_void_leaves_nothing_owed_and_keeps_the_number() -> None:
    for invoice in (draft(), open_invoice(), mark_overdue(open_invoice(), DUE)):
        voided = void(invoice, LATER)
        assert (voided.status, voided.number, voided.version) == ("void", invoice.number, invoice.version + 1)
        assert void(voided, LATER) is voided


def test_record_retry_counts_attempts_and_schedules_the_next() -> None:
    first = record_retry(open_invoice(), LATER, LATER + timedelta(days=1))
    second = record_retry(first, LATER + timedelta(days=1), None)

    day_later = LATER + timedelta(days=1)
    assert (first.retry_count, first.last_retry_at, first.next_retry_at) == (1, LATER, day_later)
    assert (second.retry_count, second.last_retry_at, second.next_retry_at) == (2, day_later, None)
    assert (second.status, second.version) == ("open", 4)


PAID = mark_paid(open_invoice(), 331_890, LATER)
VOID = void(open_invoice(), LATER)
UNCOLLECTIBLE = mark_uncollectible(open_invoice(), LATER)


@pytest.mark.parametrize(
    ("action", "invoice"),
    [
        (lambda i: mark_overdue(i, LATER), draft()),
        (lambda i: mark_overdue(i, LATER), PAID),
        (lambda i: mark_overdue(i, LATER), VOID),
        (lambda i: mark_overdue(i, LATER), UNCOLLECTIBLE),
        (lambda i: mark_uncollectible(i, LATER), draft()),
        (lambda i: mark_uncollectible(i, LATER), PAID),
        (lambda i: mark_uncollectible(i, LATER), VOID),
        (lambda i: void(i, LATER), PAID),
        (lambda i: void(i, LATER), UNCOLLECTIBLE),
        (lambda i: record_retry(i, LATER, None), draft()),
        (lambda i: record_retry(i, LATER, None), PAID),
        (lambda i: record_retry(i, LATER, None), VOID),
        (lambda i: record_retry(i, LATER, None), UNCOLLECTIBLE),
    ],
)
def test_refused_transitions_are_conflicts_naming_the_needed_status(action: Any, invoice: Invoice) -> None:
    with pytest.raises(InvoiceNotOpen) as refused:
        action(invoice)
    assert isinstance(refused.value, Conflict)
    assert refused.value.code == "invoice_not_open"
    assert invoice.status in refused.value.message
