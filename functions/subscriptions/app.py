"""Subscriptions: the organization's plan, subscribing (trial or first charge), plan changes (prorated
upgrades charged at once, downgrades scheduled), cancel and reactivate."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from tagih import clock
from tagih.api.app import RoutePolicy, create_resolver
from tagih.api.invoice_view import InvoiceLineView, InvoiceView
from tagih.api.subscription_view import SubscriptionView
from tagih.domain.invoices import percent_from_bps
from tagih.domain.money import Currency
from tagih.domain.subscriptions import (
    BillingCycle,
    ChangeKind,
    ScheduledChange,
)
from tagih.domain.text import RequestBody
from tagih.observability import TRACED_LIBRARIES
from tagih.services import plan_changes, subscriptions
from tagih.wiring import default_billing

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
PREVIEW_ROUTE = "POST /billing/subscriptions/{subscription_id}/change/preview"
# Reads: any member; writes: admin or owner (the kernel's defaults). A change preview writes nothing,
# so any member may look at one.
app = create_resolver("subscriptions", policies={PREVIEW_ROUTE: RoutePolicy(role="member")})

TAGS = ["Subscriptions"]
SubscriptionId = Annotated[str, Path(min_length=1, max_length=64)]
SUBSCRIBE_RESPONSES: dict[int, OpenAPIResponse] = {
    402: {"description": "`payment_failed`: the first charge was declined; nothing was kept."},
    409: {"description": "`already_subscribed`, or `contact_sales` for a custom plan."},
    503: {"description": "`gateway_unavailable`: the gateway did not answer; nothing was kept."},
}
CHANGE_RESPONSES: dict[int, OpenAPIResponse] = {
    402: {"description": "`payment_failed`: the prorated charge was declined; nothing changed."},
    409: {
        "description": "`version_conflict` (a stale `expected_version`, or another change of the "
        "subscription won the race), `contact_sales` for a custom plan, `subscription_not_active`."
    },
    422: {"description": "`payment_method_required`, `plan_not_subscribable`, `currency_mismatch`."},
    503: {"description": "`gateway_unavailable`: the gateway did not answer; nothing changed."},
}
CHANGE_DESCRIPTION = (
    "Upgrade (the new plan costs more per day, same cycle): immediate; the unused time of the old "
    "price is credited and the rest of the period at the new price debited, per second, with tax; "
    "that invoice is charged at once to the subscription's payment method (else the organization's "
    "default) and the plan changes only once it is paid (402 and nothing changed when declined). "
    "For a virtual account or e-wallet the plan stays as it is and `prorated_invoice` is `open` "
    "with its `payment_url`. Monthly → annual: a new annual period starts now, the unused monthly "
    "time credited. Downgrade, or annual → monthly: `scheduled_change` at `current_period_end`, no "
    "invoice, no refund. During a trial: switched at once, nothing invoiced. Two changes racing: "
    "one wins, the other is 409 `version_conflict` and is never charged."
)


class CreateSubscription(RequestBody):
    plan: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="A plan's slug; default: the cheapest paid active plan."
    )
    billing_cycle: BillingCycle = "monthly"
    payment_method_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Default: the organization's default payment method."
    )


class ChangePlan(RequestBody):
    plan: Annotated[str, Field(min_length=1, max_length=64)] = Field(description="The new plan's slug.")
    billing_cycle: BillingCycle | None = Field(default=None, description="Default: the current cycle.")
    expected_version: int | None = Field(
        default=None,
        ge=0,
        description="The subscription's `version` as last read: 409 `version_conflict` if it changed since.",
    )


class PreviewPlanChange(RequestBody):
    plan: Annotated[str, Field(min_length=1, max_length=64)] = Field(description="The new plan's slug.")
    billing_cycle: BillingCycle | None = Field(default=None, description="Default: the current cycle.")


class PlanChangeView(BaseModel):
    subscription: SubscriptionView
    prorated_invoice: InvoiceView | None = Field(
        description="The invoice the change created: `paid`, or `open` with a `payment_url` while an "
        "asynchronous payment is awaited; `null` when nothing was invoiced (downgrade, trial)."
    )


class PlanChangePreviewView(BaseModel):
    """The invoice the change would create, at the top level (``lines``, ``subtotal``, ``tax``,
    ``total``; empty and zero when nothing is invoiced now), and what else it would do."""

    kind: ChangeKind = Field(description="`upgrade`, `downgrade`, `cycle_change` or `same`.")
    plan: str
    billing_cycle: BillingCycle
    immediate: bool = Field(description="`false`: scheduled for `effective_at` (the period end).")
    effective_at: datetime
    currency: Currency
    lines: list[InvoiceLineView] = Field(description="What is invoiced now; a proration credit is negative.")
    subtotal: int
    tax_name: str | None
    tax_rate: str
    tax: int
    total: int
    amount_due: int = Field(description="What would be charged at once.")
    scheduled_change: ScheduledChange | None
    prorated_invoice: InvoiceView | None = Field(
        description="The whole draft the change would create (its id is not kept), or `null`."
    )
    subscription: SubscriptionView = Field(description="The subscription as the change would leave it.")

    @classmethod
    def of(cls, preview: plan_changes.PlanChangePreview) -> PlanChangePreviewView:
        decision, invoice = preview.decision, preview.invoice
        after = SubscriptionView.of(preview.subscription)
        return cls(
            kind=decision.kind,
            plan=decision.plan,
            billing_cycle=decision.billing_cycle,
            immediate=decision.immediate,
            effective_at=decision.effective_at.replace(microsecond=0),
            currency=preview.subscription.currency,
            lines=[InvoiceLineView.of(line) for line in decision.lines],
            subtotal=invoice.subtotal if invoice else 0,
            tax_name=preview.tax.name,
            tax_rate=percent_from_bps(preview.tax.rate_bps),
            tax=invoice.tax if invoice else 0,
            total=invoice.total if invoice else 0,
            amount_due=invoice.amount_due if invoice else 0,
            scheduled_change=after.scheduled_change if preview.scheduled_change else None,
            prorated_invoice=InvoiceView.of(invoice) if invoice else None,
            subscription=after,
        )


# -- routes ------------------------------------------------------------------------------------------
@app.get("/billing/subscription", summary="The organization's current subscription", tags=TAGS)
def current_subscription() -> SubscriptionView:
    found = subscriptions.current_subscription(default_billing(), app.auth.organization_id, clock.now())
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
    subscribed = subscriptions.subscribe(
        default_billing(),
        organization_id=app.auth.organization_id,
        plan_slug=body.plan,
        cycle=body.billing_cycle,
        payment_method_id=body.payment_method_id,
        now=clock.now(),
        request_key=app.idempotency_key,
    )
    logger.info(
        "subscribed",
        extra={"subscription_id": subscribed.subscription.id, "status": subscribed.subscription.status},
    )
    return SubscriptionView.of(subscribed.subscription)


@app.get("/billing/subscriptions/<subscription_id>", summary="Get a subscription", tags=TAGS)
def get_subscription(subscription_id: SubscriptionId) -> SubscriptionView:
    found = subscriptions.get_subscription(default_billing(), app.auth.organization_id, subscription_id)
    return SubscriptionView.of(found)


@app.post(
    "/billing/subscriptions/<subscription_id>/cancel",
    summary="Cancel into the grace period",
    description="`grace_period` until max(period end, now + 7 days); reactivate before it ends.",
    tags=TAGS,
)
def cancel_subscription(subscription_id: SubscriptionId) -> SubscriptionView:
    cancelled = subscriptions.cancel_subscription(
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
    reactivated = subscriptions.reactivate_subscription(
        default_billing(), app.auth.organization_id, subscription_id, clock.now()
    )
    logger.info("subscription reactivated", extra={"subscription_id": subscription_id})
    return SubscriptionView.of(reactivated)


def _change(subscription_id: str, body: ChangePlan) -> PlanChangeView:
    changed = plan_changes.change_plan(
        default_billing(),
        app.auth.organization_id,
        subscription_id,
        plan_slug=body.plan,
        cycle=body.billing_cycle,
        expected_version=body.expected_version,
        now=clock.now(),
    )
    logger.info(
        "subscription plan change",
        extra={
            "subscription_id": subscription_id,
            "plan": changed.subscription.plan,
            "invoice_id": changed.invoice.id if changed.invoice else None,
        },
    )
    return PlanChangeView(
        subscription=SubscriptionView.of(changed.subscription),
        prorated_invoice=InvoiceView.of(changed.invoice) if changed.invoice else None,
    )


@app.post(
    "/billing/subscriptions/<subscription_id>/change",
    summary="Change plan or billing cycle",
    description=CHANGE_DESCRIPTION,
    tags=TAGS,
    responses=CHANGE_RESPONSES,
)
def change_subscription(subscription_id: SubscriptionId, body: ChangePlan) -> PlanChangeView:
    return _change(subscription_id, body)


@app.patch(
    "/billing/subscriptions/<subscription_id>",
    summary="Change plan (same as POST …/change)",
    description=CHANGE_DESCRIPTION,
    tags=TAGS,
    responses=CHANGE_RESPONSES,
)
def update_subscription(subscription_id: SubscriptionId, body: ChangePlan) -> PlanChangeView:
    return _change(subscription_id, body)


@app.post(
    "/billing/subscriptions/<subscription_id>/change/preview",
    summary="Preview a plan change",
    description="What `POST …/change` with the same body would do now, nothing written: the invoice it "
    "would create at the top level (`lines`, `subtotal`, `tax`, `total`, `amount_due`; empty and 0 when "
    "nothing is invoiced now), the whole draft as `prorated_invoice`, a downgrade's `scheduled_change`, "
    "and the `subscription` as the change would leave it. Any member may preview.",
    tags=TAGS,
    responses={
        409: {"description": "`contact_sales` for a custom plan, `subscription_not_active`."},
        422: {"description": "`plan_not_subscribable`, `currency_mismatch`."},
    },
)
def preview_change(subscription_id: SubscriptionId, body: PreviewPlanChange) -> PlanChangePreviewView:
    preview = plan_changes.preview_plan_change(
        default_billing(),
        app.auth.organization_id,
        subscription_id,
        plan_slug=body.plan,
        cycle=body.billing_cycle,
        now=clock.now(),
    )
    return PlanChangePreviewView.of(preview)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
