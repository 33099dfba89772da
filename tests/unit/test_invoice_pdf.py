"""The invoice PDF and hosted page without AWS: what a reader extracts from the PDF (pypdf), drafts,
names the core PDF fonts cannot draw, the content digest the cache keys on, the cache itself (an
in-memory one), the pay section and HTML escaping."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from pypdf import PdfReader

from tagih.domain.accounts import Address, BillingAccount
from tagih.domain.catalog import TaxRate
from tagih.domain.gateway import PaymentInstructions
from tagih.domain.invoices import Invoice, InvoiceLine, draft_invoice, finalize, mark_paid
from tagih.domain.payments import Payment
from tagih.invoices_pdf.document import content_digest, invoice_document
from tagih.invoices_pdf.render import latin1, render_html
from tagih.invoices_pdf.service import HostedPage, invoice_pdf, pay_section, pdf_key, render_hosted_page

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
PPN = TaxRate(currency="IDR", name="PPN", rate_bps=1100)


def invoice_of(lines: list[InvoiceLine], *, number: str | None = "INV-2026-0007") -> Invoice:
    draft = draft_invoice(
        organization_id="org_pdf",
        subscription_id="sub_pdf",
        billing_reason="subscription_update",
        currency="IDR",
        lines=lines,
        tax=PPN,
        period_start=NOW,
        period_end=NOW + timedelta(days=31),
        due_date=NOW + timedelta(days=7),
        now=NOW,
    )
    return finalize(draft, number, NOW) if number else draft


def pro_month() -> Invoice:
    return invoice_of(
        [
            InvoiceLine(
                description="Pro (monthly)",
                unit_amount=299_000,
                amount=299_000,
                period_start=NOW,
                period_end=NOW + timedelta(days=31),
            )
        ]
    )


def upgrade() -> Invoice:
    """Three lines, one of them a credit: subtotal 1.049.000, PPN 115.390, total 1.164.390."""
    return invoice_of(
        [
            InvoiceLine(description="Business (monthly), prorated", unit_amount=990_000, amount=990_000),
            InvoiceLine(
                description="Unused time on Pro", unit_amount=-240_000, amount=-240_000, proration=True
            ),
            InvoiceLine(description="Extra seats", quantity=3, unit_amount=99_666, amount=298_998 + 2),
        ]
    )


def account(name: str = "PT Maju Jaya") -> BillingAccount:
    return BillingAccount(
        id="acct_pdf",
        organization_id="org_pdf",
        name=name,
        email="finance@maju.example",
        currency="IDR",
        address=Address(country="ID", line1="Jl. Sudirman 1", city="Jakarta", postal_code="10220"),
        created_at=NOW,
        updated_at=NOW,
    )


def pdf_text(content: bytes) -> str:
    assert content.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


def text_lines(content: bytes) -> list[str]:
    return [line.strip() for line in pdf_text(content).splitlines()]


def flat(lines: list[str]) -> str:
    """The text in reading order on one line: a table row reads "<description> <qty> <unit> <amount>"."""
    return " ".join(lines)


class MemoryCache:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def put(self, key: str, body: bytes) -> None:
        self.puts += 1
        self.objects[key] = body


# -- what the PDF says --------------------------------------------------------------------------------
def test_the_pdf_shows_number_lines_ppn_and_total_as_rupiah() -> None:
    invoice = pro_month()

    lines = text_lines(invoice_pdf(invoice, account(), MemoryCache()).content)

    text = "\n".join(lines)
    assert "INV-2026-0007" in text
    assert "Tagih" in text
    # The line: description, its period, quantity, unit price, amount.
    assert "Pro (monthly) 1 Mar 2026 - 1 Apr 2026 1 Rp 299.000 Rp 299.000" in flat(lines)
    assert "Subtotal Rp 299.000" in lines
    assert "PPN 11% Rp 32.890" in lines
    assert "Total Rp 331.890" in lines
    assert "Amount due Rp 331.890" in lines
    assert "Open" in text
    assert "1 Mar 2026 - 1 Apr 2026" in text
    # Bill to: the default billing account
    for shown in ("PT Maju Jaya", "finance@maju.example", "Jl. Sudirman 1", "Jakarta 10220"):
        assert shown in text


def test_every_line_a_credit_and_a_quantity_appear_with_their_amounts() -> None:
    invoice = upgrade()
    assert (invoice.subtotal, invoice.tax, invoice.total) == (1_049_000, 115_390, 1_164_390)

    lines = text_lines(invoice_pdf(invoice, None, MemoryCache()).content)

    text = flat(lines)
    assert "Business (monthly), prorated 1 Rp 990.000 Rp 990.000" in text
    assert "Unused time on Pro 1 -Rp 240.000 -Rp 240.000" in text
    assert "Extra seats 3 Rp 99.666 Rp 299.000" in text
    assert "PPN 11% Rp 115.390" in lines
    assert "Total Rp 1.164.390" in lines
    assert "org_pdf" in text  # no billing account: the organization is who is billed


def test_a_paid_invoice_says_paid_and_nothing_due() -> None:
    invoice = mark_paid(pro_month(), 331_890, NOW + timedelta(hours=2))

    lines = text_lines(invoice_pdf(invoice, account(), MemoryCache()).content)

    assert "Amount paid Rp 331.890" in lines
    assert "Amount due Rp 0" in lines
    assert any(line.endswith("Paid 1 Mar 2026") for line in lines)


def test_a_draft_reads_draft() -> None:
    draft = invoice_of(
        [InvoiceLine(description="Pro (monthly)", unit_amount=299_000, amount=299_000)], number=None
    )

    pdf = invoice_pdf(draft, None, MemoryCache())

    assert "DRAFT" in pdf_text(pdf.content)
    assert pdf.filename == f"{draft.id}-draft.pdf"


def test_names_beyond_latin1_do_not_break_the_pdf() -> None:
    invoice = invoice_of(
        [
            InvoiceLine(
                description="Seats \u2014 \u201cteam\u201d \u2026 \U0001f680 \u65e5\u672c",
                unit_amount=1,
                amount=1,
            )
        ]
    )

    text = pdf_text(invoice_pdf(invoice, account("J\u00fcrgen \u0141ukasz \u0150rs"), MemoryCache()).content)

    assert 'Seats - "team" ... ? ??' in text
    assert "J\u00fcrgen ?ukasz Ors" in text  # ü is latin-1; Ł has no latin-1 base; Ő loses its accent


@pytest.mark.parametrize(
    ("given", "drawn"),
    [
        ("Rp 331.890", "Rp 331.890"),
        ("M\u00fcller", "M\u00fcller"),
        ("Mu\u0308ller", "M\u00fcller"),  # decomposed ü composes
        ("\u20ac5 \u2013 \u2018x\u2019", "EUR5 - 'x'"),
        ("\u0142\u4e2d", "??"),
    ],
)
def test_latin1(given: str, drawn: str) -> None:
    assert latin1(given) == drawn


# -- the cache key --------------------------------------------------------------------------------------
def test_the_digest_follows_every_change_and_never_the_token() -> None:
    invoice = pro_month()
    paid = mark_paid(invoice, invoice.amount_due, NOW)
    renamed = account("PT Maju Jaya Abadi")

    assert content_digest(invoice, account()) == content_digest(invoice.model_copy(), account())
    assert content_digest(paid, account()) != content_digest(invoice, account())
    assert content_digest(invoice, renamed) != content_digest(invoice, account())
    assert content_digest(invoice.model_copy(update={"hosted_token": "other"}), account()) == content_digest(
        invoice, account()
    )
    key = pdf_key(invoice, account())
    assert key == f"invoices/org_pdf/{invoice.id}/{content_digest(invoice, account())}.pdf"
    assert invoice.hosted_token not in key


def test_a_cached_pdf_is_served_without_rendering_and_a_change_renders_anew() -> None:
    cache = MemoryCache()
    invoice = pro_month()

    first = invoice_pdf(invoice, account(), cache)
    again = invoice_pdf(invoice, account(), cache)
    paid = invoice_pdf(mark_paid(invoice, invoice.amount_due, NOW), account(), cache)

    assert (first.rendered, again.rendered, paid.rendered) == (True, False, True)
    assert again.content == first.content
    assert paid.key != first.key
    assert cache.puts == 2
    assert first.filename == "INV-2026-0007.pdf"


def test_the_same_invoice_renders_the_same_bytes() -> None:
    invoice = pro_month()

    assert (
        invoice_pdf(invoice, account(), MemoryCache()).content
        == invoice_pdf(invoice, account(), MemoryCache()).content
    )


# -- the hosted page ----------------------------------------------------------------------------------
def payment(**fields: object) -> Payment:
    base = Payment(
        organization_id="org_pdf",
        reference="inv_x-a1",
        purpose="invoice",
        subject_id="inv_x",
        attempt=1,
        gateway="midtrans",
        payment_method_id="pm_1",
        amount=331_890,
        currency="IDR",
        status="pending",
        created_at=NOW,
        updated_at=NOW,
    )
    return base.__class__(**{**base.__dict__, **fields})


def test_the_pay_section_follows_the_invoice() -> None:
    invoice = pro_month()
    snap = invoice.model_copy(update={"payment_url": "https://app.midtrans.com/snap/v4/redirection/abc"})
    va = payment(instructions=PaymentInstructions(bank="bca", va_number="12345678901"))

    assert pay_section(snap, None).url == "https://app.midtrans.com/snap/v4/redirection/abc"
    assert pay_section(snap, None).link_label == "Pay Rp 331.890"
    by_transfer = pay_section(invoice, va)
    assert (by_transfer.url, by_transfer.bank, by_transfer.virtual_account) == (None, "BCA", "12345678901")
    assert (
        pay_section(invoice, payment(status="failed", instructions=va.instructions)).virtual_account is None
    )
    assert "Pay now" in pay_section(invoice, None).message
    assert pay_section(mark_paid(invoice, 331_890, NOW), None).message == "This invoice is paid. Thank you."


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x", "//evil.example/x", "https:/x"])
def test_only_web_links_become_pay_links(url: str) -> None:
    assert pay_section(pro_month().model_copy(update={"payment_url": url}), None).url is None


def test_the_page_escapes_what_customers_typed() -> None:
    invoice = invoice_of(
        [InvoiceLine(description='<script>alert("x")</script>', unit_amount=299_000, amount=299_000)]
    )
    page = HostedPage(
        invoice, invoice_document(invoice, account('Evil "Corp" <b>')), pay_section(invoice, None)
    )

    html = render_hosted_page(page)

    assert "<script" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "Evil &#34;Corp&#34; &lt;b&gt;" in html
    assert "Rp 331.890" in html
    assert "INV-2026-0007" in html


def test_the_template_refuses_an_unknown_name() -> None:
    with pytest.raises(Exception, match="undefined"):
        render_html(document=invoice_document(pro_month(), None))
