"""Rendering an ``InvoiceDocument``: a PDF with fpdf2, the hosted page with jinja2.

Both libraries are imported inside the functions that use them (DESIGN.md, Layering): importing
this module, or any handler, loads neither.

Fonts: fpdf2 ships no TrueType font, only the PDF core fonts, which encode latin-1. Rather than
bundle a font file in the layer, every string drawn is made latin-1 first (``latin1``): "Rp", "ü",
"é" pass unchanged; typographic punctuation becomes its ASCII look-alike ("—" → "-", "…" → "...");
letters with accents latin-1 lacks lose the accent ("ł" stays "?", "ő" becomes "o"); anything else
(CJK, emoji) becomes "?". The hosted page (UTF-8 HTML) shows every name exactly.

The PDF's text is real text (Helvetica), so it can be copied, searched and extracted.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tagih.invoices_pdf.document import InvoiceDocument

if TYPE_CHECKING:
    from jinja2 import Environment

TEMPLATES = Path(__file__).resolve().parent / "templates"
HOSTED_TEMPLATE = "hosted.html.j2"

# Typographic characters outside latin-1, drawn as their plain look-alikes.
_LOOKALIKES = str.maketrans(
    {
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2022": "*",
        "\u2026": "...",
        "\u20ac": "EUR",
        "\u2122": "TM",
        "\u2009": " ",
        "\u202f": " ",
    }
)


def latin1(text: str) -> str:
    """``text`` as the core PDF fonts can draw it (see the module's docstring)."""
    composed = unicodedata.normalize("NFC", text).translate(_LOOKALIKES)
    out = []
    for char in composed:
        if ord(char) < 256:
            out.append(char)
            continue
        # "ő" → "o" + combining mark: keep the base letter when it is latin-1.
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        out.append(base if base and all(ord(c) < 256 for c in base) else "?")
    return "".join(out)


# -- PDF ----------------------------------------------------------------------------------------------
MARGIN = 15.0
WIDTH = 180.0  # A4 (210 mm) less the margins
COLUMNS = (92.0, 14.0, 37.0, 37.0)  # description, quantity, unit price, amount
LINE_HEIGHT = 5.0


@dataclass(frozen=True)
class PdfMetadata:
    title: str
    created_at: datetime  # the invoice's last change: the same invoice renders the same bytes


def render_pdf(document: InvoiceDocument, metadata: PdfMetadata) -> bytes:
    from fpdf import FPDF  # the PDF library loads only when a PDF is made

    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(auto=True, margin=MARGIN)
    pdf.set_title(latin1(metadata.title))
    pdf.set_author(latin1(document.seller))
    pdf.set_creator("Tagih")
    pdf.set_creation_date(metadata.created_at.astimezone(UTC))
    pdf.add_page()

    _heading(pdf, document)
    _parties(pdf, document)
    _lines(pdf, document)
    _totals(pdf, document)
    return bytes(pdf.output())


def _text(pdf: Any, width: float, value: str, *, align: str = "L", end_line: bool = False) -> None:
    if end_line:
        pdf.cell(width, 6, latin1(value), align=align, new_x="LMARGIN", new_y="NEXT")
    else:
        pdf.cell(width, 6, latin1(value), align=align)


def _heading(pdf: Any, document: InvoiceDocument) -> None:
    pdf.set_font("helvetica", "B", 20)
    _text(pdf, WIDTH / 2, document.seller)
    _text(pdf, WIDTH / 2, "INVOICE", align="R", end_line=True)
    pdf.set_font("helvetica", "B", 12)
    _text(pdf, WIDTH / 2, "")
    _text(pdf, WIDTH / 2, document.number, align="R", end_line=True)
    pdf.ln(4)


def _parties(pdf: Any, document: InvoiceDocument) -> None:
    facts = [
        ("Status", document.status_label),
        ("Issued", document.issued),
        ("Due", document.due),
        ("Period", document.period),
    ]
    if document.paid_on:
        facts.append(("Paid", document.paid_on))
    left = ["Bill to", *document.bill_to]
    for index in range(max(len(left), len(facts))):
        pdf.set_font("helvetica", "B" if index == 0 else "", 10)
        _text(pdf, WIDTH / 2, left[index] if index < len(left) else "")
        label, value = facts[index] if index < len(facts) else ("", "")
        pdf.set_font("helvetica", "B", 10)
        _text(pdf, 25, label)
        pdf.set_font("helvetica", "", 10)
        _text(pdf, WIDTH / 2 - 25, value, align="R", end_line=True)
    pdf.ln(6)


def _lines(pdf: Any, document: InvoiceDocument) -> None:
    pdf.set_font("helvetica", "", 10)
    with pdf.table(
        col_widths=COLUMNS,
        width=WIDTH,
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
        v_align="TOP",
        borders_layout="HORIZONTAL_LINES",
        line_height=LINE_HEIGHT,
        padding=1.5,
    ) as table:
        heading = table.row()
        for title in ("Description", "Qty", "Unit price", "Amount"):
            heading.cell(title)
        for line in document.lines:
            row = table.row()
            description = line.description + (f"\n{line.period}" if line.period else "")
            row.cell(latin1(description))
            row.cell(line.quantity)
            row.cell(latin1(line.unit_price))
            row.cell(latin1(line.amount))
    pdf.ln(4)


def _totals(pdf: Any, document: InvoiceDocument) -> None:
    rows = [("Subtotal", document.subtotal), (document.tax_label, document.tax)]
    if document.credits_applied:
        rows.append(("Credits applied", document.credits_applied))
    rows += [("Total", document.total), ("Amount paid", document.amount_paid)]
    rows.append(("Amount due", document.amount_due))
    label_width, value_width = COLUMNS[1] + COLUMNS[2], COLUMNS[3]
    for label, value in rows:
        strong = label in {"Total", "Amount due"}
        pdf.set_font("helvetica", "B" if strong else "", 10)
        pdf.set_x(MARGIN + COLUMNS[0])
        _text(pdf, label_width, label)
        _text(pdf, value_width, value, align="R", end_line=True)


# -- hosted page -------------------------------------------------------------------------------------
@cache
def _environment() -> Environment:
    import jinja2  # templating loads only when a page is rendered

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every value is escaped: line descriptions and names are customer input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(**context: Any) -> str:
    """The hosted invoice page (``templates/hosted.html.j2``), every value HTML-escaped."""
    return _environment().get_template(HOSTED_TEMPLATE).render(**context)
