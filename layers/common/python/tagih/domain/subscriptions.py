"""Subscriptions: the model, its periods and prices, and the rules every transition keeps
(DESIGN.md "Subscription lifecycle"). The transitions themselves are ``domain.transitions``,
``domain.plan_changes`` and ``domain.addons``.

Nothing here or there reads the clock, the store or a gateway: every function is given the moment it acts
at (``now`` / ``at``) and returns what should be written and what should be invoiced. A transition
returns a NEW ``Subscription`` with ``version + 1`` and ``updated_at = at``; the caller writes it on
the condition that the stored version is still the one it read, so a lost race is a 409, never a
lost write.

Two kinds of callers, two ways of saying "not now":

- Requests (subscribe, change, cancel, reactivate, operator actions) RAISE a domain error when the
  transition is not allowed: the API answers with its status and code.
- Timers and gateway notifications (trial end, renewal, grace end, incomplete expiry, payment
  outcomes) RETURN ``None`` when the firing is early, duplicate or stale. Step Functions and
  gateways deliver at least once and sometimes late, so a no-op is the normal answer there, not an
  error. ``None`` (rather than the unchanged object) makes the caller say what it does with it.

Periods are UTC and half-open ``[start, end)``. Monthly and annual periods keep the subscription's
anchor day, clamped to the month's length (Jan 31 → Feb 28 → Mar 31), so the anchor is stored
(``billing_anchor_day``) rather than read off the last period end.

Money is integers in the currency's unit. ``price`` is the per-cycle price in force, copied from the
catalog when the plan is chosen (Enterprise: the operator's custom price), so a catalog price change
never reprices a running period and a renewal needs no catalog lookup.

Fields beyond API.md's (``INTERNAL_FIELDS``) are the store's and the domain's, never the API's.
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tagih.domain.catalog import Features, Limits, Plan
from tagih.domain.errors import (
    ContactSales,
    CurrencyMismatch,
    OrganizationSuspended,
    PlanNotSubscribable,
    SubscriptionNotActive,
)
from tagih.domain.gateway_names import GatewayName
from tagih.domain.invoices import BillingReason, Invoice, InvoiceLine
from tagih.domain.money import Currency

# -- types --------------------------------------------------------------------------------------------
SubscriptionStatus = Literal[
    "trialing", "incomplete", "active", "past_due", "grace_period", "cancelled", "suspended"
]
BillingCycle = Literal["monthly", "annual"]
ChangeKind = Literal["upgrade", "downgrade", "cycle_change", "same"]
MAX_ADDON_QUANTITY = 1000

ENTERPRISE_PLAN = "enterprise"
ENTERPRISE_PLAN_NAME = "Enterprise"
DEFAULT_GRACE_PERIOD = timedelta(days=7)
# Dunning: retries after the first failed charge (DESIGN.md); configuration may replace it.
DEFAULT_RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(days=1),
    timedelta(days=3),
    timedelta(days=5),
    timedelta(days=7),
)
TRIAL_WILL_END_NOTICE = timedelta(days=3)
# A pending first payment (virtual account, e-wallet) is given 23 h, inside Midtrans' 24 h expiry,
# so the subscription is cancelled before a late payment could still arrive for it.
INCOMPLETE_EXPIRY = timedelta(hours=23)
# Statuses of a subscription the organization still holds (so it cannot subscribe again).
LIVE_STATUSES: tuple[SubscriptionStatus, ...] = (
    "trialing",
    "incomplete",
    "active",
    "past_due",
    "grace_period",
)


class ScheduledChange(BaseModel):
    """A downgrade or an annual→monthly switch waiting for ``effective_at`` (the period end)."""

    model_config = ConfigDict(frozen=True)

    plan: str
    billing_cycle: BillingCycle
    effective_at: datetime


class PlanTerms(BaseModel):
    """What a scheduled change will put in force, captured when the customer asked for it: the
    renewal applies exactly what the customer was shown, and needs no catalog lookup."""

    model_config = ConfigDict(frozen=True)

    plan: str
    plan_name: str
    billing_cycle: BillingCycle
    price: int = Field(ge=0)
    limits: Limits
    features: Features


class SubscriptionAddon(BaseModel):
    """An add-on attached to a subscription: API.md fields, then internal ones (``ADDON_INTERNAL_FIELDS``).

    Prices are copied from the catalog when attached, like a plan's: a catalog change never reprices
    a running subscription."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(examples=["si_5hTq2LmB8xR3vKc9WnYe"])
    subscription_id: str
    addon_id: str
    name: str
    slug: str
    price_monthly: int = Field(ge=0)
    quantity: int = Field(ge=1, le=MAX_ADDON_QUANTITY)
    created_at: datetime
    cancel_at_period_end: bool = Field(
        default=False, description="Removed when the current period ends; until then it counts."
    )
    scheduled_quantity: int | None = Field(
        default=None, ge=1, le=MAX_ADDON_QUANTITY, description="The quantity from the next period on."
    )

    # internal
    price_annual: int = Field(default=0, ge=0)
    unit: Literal["flat", "per_unit"] = "per_unit"
    limits_increase: dict[str, int] = Field(default_factory=dict)

    def unit_amount(self, cycle: BillingCycle) -> int:
        return self.price_monthly if cycle == "monthly" else self.price_annual


ADDON_INTERNAL_FIELDS: frozenset[str] = frozenset({"price_annual", "unit", "limits_increase"})


class Subscription(BaseModel):
    """The organization's current subscription: API.md fields, then internal ones.

    ``id`` is ``None`` only for the Free stand-in ``free_subscription`` builds (nothing is stored
    for an organization on Free, and a made-up id would be one ``GET /subscriptions/{id}`` cannot
    find); its ``version`` is 0 for the same reason.
    """

    model_config = ConfigDict(frozen=True)

    id: str | None
    organization_id: str
    plan: str
    plan_name: str
    status: SubscriptionStatus
    billing_cycle: BillingCycle
    cancel_at_period_end: bool = False
    trial_ends_at: datetime | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    grace_period_ends_at: datetime | None = None
    cancelled_at: datetime | None = None
    scheduled_change: ScheduledChange | None = None
    payment_method_id: str | None = None
    payment_gateway: GatewayName | None = None
    gateway_customer_id: str | None = None
    gateway_subscription_id: str | None = None
    limits: Limits
    features: Features
    addons: list[SubscriptionAddon] = Field(default_factory=list)
    version: int = Field(ge=0)
    created_at: datetime
    updated_at: datetime

    # internal
    currency: Currency
    price: int = Field(ge=0, description="Per-cycle price in force, in the currency's unit.")
    custom_terms: bool = False  # Enterprise: priced by an operator, changed only through sales
    billing_anchor_day: int | None = Field(default=None, ge=1, le=31)
    previous_status: SubscriptionStatus | None = None  # what reactivate returns to
    status_before_suspension: SubscriptionStatus | None = None  # what unsuspend returns to
    suspension_reason: str | None = None
    payment_terms_days: int | None = Field(default=None, ge=0)
    incomplete_expires_at: datetime | None = None
    scheduled_terms: PlanTerms | None = None  # what ``scheduled_change`` will put in force

    @property
    def trial_over_awaiting_payment(self) -> bool:
        """The trial has ended (``end_trial`` moved the period on) and the first charge is pending."""
        return (
            self.status == "trialing"
            and self.trial_ends_at is not None
            and self.current_period_start is not None
            and self.current_period_start >= self.trial_ends_at
        )

    def public_data(self) -> dict[str, Any]:
        """The API.md fields, JSON-ready (what responses and events show)."""
        hidden: dict[str, Any] = dict.fromkeys(INTERNAL_FIELDS, True)
        hidden["addons"] = {"__all__": set(ADDON_INTERNAL_FIELDS)}
        return self.model_dump(mode="json", exclude=hidden)


INTERNAL_FIELDS: frozenset[str] = frozenset(
    {
        "currency",
        "price",
        "custom_terms",
        "billing_anchor_day",
        "previous_status",
        "status_before_suspension",
        "suspension_reason",
        "payment_terms_days",
        "incomplete_expires_at",
        "scheduled_terms",
    }
)


@dataclass(frozen=True)
class StartDecision:
    """A new subscription and what its first invoice bills (``None``: a trial, nothing to charge)."""

    subscription: Subscription
    first_invoice_lines: list[InvoiceLine] | None
    billing_reason: BillingReason = "subscription_create"


@dataclass(frozen=True)
class Renewal:
    """A subscription moved into its next (or first paid) period and the lines to charge for it."""

    subscription: Subscription
    lines: list[InvoiceLine]
    billing_reason: BillingReason


@dataclass(frozen=True)
class ChangeDecision:
    """What a plan or cycle change does, computed before anything is written (``/change/preview``
    shows it; ``apply_change`` carries it out if the subscription is still at ``based_on_version``).

    ``immediate``: the change takes effect at ``effective_at`` = the moment asked; otherwise it is
    scheduled for the period end. ``lines`` is what is invoiced now (empty when nothing is).
    """

    kind: ChangeKind
    plan: str
    billing_cycle: BillingCycle
    immediate: bool
    effective_at: datetime
    based_on_version: int
    lines: list[InvoiceLine] = field(default_factory=list)
    billing_reason: BillingReason = "subscription_update"

    @property
    def subtotal(self) -> int:
        """Net of the lines, before tax (a proration's credit and debit together)."""
        return sum(line.amount for line in self.lines)


# -- periods and prices ---------------------------------------------------------------------------------
def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("billing times must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def add_cycle(start: datetime, cycle: BillingCycle, anchor_day: int) -> datetime:
    """The end of the period that starts at ``start``: one calendar month (or twelve) later, on
    ``anchor_day`` clamped to that month's length, at the same time of day (UTC)."""
    if not 1 <= anchor_day <= 31:
        raise ValueError("anchor_day must be between 1 and 31")
    start = as_utc(start)
    index = start.month - 1 + (1 if cycle == "monthly" else 12)
    year, month = start.year + index // 12, index % 12 + 1
    return start.replace(year=year, month=month, day=min(anchor_day, monthrange(year, month)[1]))


def plan_price(plan: Plan, cycle: BillingCycle) -> int:
    """The catalog's per-cycle price. Custom plans have none: their price is agreed with sales."""
    price = plan.base_price_monthly if cycle == "monthly" else plan.base_price_annual
    if plan.is_custom or price is None:
        raise ContactSales(f"{plan.name} has custom pricing; contact sales.")
    return price


def is_free_plan(plan: Plan) -> bool:
    """A plan that costs nothing in either cycle: an organization is on it without subscribing."""
    return not plan.is_custom and plan.base_price_monthly == 0 and not plan.base_price_annual


def plan_label(plan_name: str, cycle: BillingCycle) -> str:
    return f"{plan_name} ({cycle})"


def period_line(
    description: str, amount: int, start: datetime, end: datetime, *, proration: bool = False
) -> InvoiceLine:
    return InvoiceLine(
        description=description,
        quantity=1,
        unit_amount=amount,
        amount=amount,
        period_start=start,
        period_end=end,
        proration=proration,
    )


def current_period(sub: Subscription) -> tuple[datetime, datetime]:
    if sub.current_period_start is None or sub.current_period_end is None:
        raise ValueError(f"subscription {sub.id!r} has no current period")
    return sub.current_period_start, sub.current_period_end


def next_version(sub: Subscription, at: datetime, **changes: Any) -> Subscription:
    """The subscription after a transition: validated again, one version on, updated at ``at``."""
    return Subscription.model_validate({**dict(sub), **changes, "version": sub.version + 1, "updated_at": at})


def plan_terms(plan: Plan, cycle: BillingCycle) -> PlanTerms:
    return PlanTerms(
        plan=plan.slug,
        plan_name=plan.name,
        billing_cycle=cycle,
        price=plan_price(plan, cycle),
        limits=plan.limits,
        features=plan.features,
    )


def terms_fields(terms: PlanTerms) -> dict[str, Any]:
    return {
        "plan": terms.plan,
        "plan_name": terms.plan_name,
        "billing_cycle": terms.billing_cycle,
        "price": terms.price,
        "limits": terms.limits,
        "features": terms.features,
    }


# -- reading -----------------------------------------------------------------------------------------
def free_subscription(organization_id: str, free_plan: Plan, now: datetime) -> Subscription:
    """What ``GET /billing/subscription`` shows an organization on Free: an active subscription to
    the free plan with no id (nothing is stored), version 0, no periods and nothing to renew.
    ``created_at``/``updated_at`` are ``now``: there is no stored moment to show."""
    return Subscription(
        id=None,
        organization_id=organization_id,
        plan=free_plan.slug,
        plan_name=free_plan.name,
        status="active",
        billing_cycle="monthly",
        limits=free_plan.limits,
        features=free_plan.features,
        version=0,
        created_at=now,
        updated_at=now,
        currency=free_plan.currency,
        price=0,
    )


def current_or_free(
    organization_id: str, current: Subscription | None, free_plan: Callable[[], Plan], now: datetime
) -> Subscription:
    """The subscription an organization is on: the stored one, or Free when there is none or it
    ended (a cancelled subscription leaves the organization on Free, DESIGN.md). ``free_plan`` is
    asked only then: a subscribed organization's read costs no catalog read."""
    if current is None or current.status == "cancelled":
        return free_subscription(organization_id, free_plan(), now)
    return current


def next_renewal_at(sub: Subscription) -> datetime | None:
    """When the renewal sweep should pick the subscription up (its sparse index entry), or None when
    it does not renew: an active subscription's period end, a trial's end (so a trial whose timer
    was lost is still ended by the sweep); never one that is cancelling."""
    if sub.id is None or sub.cancel_at_period_end:
        return None
    if sub.status == "trialing":
        return sub.trial_ends_at
    if sub.status != "active":
        return None
    return sub.current_period_end


def ensure_writable(sub: Subscription) -> None:
    """A suspended organization may read but not change its billing (403 organization_suspended)."""
    if sub.status == "suspended":
        raise OrganizationSuspended()


def require_stored(sub: Subscription) -> None:
    if sub.id is None:
        raise SubscriptionNotActive("The organization is on Free; there is no subscription to change.")


def is_live(sub: Subscription, now: datetime) -> bool:
    if sub.id is None or sub.status not in LIVE_STATUSES:
        return False
    # An incomplete subscription whose expiry timer is merely late is already gone.
    return not (
        sub.status == "incomplete"
        and sub.incomplete_expires_at is not None
        and sub.incomplete_expires_at <= now
    )


def check_target_plan(plan: Plan, currency: str) -> None:
    """Refusals shared by subscribing and changing plan: where ``plan`` cannot be moved to."""
    if plan.is_custom:
        raise ContactSales(f"{plan.name} has custom pricing; contact sales.")
    if is_free_plan(plan):
        raise PlanNotSubscribable(
            f"{plan.name} needs no subscription; cancel the subscription to return to it."
        )
    if not plan.is_active:
        raise PlanNotSubscribable(f"{plan.name} is no longer offered.")
    if plan.currency != currency:
        raise CurrencyMismatch(
            f"{plan.name} is priced in {plan.currency}, the organization is billed in {currency}."
        )


class SubscriptionStore(Protocol):
    def current(self, organization_id: str) -> Subscription | None: ...

    def get(self, organization_id: str, subscription_id: str) -> Subscription: ...

    def has_trialled(self, organization_id: str) -> bool: ...

    def create(
        self,
        subscription: Subscription,
        *,
        replacing: Subscription | None = None,
        trial_started: bool = False,
        invoices: Sequence[Invoice] = (),
    ) -> None: ...

    def save(
        self,
        subscription: Subscription,
        expected_version: int,
        *,
        invoices: Sequence[tuple[Invoice, int | None]] = (),
    ) -> None: ...

    def delete(self, subscription: Subscription, *, invoices: Sequence[Invoice] = ()) -> None: ...


# -- plan and cycle changes ---------------------------------------------------------------------------
def check_changeable(sub: Subscription) -> None:
    ensure_writable(sub)
    require_stored(sub)
    if sub.status not in ("active", "trialing"):
        hint = {
            "past_due": " Pay the open invoice first.",
            "incomplete": " Complete the first payment first.",
            "grace_period": " Reactivate it first.",
        }.get(sub.status, "")
        raise SubscriptionNotActive(f"A {sub.status} subscription cannot change plan.{hint}")
    if sub.trial_over_awaiting_payment:
        raise SubscriptionNotActive(
            "The first payment after the trial is being processed; try again shortly."
        )
