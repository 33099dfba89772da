"""Operator actions on any organization (scope ``billing:operator``): Enterprise terms, suspension.

The organization acted on is the one in the path, not the caller's (``X-Organization-ID``): an
operator acts on customers it is not a member of. That is safe because every route here requires the
``billing:operator`` scope before any code runs (``RoutePolicy``), and only the identity provider
grants that scope (the authorizer reads it from a verified JWT; an organization API key never carries
it). Idempotency records stay keyed by the caller's organization with the path in the fingerprint, so
the same key used for two target organizations is refused, never replayed across them.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from tagih import clock
from tagih.api.app import RoutePolicy, create_resolver
from tagih.api.invoice_view import InvoiceView
from tagih.api.subscription_view import SubscriptionView
from tagih.domain.catalog import Features, Limits
from tagih.domain.money import CurrencyCode
from tagih.domain.subscriptions import (
    BillingCycle,
)
from tagih.domain.text import ORGANIZATION_ID_PATTERN, RequestBody
from tagih.observability import TRACED_LIBRARIES
from tagih.services import operators
from tagih.wiring import default_billing

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()

OPERATOR_SCOPE = "billing:operator"
OPERATORS = RoutePolicy(scope=OPERATOR_SCOPE)
ORGANIZATION = "/billing/operator/organizations/{org_id}"
app = create_resolver(
    "operator",
    policies={
        f"POST {ORGANIZATION}/enterprise": OPERATORS,
        f"POST {ORGANIZATION}/suspend": OPERATORS,
        f"POST {ORGANIZATION}/unsuspend": OPERATORS,
    },
)

TAGS = ["Operators"]
# The characters of an organization id: anything else, such as a percent-encoded `null%2Cnull`
# (Powertools reads the raw path), was taken as an organization and given an Enterprise subscription.
OrganizationId = Annotated[
    str,
    Path(
        min_length=1, max_length=64, pattern=ORGANIZATION_ID_PATTERN, description="The organization acted on."
    ),
]
OPERATOR_RESPONSES: dict[int, OpenAPIResponse] = {
    403: {"description": "`forbidden`: the caller lacks the `billing:operator` scope."},
}


# The same model as the subscriptions function's (a function ships only its own modules). The OpenAPI
# build refuses two different schemas under one name, so the copies cannot drift apart unnoticed (and
# no docstring here: it would become the schema's description).
# A quota as a request states it: a JSON integer or null. Limits itself stays lax, since it also
# reads the catalog's stored numbers; here `false` would have been a quota of 0.
Quota = Annotated[int, Field(ge=0, strict=True)] | None


class EnterpriseLimits(Limits):
    members: Quota
    applications: Quota
    storage_bytes: Quota
    api_calls: Quota
    webhooks: Quota


class EnterpriseFeatures(Features):
    # strict like the quotas: `0` or `"no"` is not a feature switch.
    model_config = ConfigDict(extra="forbid", strict=True)


class ActivateEnterprise(RequestBody):
    # strict: JSON `false` or `"0"` is not a price (lax int read `false` as an Enterprise at 0).
    price_monthly: int = Field(
        ge=0,
        strict=True,
        description="The agreed monthly price in the currency's unit; annual bills 12 times it.",
    )
    currency: CurrencyCode = Field(description="idr, usd, eur, gbp, aud or zar, in either case.")
    billing_cycle: BillingCycle = "monthly"
    limits: EnterpriseLimits = Field(description="The agreed quotas; `null` = unlimited.")
    features: EnterpriseFeatures
    payment_terms_days: int = Field(
        default=30,
        ge=0,
        le=365,
        strict=True,
        description="Days the invoice gives to pay: its `due_date` is now + this.",
    )


class SuspendOrganization(RequestBody):
    reason: str = Field(
        min_length=1, max_length=500, description="Why, for the record (not shown to customers)."
    )


class EnterpriseView(BaseModel):
    subscription: SubscriptionView
    invoice: InvoiceView = Field(
        description="The first period's invoice: `open`, due after `payment_terms_days`, not charged "
        "(Enterprise pays by invoice)."
    )


# -- routes ------------------------------------------------------------------------------------------
@app.post(
    "/billing/operator/organizations/<org_id>/enterprise",
    summary="Activate Enterprise custom terms",
    description="Puts the organization on Enterprise from now with the agreed price, limits and "
    "features. A live subscription is converted in place (its unused paid time credited); otherwise a "
    "new one starts. The first period is invoiced at once, `open` with `due_date` = now + "
    "`payment_terms_days`, and not charged: Enterprise pays by invoice.",
    tags=TAGS,
    responses={
        **OPERATOR_RESPONSES,
        409: {"description": "`already_subscribed` when a concurrent change won; retry."},
        422: {
            "description": "`validation_error`; `currency_mismatch`: a live subscription in another currency."
        },
    },
)
def activate_enterprise(org_id: OrganizationId, body: ActivateEnterprise) -> EnterpriseView:
    activated = operators.activate_enterprise_terms(
        default_billing(),
        org_id,
        price_monthly=body.price_monthly,
        currency=body.currency,
        cycle=body.billing_cycle,
        limits=body.limits,
        features=body.features,
        payment_terms_days=body.payment_terms_days,
        now=clock.now(),
    )
    logger.info(
        "enterprise activated",
        extra={
            "target_organization_id": org_id,
            "operator": app.auth.subject,
            "subscription_id": activated.subscription.id,
            "invoice_id": activated.invoice.id,
        },
    )
    return EnterpriseView(
        subscription=SubscriptionView.of(activated.subscription), invoice=InvoiceView.of(activated.invoice)
    )


@app.post(
    "/billing/operator/organizations/<org_id>/suspend",
    summary="Suspend an organization",
    description="Reads keep working; every billing change answers 403 `organization_suspended` until "
    "unsuspended. An organization on Free is suspended too (subscribing is refused).",
    tags=TAGS,
    responses={**OPERATOR_RESPONSES, 409: {"description": "`already_suspended`."}},
)
def suspend(org_id: OrganizationId, body: SuspendOrganization) -> SubscriptionView:
    suspended = operators.suspend_organization(default_billing(), org_id, body.reason, clock.now())
    logger.info(
        "organization suspended",
        extra={"target_organization_id": org_id, "operator": app.auth.subject, "reason": body.reason},
    )
    return SubscriptionView.of(suspended)


@app.post(
    "/billing/operator/organizations/<org_id>/unsuspend",
    summary="Lift a suspension",
    description="Back to the status the suspension interrupted (an organization on Free: back to Free).",
    tags=TAGS,
    responses={**OPERATOR_RESPONSES, 409: {"description": "`not_suspended`."}},
)
def unsuspend(org_id: OrganizationId) -> SubscriptionView:
    restored = operators.unsuspend_organization(default_billing(), org_id, clock.now())
    logger.info(
        "organization unsuspended", extra={"target_organization_id": org_id, "operator": app.auth.subject}
    )
    return SubscriptionView.of(restored)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
