"""Invoices: what an organization owes, line by line, with PPN, in integers (DESIGN.md "Money, tax").

Pure Python: the store persists invoices and assigns their gapless numbers at finalization.

Amounts:
- ``subtotal`` is the sum of the signed line amounts (a proration credit is a negative line);
- ``tax = round_half_up(max(subtotal, 0) x rate)``, once per invoice, never per line, so the tax a
  customer sees is exactly the rate applied to what they are charged;
- ``total = subtotal + tax`` and ``amount`` (API.md) is ``total``;
- ``amount_due = total - credits_applied - amount_paid``, never below 0.

A non-positive total (a credit at least as large as the debits) is finalized straight to ``paid``
with ``amount_due`` 0 and ``amount_paid`` 0. The remainder of a negative total is not carried
anywhere: Tagih keeps no customer credit balance (downgrades are scheduled with no refund, DESIGN.md),
so such an invoice only records the change; a caller that means to give money back tops up the
wallet explicitly.

Statuses: ``draft → open → paid | overdue → paid | uncollectible → paid``, and ``void`` from
draft, open or overdue. Each transition is a pure function returning a new invoice with
``version + 1``; repeating a transition that already happened (a redelivered notification, a late
timer) returns the invoice unchanged, so callers can be idempotent without special cases.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, computed_field

from tagih.domain.errors import (
    InvoiceAmountMismatch,
    InvoiceNotDraft,
    InvoiceNotDue,
    InvoiceNotOpen,
    InvoiceNotPayable,
)
from tagih.domain.money import Currency, tax_on
from tagih.ids import new_id

if TYPE_CHECKING:
    from tagih.domain.catalog import TaxRate

InvoiceStatus = Literal["draft", "open", "paid", "overdue", "uncollectible", "void"]
BillingReason = Literal[
    "subscription_create",  # the first period of a subscription (or the end of its trial)
    "subscription_cycle",  # a renewal
    "subscription_update",  # a prorated plan change or add-on
    "manual",
]
UNPAID_STATUSES: frozenset[str] = frozenset({"open", "overdue"})
# Fields that are Tagih's bookkeeping, not part of the API.md invoice; a response model leaves them out.
INTERNAL_FIELDS: frozenset[str] = frozenset(
    {"version", "updated_at", "hosted_token", "finalized_at", "tax_rate_bps", "plan_change", "addon_change"}
)


class InvoiceLine(BaseModel):
    """One line as API.md shows it. ``amount`` is signed: a proration credit is negative."""

    model_config = ConfigDict(frozen=True)

    description: str
    quantity: int = Field(default=1, ge=1)
    unit_amount: int
    amount: int
    period_start: datetime | None = None
    period_end: datetime | None = None
    proration: bool = False


def percent_from_bps(rate_bps: int) -> str:
    """``1100 → "11"``, ``1250 → "12.5"``, ``5 → "0.05"``: the rate as people write it, exactly."""
    whole, hundredths = divmod(rate_bps, 100)
    return str(whole) if hundredths == 0 else f"{whole}.{hundredths:02d}".rstrip("0")


class PlanChangeOrder(BaseModel):
    """What a ``subscription_update`` invoice pays for: the change asked at ``requested_at``. A
    payment that settles later (virtual account, e-wallet) applies it then."""

    model_config = ConfigDict(frozen=True)

    plan: str
    billing_cycle: Literal["monthly", "annual"]
    requested_at: datetime


class AddonChangeOrder(BaseModel):
    """What a ``subscription_update`` invoice for an add-on pays for: attaching ``addon`` (as item
    ``item_id``) or raising that item's quantity, asked at ``requested_at``; applied when paid."""

    model_config = ConfigDict(frozen=True)

    action: Literal["attach", "quantity"]
    addon: str  # the catalog slug
    item_id: str
    quantity: int = Field(ge=1)
    requested_at: datetime


class Invoice(BaseModel):
    """The API.md invoice, plus ``INTERNAL_FIELDS``. Derived amounts and URLs are computed, so they
    can never disagree with what they derive from."""

    model_config = ConfigDict(frozen=True)

    id: str
    number: str | None = None  # assigned at finalization, in the transaction that writes it
    organization_id: str
    subscription_id: str | None
    billing_reason: BillingReason
    currency: Currency
    lines: list[InvoiceLine] = Field(min_length=1)
    subtotal: int
    tax_name: str | None
    tax_rate_bps: int = Field(ge=0, le=10_000)
    tax: int = Field(ge=0)
    credits_applied: int = Field(default=0, ge=0)
    total: int
    amount_paid: int = Field(default=0, ge=0)
    status: InvoiceStatus
    due_date: datetime
    period_start: datetime
    period_end: datetime
    paid_at: datetime | None = None
    retry_count: int = Field(default=0, ge=0)
    last_retry_at: datetime | None = None
    next_retry_at: datetime | None = None
    payment_url: str | None = None
    gateway_invoice_id: str | None = None  # Midtrans: the current order_id
    created_at: datetime
    # internal
    version: int = 1
    updated_at: datetime
    hosted_token: str  # the unguessable part of the hosted page's URL (no auth there)
    finalized_at: datetime | None = None
    plan_change: PlanChangeOrder | None = None
    addon_change: AddonChangeOrder | None = None

    # mypy does not follow decorators stacked on @property; pydantic documents this ignore.
    @computed_field  # type: ignore[prop-decorator]
    @property
    def tax_rate(self) -> str:
        """A decimal percentage string ("11", "12.5"), like Stripe's ``*_decimal`` fields: it reads
        as the rate printed on the invoice, stays exact (no floats in Tagih), and cannot be
        mistaken for an amount the way basis points (1100) could. ``tax_rate_bps`` stays the
        number the arithmetic uses."""
        return percent_from_bps(self.tax_rate_bps)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount(self) -> int:
        return self.total

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_due(self) -> int:
        return max(self.total - self.credits_applied - self.amount_paid, 0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pdf_url(self) -> str:
        return f"/billing/invoices/{self.id}/pdf"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hosted_invoice_url(self) -> str:
        return f"/billing/invoices/{self.id}/hosted?token={self.hosted_token}"


class InvoiceStore(Protocol):
    def get(self, organization_id: str, invoice_id: str) -> Invoice:
        """Strongly consistent. ``InvoiceNotFound`` for an unknown id or another organization's."""
        ...

    def get_by_id(self, invoice_id: str) -> Invoice:
        """For callers that know only the id (hosted page, timers). May lag the latest write by a
        moment: a caller that will write re-reads with ``get(invoice.organization_id, id)``."""
        ...

    def list_for_organization(
        self, organization_id: str, status: InvoiceStatus | None = None
    ) -> list[Invoice]:
        """Newest first."""
        ...

    def save_draft(self, invoice: Invoice) -> None:
        """Write a new draft; ``VersionConflict`` if an invoice with its id exists."""
        ...

    def finalize(self, invoice_draft: Invoice, now: datetime) -> Invoice:
        """Give the draft the year's next number and write both in one transaction;
        ``VersionConflict`` when the draft changed since it was read."""
        ...

    def replace(self, invoice: Invoice, expected_version: int) -> None:
        """Write ``invoice`` over the stored one if that is still at ``expected_version``
        (``VersionConflict`` otherwise). Never assigns a number: only ``finalize`` does."""
        ...


# -- drafting -----------------------------------------------------------------------------------------
def draft_invoice(
    *,
    organization_id: str,
    subscription_id: str | None,
    billing_reason: BillingReason,
    currency: Currency,
    lines: Sequence[InvoiceLine],
    tax: TaxRate,
    period_start: datetime,
    period_end: datetime,
    due_date: datetime,
    now: datetime,
) -> Invoice:
    """A new draft with its totals. Mismatched inputs are the caller's bug, hence ``ValueError``."""
    if not lines:
        raise ValueError("an invoice needs at least one line")
    if tax.currency != currency:
        raise ValueError(f"a {tax.currency} tax rate cannot apply to a {currency} invoice")
    subtotal = sum(line.amount for line in lines)
    # Per invoice, on what is charged: a credit-only invoice owes no tax (and gets none back).
    tax_amount = tax_on(max(subtotal, 0), tax.rate_bps)
    return Invoice(
        id=new_id("inv"),
        organization_id=organization_id,
        subscription_id=subscription_id,
        billing_reason=billing_reason,
        currency=currency,
        lines=list(lines),
        subtotal=subtotal,
        tax_name=tax.name,
        tax_rate_bps=tax.rate_bps,
        tax=tax_amount,
        total=subtotal + tax_amount,
        status="draft",
        due_date=due_date,
        period_start=period_start,
        period_end=period_end,
        created_at=now,
        updated_at=now,
        hosted_token=secrets.token_urlsafe(24),
    )


def format_invoice_number(year: int, sequence: int) -> str:
    """``INV-2026-0001``: at least four digits, more once a year passes 9999 invoices."""
    if sequence < 1:
        raise ValueError("invoice sequences start at 1")
    return f"INV-{year:04d}-{sequence:04d}"


# -- status transitions ---------------------------------------------------------------------------
def _changed(invoice: Invoice, now: datetime, **update: object) -> Invoice:
    return invoice.model_copy(update={**update, "version": invoice.version + 1, "updated_at": now})


def finalize(invoice: Invoice, number: str, now: datetime) -> Invoice:
    """Draft → open with its number; nothing to pay (a zero or negative total) → paid at once."""
    if invoice.status != "draft":
        raise InvoiceNotDraft(f"Invoice {invoice.id} is {invoice.status}; only a draft can be finalized.")
    opened = _changed(invoice, now, number=number, status="open", finalized_at=now)
    if opened.amount_due == 0:
        return opened.model_copy(update={"status": "paid", "paid_at": now})
    return opened


def mark_paid(invoice: Invoice, amount: int, at: datetime) -> Invoice:
    """Record a confirmed payment of the whole amount due.

    Uncollectible invoices may still be paid (as in Stripe): money that arrives after dunning gave
    up, say a late virtual-account transfer, must be recorded, not refused. An already paid invoice
    comes back unchanged: a redelivered notification is not a second payment of the invoice (each
    gateway payment is recorded on its own by ``domain.payments``)."""
    if invoice.status == "paid":
        return invoice
    if invoice.status not in {"open", "overdue", "uncollectible"}:
        raise InvoiceNotPayable(f"Invoice {invoice.id} is {invoice.status}; it cannot be paid.")
    if amount != invoice.amount_due:
        raise InvoiceAmountMismatch(
            f"Invoice {invoice.id} has {invoice.amount_due} due; a payment of {amount} does not settle it."
        )
    return _changed(invoice, at, status="paid", amount_paid=invoice.amount_paid + amount, paid_at=at)


def mark_overdue(invoice: Invoice, now: datetime) -> Invoice:
    """Open → overdue once ``due_date`` has passed."""
    if invoice.status == "overdue":
        return invoice
    if invoice.status != "open":
        raise InvoiceNotOpen(f"Invoice {invoice.id} is {invoice.status}; only an open one becomes overdue.")
    if now < invoice.due_date:
        raise InvoiceNotDue(f"Invoice {invoice.id} is due {invoice.due_date.isoformat()}.")
    return _changed(invoice, now, status="overdue")


def mark_uncollectible(invoice: Invoice, now: datetime) -> Invoice:
    """Open/overdue → uncollectible: dunning's last retry failed."""
    if invoice.status == "uncollectible":
        return invoice
    if invoice.status not in UNPAID_STATUSES:
        raise InvoiceNotOpen(f"Invoice {invoice.id} is {invoice.status}; it cannot become uncollectible.")
    return _changed(invoice, now, status="uncollectible", next_retry_at=None)


def void(invoice: Invoice, now: datetime) -> Invoice:
    """Draft/open/overdue → void: nothing is owed. A void invoice keeps its number (no gap)."""
    if invoice.status == "void":
        return invoice
    if invoice.status not in {"draft", *UNPAID_STATUSES}:
        raise InvoiceNotOpen(
            f"Invoice {invoice.id} is {invoice.status}; only draft, open or overdue invoices can be voided."
        )
    return _changed(invoice, now, status="void", next_retry_at=None)


def record_retry(invoice: Invoice, at: datetime, next_retry_at: datetime | None) -> Invoice:
    """A failed dunning charge at ``at``; ``next_retry_at`` is None after the last one."""
    if invoice.status not in UNPAID_STATUSES:
        raise InvoiceNotOpen(f"Invoice {invoice.id} is {invoice.status}; only an unpaid one is retried.")
    return _changed(
        invoice, at, retry_count=invoice.retry_count + 1, last_retry_at=at, next_retry_at=next_retry_at
    )


def invoice_data(invoice: Invoice) -> dict[str, Any]:
    return invoice.model_dump(mode="json", exclude=set(INTERNAL_FIELDS))


def rewritten(invoice: Invoice, now: datetime) -> Invoice:
    """``invoice`` unchanged but for its version, to be written in a transaction with its subscription."""
    return invoice.model_copy(update={"version": invoice.version + 1, "updated_at": now})


PAYABLE_STATUSES: frozenset[str] = frozenset({*UNPAID_STATUSES, "uncollectible"})
_REFUSALS = {
    "paid": "it is already paid",
    "void": "it was voided",
    "draft": "it is a draft and has not been issued",
}


def refuse_unless_payable(invoice: Invoice) -> None:
    """409 ``invoice_not_payable`` (saying why) unless ``invoice`` can be paid now: open, overdue or
    uncollectible (money offered after dunning gave up is taken, as ``mark_paid`` allows), with
    something due."""
    if invoice.status not in PAYABLE_STATUSES:
        reason = _REFUSALS.get(invoice.status, f"it is {invoice.status}")
        raise InvoiceNotPayable(f"Invoice {invoice.id} cannot be paid: {reason}.")
    if invoice.amount_due <= 0:
        raise InvoiceNotPayable(f"Invoice {invoice.id} has nothing due.")
