"""The hosted invoice page: ``GET /billing/invoices/{id}/hosted?token=…`` (no authorizer).

The URL's token is the only credential: ``invoices_pdf.service`` compares it in constant time, and a
wrong or missing token answers exactly like an unknown invoice (404 ``invoice_not_found``), so the
page never reveals that an invoice exists. The page is HTML with every value escaped and no script;
the response forbids scripts, framing and referrers (the token must not leak to the pay link's site
through ``Referer``) and caching (the status changes).

Neither the event (its query string holds the token) nor the response is logged or traced.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih.api.app import create_resolver
from tagih.invoices_pdf.service import hosted_page, render_hosted_page
from tagih.observability import TRACED_LIBRARIES
from tagih.store.accounts import default_account_items
from tagih.store.invoices import default_invoice_items
from tagih.store.payments import default_payment_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
app = create_resolver("invoice_pages", authenticated=False)

TAGS = ["Invoices"]
HTML_TYPE = "text/html; charset=utf-8"
InvoiceId = Annotated[str, Path(min_length=1, max_length=64)]
# No length rule: a token of any shape that does not match is the same 404 as any other.
Token = Annotated[str | None, Query(description="The token from the invoice's `hosted_invoice_url`.")]
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "The invoice page.", "content": {"text/html": {"schema": {"type": "string"}}}},
    404: {"description": "`invoice_not_found`: no such invoice, or the token does not match."},
}


@app.get(
    "/billing/invoices/<invoice_id>/hosted",
    summary="The hosted invoice page",
    description="HTML with the lines, PPN, total, status and a pay link; no auth, the URL's token opens it.",
    tags=TAGS,
    responses=RESPONSES,
)
def hosted_invoice(invoice_id: InvoiceId, token: Token = None) -> Response[str]:
    page = hosted_page(
        default_invoice_items(), default_account_items(), default_payment_items(), invoice_id, token
    )
    logger.info("hosted invoice page", extra={"invoice_id": invoice_id, "status": page.invoice.status})
    return Response(
        status_code=200, content_type=HTML_TYPE, body=render_hosted_page(page), headers=dict(PAGE_HEADERS)
    )


# Neither the event nor the response goes to logs or traces: the query string holds the page's token.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
