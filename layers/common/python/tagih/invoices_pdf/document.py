"""What an invoice shows a person, as plain strings: one model behind the PDF and the hosted page.

Pure Python (no templating, no PDF library): both renderers take an ``InvoiceDocument``, so the PDF
and the HTML page can never disagree on an amount, a date or a label.

- Seller: the SaaS operator (``SELLER``); bill to: the organization's default billing account (name,
  email, address) when it has one, otherwise the organization's id.
- Amounts in the currency's display form (``money.format_money``: ``Rp 331.890``); tax as
  ``PPN 11%``; a draft, which has no number yet, reads ``DRAFT``.
- Dates are calendar dates in UTC (``1 Mar 2026``), with English month names whatever the locale.

``content_digest`` names what the PDF cache keys on: everything the PDF is made from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tagih.domain.accounts import BillingAccount
from tagih.domain.invoices import Invoice, InvoiceLine
from tagih.domain.money import format_money

SELLER = "Tagih"
DRAFT = "DRAFT"
# Bump when the PDF layout changes: cached PDFs of the old layout are then never served again.
LAYOUT_VERSION = "1"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
STATUS_LABELS = {
    "draft": "Draft",
    "open": "Open",
    "paid": "Paid",
    "overdue": "Overdue",
    "uncollectible": "Uncollectible",
    "void": "Void",
}
# The token that opens the hosted page must not feed anything derived (keys, logs, the PDF).
_NOT_RENDERED = frozenset({"hosted_token", "hosted_invoice_url"})


def format_date(moment: datetime | None) -> str:
    """``1 Mar 2026`` (UTC); empty for None."""
    if moment is None:
        return ""
    day = moment.astimezone(UTC)
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def format_period(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    return f"{format_date(start)} - {format_date(end)}"


@dataclass(frozen=True)
class DocumentLine:
    description: str
    period: str  # "1 Mar 2026 - 1 Apr 2026", or "" for a line without a period
    quantity: str
    unit_price: str
    amount: str
    proration: bool


@dataclass(frozen=True)
class InvoiceDocument:
    seller: str
    number: str  # "INV-2026-0001", or "DRAFT"
    status: str  # the invoice's status as in the API ("open")
    status_label: str  # "Open"
    currency: str
    issued: str
    due: str
    period: str
    paid_on: str  # "" unless paid
    bill_to: tuple[str, ...]  # name, email, address lines; the organization id when no account
    lines: tuple[DocumentLine, ...]
    subtotal: str
    tax_label: str  # "PPN 11%"
    tax: str
    credits_applied: str  # "" when none
    total: str
    amount_paid: str
    amount_due: str

    @property
    def is_draft(self) -> bool:
        return self.status == "draft"


def _line(line: InvoiceLine, currency: str) -> DocumentLine:
    return DocumentLine(
        description=line.description,
        period=format_period(line.period_start, line.period_end),
        quantity=str(line.quantity),
        unit_price=format_money(line.unit_amount, currency),
        amount=format_money(line.amount, currency),
        proration=line.proration,
    )


def bill_to_lines(invoice: Invoice, account: BillingAccount | None) -> tuple[str, ...]:
    if account is None:
        return (invoice.organization_id,)
    lines = [account.name, account.email]
    address = account.address
    if address is not None:
        lines += [address.line1, address.line2 or ""]
        city = " ".join(part for part in (address.city, address.state or "", address.postal_code) if part)
        lines += [city, address.country]
    return tuple(line for line in lines if line)


def invoice_document(invoice: Invoice, account: BillingAccount | None) -> InvoiceDocument:
    money = invoice.currency
    return InvoiceDocument(
        seller=SELLER,
        number=invoice.number or DRAFT,
        status=invoice.status,
        status_label=STATUS_LABELS.get(invoice.status, invoice.status.title()),
        currency=money,
        issued=format_date(invoice.finalized_at or invoice.created_at),
        due=format_date(invoice.due_date),
        period=format_period(invoice.period_start, invoice.period_end),
        paid_on=format_date(invoice.paid_at) if invoice.status == "paid" else "",
        bill_to=bill_to_lines(invoice, account),
        lines=tuple(_line(line, money) for line in invoice.lines),
        subtotal=format_money(invoice.subtotal, money),
        tax_label=f"{invoice.tax_name or 'Tax'} {invoice.tax_rate}%",
        tax=format_money(invoice.tax, money),
        credits_applied=format_money(-invoice.credits_applied, money) if invoice.credits_applied else "",
        total=format_money(invoice.total, money),
        amount_paid=format_money(invoice.amount_paid, money),
        amount_due=format_money(invoice.amount_due, money),
    )


def canonical_data(invoice: Invoice, account: BillingAccount | None) -> dict[str, Any]:
    """Everything a rendered PDF depends on: the layout version, the invoice as stored (its
    ``version`` and ``updated_at`` included, so any change of the invoice is a new PDF) and the
    bill-to block. Never the hosted page's token."""
    return {
        "layout": LAYOUT_VERSION,
        "invoice": invoice.model_dump(mode="json", exclude=set(_NOT_RENDERED)),
        "bill_to": list(bill_to_lines(invoice, account)),
    }


def content_digest(invoice: Invoice, account: BillingAccount | None) -> str:
    """SHA-256 (hex) of ``canonical_data`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(
        canonical_data(invoice, account), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
