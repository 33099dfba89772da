"""Invoices: what an organization owes, newest first (any member reads), each as a PDF, and "pay now"
(admins and owners, the kernel's default for writes).

Neither events nor responses are logged or traced: an invoice's ``hosted_invoice_url`` carries the
token that opens its hosted page without auth.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from tagih import clock
from tagih.api.app import create_resolver
from tagih.api.invoice_view import InvoiceView
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.domain.invoices import InvoiceStatus
from tagih.domain.text import RequestBody
from tagih.invoices_pdf.storage import PDF_TYPE, default_pdf_cache
from tagih.observability import TRACED_LIBRARIES
from tagih.store.invoices import default_invoice_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
# Reads: any member (the kernel's default for GET).
app = create_resolver("invoices")

TAGS = ["Invoices"]
InvoiceId = Annotated[str, Path(min_length=1, max_length=64)]
StatusFilter = Annotated[
    InvoiceStatus | None, Query(description="Only invoices in this status; all of them when absent.")
]
PDF_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {
        "description": "The invoice as a PDF (`curl … -o invoice.pdf`).",
        "content": {PDF_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
}
PAY_RESPONSES: dict[int, OpenAPIResponse] = {
    # Listed, since a route's own responses replace the one Powertools derives from its return type.
    200: {
        "description": "The invoice: `paid`, or still `open` with the pending payment's `payment_url` "
        "and `gateway_invoice_id`.",
        "content": {"application/json": {"model": InvoiceView}},
    },
    402: {"description": "`payment_failed`: the charge was declined; the invoice is unchanged."},
    409: {"description": "`invoice_not_payable`: the invoice is paid, void or a draft."},
    503: {"description": "`gateway_unavailable`: the gateway did not answer; nothing was charged."},
}


class PayInvoice(RequestBody):
    payment_method_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Default: the organization's default payment method."
    )


# -- routes ------------------------------------------------------------------------------------------
@app.get("/billing/invoices", summary="List invoices", description="Newest first.", tags=TAGS)
def list_invoices(
    status: StatusFilter = None, page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE
) -> Page[InvoiceView]:
    found = default_invoice_items().list_for_organization(app.auth.organization_id, status)
    return paginate([InvoiceView.of(invoice) for invoice in found], page, page_size)


@app.get("/billing/invoices/<invoice_id>", summary="Get an invoice", tags=TAGS)
def get_invoice(invoice_id: InvoiceId) -> InvoiceView:
    invoice = default_invoice_items().get(app.auth.organization_id, invoice_id)
    return InvoiceView.of(invoice)


@app.get(
    "/billing/invoices/<invoice_id>/pdf",
    summary="Download an invoice as a PDF",
    description="Rendered once per version of the invoice and kept on S3; a draft reads DRAFT.",
    tags=TAGS,
    responses=PDF_RESPONSES,
)
def get_invoice_pdf(invoice_id: InvoiceId) -> Response[str]:
    # The bill-to account and the PDF document are this route's alone: the other reads never load them.
    from tagih.invoices_pdf.service import organization_invoice_pdf
    from tagih.store.accounts import default_account_items

    pdf = organization_invoice_pdf(
        default_invoice_items(),
        default_account_items(),
        default_pdf_cache(),
        app.auth.organization_id,
        invoice_id,
    )
    logger.info("invoice pdf", extra={"invoice_id": invoice_id, "rendered": pdf.rendered})
    response: Response[str] = Response(
        status_code=200,
        content_type=PDF_TYPE,
        # Already base64: with validation on, Powertools serializes a bytes body as UTF-8 text, which
        # a PDF is not. API Gateway decodes it for the client (isBase64Encoded), so curl -o gets bytes.
        body=base64.b64encode(pdf.content).decode("ascii"),
        headers={
            "Content-Disposition": f'inline; filename="{pdf.filename}"',
            "Cache-Control": "private, no-cache",
        },
    )
    response.base64_encoded = True
    return response


@app.post(
    "/billing/invoices/<invoice_id>/pay",
    summary="Pay an invoice now",
    description="Charges what is due to the given method or the default one: `paid`, or still `open` "
    "with `payment_url` / `gateway_invoice_id` for virtual accounts and e-wallets.",
    tags=TAGS,
    responses=PAY_RESPONSES,
)
def pay_invoice(invoice_id: InvoiceId, body: PayInvoice | None = None) -> InvoiceView:
    # Charging (payments, gateways, events) is this route's alone: the reads never load it.
    from tagih.services import collection
    from tagih.wiring import default_billing

    invoice = collection.pay_invoice(
        default_billing(),
        organization_id=app.auth.organization_id,
        invoice_id=invoice_id,
        payment_method_id=body.payment_method_id if body else None,
        now=clock.now(),
    )
    logger.info("invoice pay now", extra={"invoice_id": invoice_id, "status": invoice.status})
    return InvoiceView.of(invoice)


# Neither events nor responses are logged or traced: hosted_invoice_url opens the invoice without auth.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
