"""Invoices: what an organization owes, newest first (any member reads).

Neither events nor responses are logged or traced: an invoice's ``hosted_invoice_url`` carries the
token that opens its hosted page without auth.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih.api.app import create_resolver
from tagih.api.invoice_view import InvoiceView
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.domain.invoices import InvoiceStatus
from tagih.store.invoices import default_invoice_items

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# Reads: any member (the kernel's default for GET).
app = create_resolver("invoices")

TAGS = ["Invoices"]
InvoiceId = Annotated[str, Path(min_length=1, max_length=64)]
StatusFilter = Annotated[
    InvoiceStatus | None, Query(description="Only invoices in this status; all of them when absent.")
]


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


# Neither events nor responses are logged or traced: hosted_invoice_url opens the invoice without auth.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
