"""The invoice as API.md shows it: shared by the invoices handler and the subscriptions handler
(``prorated_invoice``, the change preview), so the two can never show an invoice differently."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from tagih.domain.invoices import INTERNAL_FIELDS, BillingReason, Invoice, InvoiceLine, InvoiceStatus
from tagih.domain.money import Currency


def _whole_seconds(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(microsecond=0)


def _timestamps_in_whole_seconds(fields: dict[str, Any]) -> dict[str, Any]:
    """The API's timestamps are whole seconds; the domain keeps what the clock gave."""
    return {
        name: _whole_seconds(value) if isinstance(value, datetime) else value
        for name, value in fields.items()
    }


class InvoiceLineView(BaseModel):
    description: str
    quantity: int
    unit_amount: int
    amount: int = Field(description="Signed: a proration credit is negative.")
    period_start: datetime | None
    period_end: datetime | None
    proration: bool

    @classmethod
    def of(cls, line: InvoiceLine) -> InvoiceLineView:
        return cls(**_timestamps_in_whole_seconds(line.model_dump()))


class InvoiceView(BaseModel):
    id: str = Field(examples=["inv_3kTMd9Qz1vXbR7pL0aYc"])
    number: str | None = Field(
        description="`INV-<year>-<sequence>`, gapless per UTC year; `null` while a draft.",
        examples=["INV-2026-0001"],
    )
    organization_id: str
    subscription_id: str | None
    billing_reason: BillingReason
    currency: Currency
    lines: list[InvoiceLineView]
    subtotal: int = Field(description="The sum of the line amounts.")
    tax_name: str | None = Field(examples=["PPN"])
    tax_rate: str = Field(description='A decimal percentage, exact: `"11"`, `"12.5"`.', examples=["11"])
    tax: int = Field(description="`tax_rate` of a positive subtotal, rounded half up, once per invoice.")
    credits_applied: int
    total: int = Field(description="`subtotal + tax`.")
    amount: int = Field(description="Equals `total`.")
    amount_paid: int
    amount_due: int = Field(description="`total - credits_applied - amount_paid`, never below 0.")
    status: InvoiceStatus
    due_date: datetime
    period_start: datetime
    period_end: datetime
    paid_at: datetime | None
    retry_count: int = Field(description="Failed dunning charges so far.")
    last_retry_at: datetime | None
    next_retry_at: datetime | None
    payment_url: str | None = Field(
        description="Where to pay, for asynchronous methods (virtual accounts, e-wallets)."
    )
    gateway_invoice_id: str | None = Field(
        description="The gateway's reference; Midtrans: the current order_id."
    )
    pdf_url: str = Field(examples=["/billing/invoices/inv_3kTMd9Qz1vXbR7pL0aYc/pdf"])
    hosted_invoice_url: str = Field(
        description="The invoice's HTML page with a pay link; no auth, an unguessable token."
    )
    created_at: datetime

    @classmethod
    def of(cls, invoice: Invoice) -> InvoiceView:
        fields = invoice.model_dump(exclude={*INTERNAL_FIELDS, "lines"})
        return cls(
            **_timestamps_in_whole_seconds(fields),
            lines=[InvoiceLineView.of(line) for line in invoice.lines],
        )
