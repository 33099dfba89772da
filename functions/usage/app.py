"""Usage and entitlements: products report usage (owners and admins, or an admin API key); any
member reads the figures and what to enforce."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from tagih import clock
from tagih.api.app import create_resolver
from tagih.domain.text import RequestBody
from tagih.domain.usage import (
    MAX_EVENTS,
    PERIOD_PATTERN,
    Entitlements,
    MetricUsageView,
    UsageEvent,
    UsageHistory,
    UsageReceipt,
    UsageView,
    normalize_metric,
)
from tagih.events.publisher import default_publisher
from tagih.observability import TRACED_LIBRARIES
from tagih.services import usage
from tagih.store.usage import default_terms, default_usage_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
# Reads: any member; reporting usage: admin or owner (the kernel's defaults).
app = create_resolver("usage")

TAGS = ["Usage"]
Period = Annotated[
    str | None, Query(pattern=PERIOD_PATTERN, description="`YYYY-MM`; default the current period.")
]
Months = Annotated[
    str, Query(pattern=r"^([1-9]|1[0-9]|2[0-4])m$", description="How many months, current one included.")
]
Metric = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,62}$",
        description="`api_calls` or `api-calls`, another plan metric, or a custom counted metric.",
    ),
]


class ReportUsage(RequestBody):
    events: list[UsageEvent] = Field(min_length=1, max_length=MAX_EVENTS)


@app.post(
    "/billing/usage/events",
    status_code=202,
    summary="Report usage",
    description="Counted metrics (api_calls, custom metrics) add `quantity`; gauges (members, "
    "applications, storage_bytes, webhooks) are set to it. An `id` already received in the last 35 "
    "days is a duplicate and changes nothing. An event older than 35 days or more than 5 minutes "
    "ahead is refused alone, listed in `rejected` with its reason.",
    tags=TAGS,
)
def report_usage(body: ReportUsage) -> UsageReceipt:
    receipt = usage.report_usage(
        app.auth.organization_id,
        body.events,
        store=default_usage_items(),
        terms=default_terms(),
        publisher=default_publisher(),
        now=clock.now(),
    )
    metrics.add_metric(name="UsageEventsAccepted", unit=MetricUnit.Count, value=receipt.accepted)
    logger.info(
        "usage reported",
        extra={
            "accepted": receipt.accepted,
            "duplicates": receipt.duplicates,
            "rejected": len(receipt.rejected),
        },
    )
    return receipt


@app.get("/billing/usage", summary="Usage of the current period against the quotas", tags=TAGS)
def current_usage() -> UsageView:
    return usage.current_usage(
        app.auth.organization_id, store=default_usage_items(), terms=default_terms(), now=clock.now()
    )


# Registered before /billing/usage/<metric>, which would otherwise take "history" for a metric.
@app.get("/billing/usage/history", summary="Usage of the last months", tags=TAGS)
def usage_history(period: Months = "6m") -> UsageHistory:
    return usage.usage_history(
        app.auth.organization_id,
        int(period.removesuffix("m")),
        store=default_usage_items(),
        terms=default_terms(),
        now=clock.now(),
    )


@app.get("/billing/usage/<metric>", summary="One metric of a period, day by day", tags=TAGS)
def metric_usage(metric: Metric, period: Period = None) -> MetricUsageView:
    return usage.metric_usage(
        app.auth.organization_id,
        normalize_metric(metric),
        period,
        store=default_usage_items(),
        terms=default_terms(),
        now=clock.now(),
    )


@app.get("/billing/entitlements", summary="What the product should enforce now", tags=["Usage"])
def entitlements() -> Entitlements:
    return usage.entitlements(
        app.auth.organization_id, store=default_usage_items(), terms=default_terms(), now=clock.now()
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
