"""Subscriptions: the organization's plan, subscribing (trial or first charge), cancel and reactivate."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from tagih import clock
from tagih.api.app import create_resolver
from tagih.domain import billing
from tagih.domain.catalog import Features, Limits
from tagih.domain.subscriptions import (
    BillingCycle,
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionStatus,
)
from tagih.gateways.port import GatewayName
from tagih.wiring import default_billing

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# Reads: any member; writes: admin or owner (the kernel's defaults).
app = create_resolver("subscriptions")

TAGS = ["Subscriptions"]
SubscriptionId = Annotated[str, Path(min_length=1, max_length=64)]
SUBSCRIBE_RESPONSES: dict[int, OpenAPIResponse] = {
    402: {"description": "`payment_failed`: the first charge was declined; nothing was kept."},
    409: {"description": "`already_subscribed`, or `contact_sales` for a custom plan."},
    503: {"description": "`gateway_unavailable`: the gateway did not answer; nothing was kept."},
}


class CreateSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="A plan's slug; default: the cheapest paid active plan."
    )
    billing_cycle: BillingCycle = "monthly"
    payment_method_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Default: the organization's default payment method."
    )


class SubscriptionView(BaseModel):
    id: str | None = Field(description="`null` for Free: an organization on Free has no subscription.")
    organization_id: str
    plan: str
    plan_name: str
    status: SubscriptionStatus
    billing_cycle: BillingCycle
    cancel_at_period_end: bool
    trial_ends_at: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    grace_period_ends_at: datetime | None
    cancelled_at: datetime | None
    scheduled_change: ScheduledChange | None
    payment_method_id: str | None
    payment_gateway: GatewayName | None
    gateway_customer_id: str | None
    gateway_subscription_id: str | None
    limits: Limits
    features: Features
    addons: list[SubscriptionAddon]
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionView:
        return cls.model_validate(_whole_seconds(subscription.public_data()))


def _whole_seconds(data: dict[str, Any]) -> dict[str, Any]:
    """The API's timestamps have whole seconds (``…T12:00:00Z``)."""
    return {
        key: clock.to_rfc3339(clock.parse_rfc3339(value))
        if isinstance(value, str) and key.endswith(("_at", "_start", "_end"))
        else value
        for key, value in data.items()
    }


# -- routes ------------------------------------------------------------------------------------------
@app.get("/billing/subscription", summary="The organization's current subscription", tags=TAGS)
def current_subscription() -> SubscriptionView:
    found = billing.current_subscription(default_billing(), app.auth.organization_id, clock.now())
    return SubscriptionView.of(found)


@app.post(
    "/billing/subscriptions",
    status_code=201,
    summary="Subscribe",
    description="A 14-day trial when the plan has one and the organization never trialled; otherwise "
    "the first invoice is charged at once (`active`, or `incomplete` with the invoice's `payment_url` "
    "for virtual accounts and e-wallets).",
    tags=TAGS,
    responses=SUBSCRIBE_RESPONSES,
)
def subscribe(body: CreateSubscription) -> SubscriptionView:
    subscribed = billing.subscribe(
        default_billing(),
        organization_id=app.auth.organization_id,
        plan_slug=body.plan,
        cycle=body.billing_cycle,
        payment_method_id=body.payment_method_id,
        now=clock.now(),
    )
    logger.info(
        "subscribed",
        extra={"subscription_id": subscribed.subscription.id, "status": subscribed.subscription.status},
    )
    return SubscriptionView.of(subscribed.subscription)


@app.get("/billing/subscriptions/<subscription_id>", summary="Get a subscription", tags=TAGS)
def get_subscription(subscription_id: SubscriptionId) -> SubscriptionView:
    found = billing.get_subscription(default_billing(), app.auth.organization_id, subscription_id)
    return SubscriptionView.of(found)


@app.post(
    "/billing/subscriptions/<subscription_id>/cancel",
    summary="Cancel into the grace period",
    description="`grace_period` until max(period end, now + 7 days); reactivate before it ends.",
    tags=TAGS,
)
def cancel_subscription(subscription_id: SubscriptionId) -> SubscriptionView:
    cancelled = billing.cancel_subscription(
        default_billing(), app.auth.organization_id, subscription_id, clock.now()
    )
    logger.info(
        "subscription cancelled", extra={"subscription_id": subscription_id, "status": cancelled.status}
    )
    return SubscriptionView.of(cancelled)


@app.post(
    "/billing/subscriptions/<subscription_id>/reactivate",
    summary="Reactivate during the grace period",
    tags=TAGS,
)
def reactivate_subscription(subscription_id: SubscriptionId) -> SubscriptionView:
    reactivated = billing.reactivate_subscription(
        default_billing(), app.auth.organization_id, subscription_id, clock.now()
    )
    logger.info("subscription reactivated", extra={"subscription_id": subscription_id})
    return SubscriptionView.of(reactivated)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
