"""The invoice PDF (cached on S3 by content) and the hosted invoice page (no auth, a token).

PDF: ``invoice_pdf`` looks up ``invoices/<org>/<invoice id>/<content digest>.pdf`` in the cache and
renders only on a miss, so a PDF is made once per version of the invoice however often it is
downloaded; the digest covers the invoice as stored and the bill-to block (``document.canonical_data``).

Hosted page: ``hosted_invoice_page`` finds the invoice by id alone (GSI1) and compares the URL's token
with ``invoice.hosted_token`` in constant time. A wrong or missing token is exactly the answer for an
unknown invoice (``InvoiceNotFound``, same message), so the page never reveals that an id exists.

The pay section follows what the invoice has: its ``payment_url`` (a Midtrans Snap page, a 3-D Secure
step, an e-wallet) as the pay link; the virtual account of a pending bank transfer (from the payment
``gateway_invoice_id`` names); otherwise how to pay (``POST /billing/invoices/{id}/pay`` from the
product's billing page). A GET never starts a payment.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from tagih.domain.accounts import AccountStore, BillingAccount
from tagih.domain.errors import InvoiceNotFound
from tagih.domain.invoices import PAYABLE_STATUSES, Invoice, InvoiceStore
from tagih.domain.money import format_money
from tagih.invoices_pdf.document import InvoiceDocument, content_digest, invoice_document
from tagih.invoices_pdf.render import PdfMetadata, render_html, render_pdf
from tagih.services.accounts import default_billing_account

if TYPE_CHECKING:
    from tagih.domain.payments import Payment, PaymentStore

_LINK_SCHEMES = frozenset({"https", "http"})
_NOT_PAYABLE_MESSAGES = {
    "paid": "This invoice is paid. Thank you.",
    "void": "This invoice was voided: nothing is owed.",
    "draft": "This invoice is a draft: it cannot be paid until it is issued.",
}


class PdfCache(Protocol):
    def get(self, key: str) -> bytes | None:
        """The cached PDF under ``key``; None when there is none (or the cache cannot be read)."""
        ...

    def put(self, key: str, body: bytes) -> None: ...


# -- PDF ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InvoicePdf:
    content: bytes
    filename: str  # "INV-2026-0001.pdf"; a draft: "<invoice id>-draft.pdf"
    key: str  # where the cache keeps it
    rendered: bool  # False when served from the cache


def pdf_key(invoice: Invoice, account: BillingAccount | None) -> str:
    return f"invoices/{invoice.organization_id}/{invoice.id}/{content_digest(invoice, account)}.pdf"


def pdf_filename(invoice: Invoice) -> str:
    return f"{invoice.number}.pdf" if invoice.number else f"{invoice.id}-draft.pdf"


def invoice_pdf(invoice: Invoice, account: BillingAccount | None, cache: PdfCache) -> InvoicePdf:
    key = pdf_key(invoice, account)
    cached = cache.get(key)
    if cached is not None:
        return InvoicePdf(cached, pdf_filename(invoice), key, rendered=False)
    document = invoice_document(invoice, account)
    title = f"Invoice {document.number}" if invoice.number else f"Invoice {invoice.id} (draft)"
    content = render_pdf(document, PdfMetadata(title=title, created_at=invoice.updated_at))
    cache.put(key, content)
    return InvoicePdf(content, pdf_filename(invoice), key, rendered=True)


def organization_invoice_pdf(
    invoices: InvoiceStore, accounts: AccountStore, cache: PdfCache, organization_id: str, invoice_id: str
) -> InvoicePdf:
    """``GET /billing/invoices/{id}/pdf``: ``InvoiceNotFound`` for another organization's invoice."""
    invoice = invoices.get(organization_id, invoice_id)
    return invoice_pdf(invoice, default_billing_account(accounts, organization_id), cache)


# -- hosted page -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaySection:
    """What the page says about paying. ``url`` is a pay link (http/https only)."""

    message: str
    url: str | None = None
    link_label: str = "Pay now"
    bank: str | None = None
    virtual_account: str | None = None
    biller_code: str | None = None
    expires: str | None = None


def invoice_for_token(invoices: InvoiceStore, invoice_id: str, token: str | None) -> Invoice:
    """The invoice whose hosted token is ``token``; ``InvoiceNotFound`` otherwise, unknown or not."""
    not_found = InvoiceNotFound(f"No invoice {invoice_id!r}.")
    try:
        invoice = invoices.get_by_id(invoice_id)
    except InvoiceNotFound:
        raise not_found from None
    given = (token or "").encode("utf-8")
    if not hmac.compare_digest(given, invoice.hosted_token.encode("utf-8")):
        raise not_found
    return invoice


def _link(url: str | None) -> str | None:
    """Only web links become ``href``s: a ``javascript:`` URL is never one, escaped or not."""
    if not url:
        return None
    parts = urlsplit(url)
    return url if parts.scheme.lower() in _LINK_SCHEMES and parts.netloc else None


def pay_section(invoice: Invoice, payment: Payment | None) -> PaySection:
    due = format_money(invoice.amount_due, invoice.currency)
    if invoice.status in _NOT_PAYABLE_MESSAGES:
        return PaySection(message=_NOT_PAYABLE_MESSAGES[invoice.status])
    pending = payment if payment is not None and payment.status in {"processing", "pending"} else None
    url = _link(invoice.payment_url) or _link(pending.payment_url if pending else None)
    if url:
        return PaySection(message=f"Pay {due} online.", url=url, link_label=f"Pay {due}")
    instructions = pending.instructions if pending else None
    if instructions is not None and instructions.va_number:
        bank = (instructions.bank or "").upper() or None
        where = f"the {bank} virtual account" if bank else "the virtual account"
        return PaySection(
            message=f"Transfer {due} to {where} below.",
            bank=bank,
            virtual_account=instructions.va_number,
            biller_code=instructions.biller_code,
            expires=instructions.expires_at,
        )
    wallet = _link(instructions.deeplink_url) if instructions is not None else None
    if wallet:
        provider = (instructions.provider if instructions else None) or "your e-wallet"
        return PaySection(
            message=f"Pay {due} with {provider}.", url=wallet, link_label=f"Pay with {provider}"
        )
    return PaySection(
        message=f"{due} is due. To pay, open the billing page of your account and choose Pay now: "
        "by card, bank transfer (virtual account) or e-wallet. A saved default card is also "
        "charged automatically."
    )


def _pending_payment(payments: PaymentStore, invoice: Invoice) -> Payment | None:
    if invoice.status not in PAYABLE_STATUSES or not invoice.gateway_invoice_id:
        return None
    return payments.get(invoice.organization_id, invoice.gateway_invoice_id)


@dataclass(frozen=True)
class HostedPage:
    invoice: Invoice
    document: InvoiceDocument
    pay: PaySection


def hosted_page(
    invoices: InvoiceStore,
    accounts: AccountStore,
    payments: PaymentStore,
    invoice_id: str,
    token: str | None,
) -> HostedPage:
    invoice = invoice_for_token(invoices, invoice_id, token)
    account = default_billing_account(accounts, invoice.organization_id)
    payment = _pending_payment(payments, invoice)
    return HostedPage(invoice, invoice_document(invoice, account), pay_section(invoice, payment))


def render_hosted_page(page: HostedPage) -> str:
    return render_html(document=page.document, pay=page.pay)
