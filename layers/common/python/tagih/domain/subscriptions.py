"""Subscriptions: the lifecycle as pure transitions (DESIGN.md "Subscription lifecycle").

Nothing here reads the clock, the store or a gateway: every function is given the moment it acts
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tagih.domain.catalog import Addon, Features, Limits, Plan
from tagih.domain.errors import (
    AddonAlreadyAttached,
    AddonNotFound,
    AlreadyCancelled,
    AlreadySubscribed,
    AlreadySuspended,
    ContactSales,
    CurrencyMismatch,
    GracePeriodOver,
    InvalidField,
    NotInGracePeriod,
    NotSuspended,
    OrganizationSuspended,
    PaymentMethodRequired,
    PlanNotSubscribable,
    SubscriptionAddonNotFound,
    SubscriptionNotActive,
    VersionConflict,
)
from tagih.domain.invoices import BillingReason, InvoiceLine
from tagih.domain.money import Currency
from tagih.domain.proration import costs_more_per_day, prorate
from tagih.gateways.names import GatewayName
from tagih.ids import new_id

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
def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("billing times must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def add_cycle(start: datetime, cycle: BillingCycle, anchor_day: int) -> datetime:
    """The end of the period that starts at ``start``: one calendar month (or twelve) later, on
    ``anchor_day`` clamped to that month's length, at the same time of day (UTC)."""
    if not 1 <= anchor_day <= 31:
        raise ValueError("anchor_day must be between 1 and 31")
    start = _utc(start)
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


def _label(plan_name: str, cycle: BillingCycle) -> str:
    return f"{plan_name} ({cycle})"


def _line(
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


def _period(sub: Subscription) -> tuple[datetime, datetime]:
    if sub.current_period_start is None or sub.current_period_end is None:
        raise ValueError(f"subscription {sub.id!r} has no current period")
    return sub.current_period_start, sub.current_period_end


def _next(sub: Subscription, at: datetime, **changes: Any) -> Subscription:
    """The subscription after a transition: validated again, one version on, updated at ``at``."""
    return Subscription.model_validate({**dict(sub), **changes, "version": sub.version + 1, "updated_at": at})


def _terms(plan: Plan, cycle: BillingCycle) -> PlanTerms:
    return PlanTerms(
        plan=plan.slug,
        plan_name=plan.name,
        billing_cycle=cycle,
        price=plan_price(plan, cycle),
        limits=plan.limits,
        features=plan.features,
    )


def _terms_fields(terms: PlanTerms) -> dict[str, Any]:
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
    organization_id: str, current: Subscription | None, free_plan: Plan, now: datetime
) -> Subscription:
    """The subscription an organization is on: the stored one, or Free when there is none or it
    ended (a cancelled subscription leaves the organization on Free, DESIGN.md)."""
    if current is None or current.status == "cancelled":
        return free_subscription(organization_id, free_plan, now)
    return current


def next_renewal_at(sub: Subscription) -> datetime | None:
    """When the renewal sweep should pick the subscription up (its sparse index entry), or None when
    it does not renew: only active subscriptions that are not cancelling renew."""
    if sub.id is None or sub.status != "active" or sub.cancel_at_period_end:
        return None
    return sub.current_period_end


def ensure_writable(sub: Subscription) -> None:
    """A suspended organization may read but not change its billing (403 organization_suspended)."""
    if sub.status == "suspended":
        raise OrganizationSuspended()


def _require_stored(sub: Subscription) -> None:
    if sub.id is None:
        raise SubscriptionNotActive("The organization is on Free; there is no subscription to change.")


def _is_live(sub: Subscription, now: datetime) -> bool:
    if sub.id is None or sub.status not in LIVE_STATUSES:
        return False
    # An incomplete subscription whose expiry timer is merely late is already gone.
    return not (
        sub.status == "incomplete"
        and sub.incomplete_expires_at is not None
        and sub.incomplete_expires_at <= now
    )


def _check_target(plan: Plan, currency: str) -> None:
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


# -- subscribing --------------------------------------------------------------------------------------
def start_subscription(
    organization_id: str,
    plan: Plan,
    cycle: BillingCycle,
    now: datetime,
    *,
    trial_available: bool,
    payment_method_id: str | None,
    gateway: GatewayName | None,
    currency: Currency,
    existing: Subscription | None = None,
    gateway_customer_id: str | None = None,
    trial_length: timedelta | None = None,
) -> StartDecision:
    """A new subscription to ``plan``.

    With a trial (the plan has ``trial_days`` and the organization never trialled): ``trialing``,
    the current period is the trial itself and nothing is invoiced. Otherwise ``incomplete`` with
    the first period's line: the caller charges it, then calls ``activate_after_first_payment``; an
    asynchronous payment leaves it ``incomplete`` until paid or ``expire_incomplete`` 23 h later.
    ``trial_length`` overrides ``plan.trial_days`` (the ``TRIAL_DURATION`` configuration, seconds in
    end-to-end tests). ``existing`` is the organization's stored subscription, if any: a live one
    refuses (409 already_subscribed), a cancelled one is replaced by this one (a new id).
    """
    now = _utc(now)
    if existing is not None:
        ensure_writable(existing)
        if _is_live(existing, now):
            hint = " Reactivate it instead." if existing.status == "grace_period" else ""
            raise AlreadySubscribed(
                f"The organization already has a {existing.plan_name} subscription ({existing.status}).{hint}"
            )
    _check_target(plan, currency)
    price = plan_price(plan, cycle)
    common: dict[str, Any] = {
        "id": new_id("sub"),
        "organization_id": organization_id,
        "plan": plan.slug,
        "plan_name": plan.name,
        "billing_cycle": cycle,
        "payment_method_id": payment_method_id,
        "payment_gateway": gateway,
        "gateway_customer_id": gateway_customer_id,
        "limits": plan.limits,
        "features": plan.features,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "currency": currency,
        "price": price,
    }
    if plan.trial_days > 0 and trial_available:
        length = trial_length if trial_length is not None else timedelta(days=plan.trial_days)
        if length <= timedelta(0):
            raise ValueError("a trial must last some time")
        ends = now + length
        trialing = Subscription(
            **common,
            status="trialing",
            trial_ends_at=ends,
            current_period_start=now,
            current_period_end=ends,
            billing_anchor_day=ends.day,
        )
        return StartDecision(subscription=trialing, first_invoice_lines=None)
    if payment_method_id is None:
        raise PaymentMethodRequired()
    end = add_cycle(now, cycle, now.day)
    incomplete = Subscription(
        **common,
        status="incomplete",
        current_period_start=now,
        current_period_end=end,
        billing_anchor_day=now.day,
        incomplete_expires_at=now + INCOMPLETE_EXPIRY,
    )
    return StartDecision(
        subscription=incomplete, first_invoice_lines=[_line(_label(plan.name, cycle), price, now, end)]
    )


def activate_after_first_payment(sub: Subscription, at: datetime) -> Subscription | None:
    """The first invoice is paid: ``incomplete`` → ``active``. A payment that lands after the expiry
    moment but before the expiry timer ran still activates (the money arrived). None when the
    subscription is no longer incomplete (a duplicate notification, or already expired)."""
    if sub.status != "incomplete":
        return None
    return _next(sub, _utc(at), status="active", incomplete_expires_at=None)


def expire_incomplete(sub: Subscription, at: datetime) -> Subscription | None:
    """23 h without the first payment: ``incomplete`` → ``cancelled``. None when paid meanwhile,
    already expired, or fired before ``incomplete_expires_at``."""
    at = _utc(at)
    if sub.status != "incomplete" or sub.incomplete_expires_at is None or at < sub.incomplete_expires_at:
        return None
    return _next(sub, at, status="cancelled", cancelled_at=at)


# -- trials -------------------------------------------------------------------------------------------
def end_trial(sub: Subscription, at: datetime) -> Renewal | None:
    """The trial is over: the first paid period starts at ``trial_ends_at`` (not at the firing time,
    so a late timer charges the same period) and its line is to be charged. The status stays
    ``trialing`` until the caller reports the charge (``trial_converted`` / ``trial_payment_failed``).
    None when fired early, when no longer trialing (cancelled into grace: a cancelled trial is never
    charged; suspended), or when the trial was already ended (a duplicate firing)."""
    at = _utc(at)
    if sub.status != "trialing" or sub.trial_ends_at is None or at < sub.trial_ends_at:
        return None
    if sub.trial_over_awaiting_payment:
        return None
    first = sub.trial_ends_at
    end = add_cycle(first, sub.billing_cycle, first.day)
    addons = next_period_addons(sub.addons)
    ended = _next(
        sub,
        at,
        current_period_start=first,
        current_period_end=end,
        billing_anchor_day=first.day,
        addons=addons,
    )
    line = _line(_label(sub.plan_name, sub.billing_cycle), sub.price, first, end)
    lines = [line, *addon_lines(addons, sub.billing_cycle, first, end)]
    return Renewal(subscription=ended, lines=lines, billing_reason="subscription_create")


def trial_converted(sub: Subscription, at: datetime) -> Subscription | None:
    """The first charge after the trial succeeded: → ``active``. None unless ``end_trial`` ran and
    its charge is still outstanding."""
    if not sub.trial_over_awaiting_payment:
        return None
    return _next(sub, _utc(at), status="active")


def trial_payment_failed(sub: Subscription, at: datetime) -> Subscription | None:
    """The first charge after the trial failed: → ``past_due`` (dunning takes over). None unless
    ``end_trial`` ran and its charge is still outstanding."""
    if not sub.trial_over_awaiting_payment:
        return None
    return _next(sub, _utc(at), status="past_due")


# -- plan and cycle changes ---------------------------------------------------------------------------
def _check_changeable(sub: Subscription) -> None:
    ensure_writable(sub)
    _require_stored(sub)
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


def _costs_more(old_price: int, new_price: int, start: datetime, end: datetime) -> bool:
    # Both prices are for the same cycle here, so both cover the current period's length; in seconds
    # so that a test period shorter than a day still compares.
    length = int((end - start).total_seconds())
    return costs_more_per_day(old_price, length, new_price, length)


def preview_change(
    sub: Subscription, new_plan: Plan, new_cycle: BillingCycle | None, at: datetime
) -> ChangeDecision:
    """What moving to ``new_plan`` (and ``new_cycle``; None keeps the current cycle) does at ``at``.

    - same plan and cycle → ``same``: nothing to invoice (``apply_change`` only drops a pending
      scheduled change, as returning to the current plan means keeping it);
    - during the trial → applied at once with no lines, whatever the direction: the trial is free;
    - monthly → annual → ``cycle_change`` at once: a new annual period starts at ``at``, the
      unused monthly time is credited and the full annual price debited;
    - annual → monthly (any plan) → ``cycle_change`` scheduled for the period end, no lines: the
      paid year is not refunded, and an annual customer wanting a dearer plan now upgrades within
      the annual cycle first;
    - same cycle, the new plan costs more per day → ``upgrade`` at once with two proration lines
      over ``[at, current_period_end)``: the credit for the unused old price, the debit for the new;
    - otherwise → ``downgrade`` scheduled for ``current_period_end``, no refund.

    A renewal still pending when the period already ended (the sweep is hourly) leaves no unused
    time: the change applies with no proration and the renewal bills the new terms.
    """
    at = _utc(at)
    cycle: BillingCycle = new_cycle or sub.billing_cycle
    _check_changeable(sub)

    def decision(
        kind: ChangeKind, *, immediate: bool, effective_at: datetime, lines: list[InvoiceLine] | None = None
    ) -> ChangeDecision:
        return ChangeDecision(
            kind=kind,
            plan=new_plan.slug,
            billing_cycle=cycle,
            immediate=immediate,
            effective_at=effective_at,
            based_on_version=sub.version,
            lines=lines or [],
        )

    if new_plan.slug == sub.plan and cycle == sub.billing_cycle:
        return decision("same", immediate=True, effective_at=at)
    if sub.custom_terms:
        raise ContactSales("The subscription has custom terms; contact sales to change them.")
    _check_target(new_plan, sub.currency)
    new_price = plan_price(new_plan, cycle)
    start, end = _period(sub)
    old_label, new_label = _label(sub.plan_name, sub.billing_cycle), _label(new_plan.name, cycle)
    same_cycle = cycle == sub.billing_cycle
    upgrade = same_cycle and _costs_more(sub.price, new_price, start, end)

    if sub.status == "trialing":
        kind: ChangeKind = "upgrade" if upgrade else "downgrade" if same_cycle else "cycle_change"
        return decision(kind, immediate=True, effective_at=at)

    if sub.billing_cycle == "monthly" and cycle == "annual":
        lines = []
        year_end = add_cycle(at, "annual", at.day)
        if at < end:
            credit = prorate(sub.price, 0, start, end, at).credit
            lines.append(_line(f"Unused time on {old_label}", credit, at, end, proration=True))
            for item in sub.addons:  # the add-ons move to the annual cycle with the plan
                unused = prorate(item.unit_amount("monthly") * item.quantity, 0, start, end, at).credit
                label = _addon_label(item, item.quantity, "monthly")
                lines.append(_line(f"Unused time on {label}", unused, at, end, proration=True))
        lines.append(_line(new_label, new_price, at, year_end))
        lines += addon_lines(next_period_addons(sub.addons), "annual", at, year_end)
        return decision("cycle_change", immediate=True, effective_at=at, lines=lines)

    if sub.billing_cycle == "annual" and cycle == "monthly":
        return decision("cycle_change", immediate=False, effective_at=end)

    if upgrade:
        lines = []
        if at < end:
            proration = prorate(sub.price, new_price, start, end, at)
            lines = [
                _line(f"Unused time on {old_label}", proration.credit, at, end, proration=True),
                _line(f"Remaining time on {new_label}", proration.debit, at, end, proration=True),
            ]
        return decision("upgrade", immediate=True, effective_at=at, lines=lines)
    return decision("downgrade", immediate=False, effective_at=end)


def apply_change(sub: Subscription, decision: ChangeDecision, new_plan: Plan, at: datetime) -> Subscription:
    """Carry out ``decision`` (from ``preview_change`` on this very version: otherwise 409
    version_conflict, as the subscription changed since the customer saw the preview).

    Immediate: the plan, name, price, limits and features change now (a monthly→annual change also
    starts the new annual period at ``at``, anchored on its day); any scheduled change is dropped.
    Scheduled: ``scheduled_change`` is set (replacing an earlier one) with the new terms captured
    for ``renew``. ``same`` with nothing scheduled returns ``sub`` itself: nothing to write.
    For an immediate change with lines, call this once their invoice is paid.
    """
    at = _utc(at)
    if decision.based_on_version != sub.version:
        raise VersionConflict(
            f"Subscription {sub.id!r} is at version {sub.version}, not {decision.based_on_version}."
        )
    if decision.plan != new_plan.slug:
        raise ValueError("the decision is for another plan")
    if decision.kind == "same":
        if sub.scheduled_change is None:
            return sub
        return _next(sub, at, scheduled_change=None, scheduled_terms=None)
    terms = _terms(new_plan, decision.billing_cycle)
    if not decision.immediate:
        scheduled = ScheduledChange(
            plan=terms.plan, billing_cycle=terms.billing_cycle, effective_at=decision.effective_at
        )
        return _next(sub, at, scheduled_change=scheduled, scheduled_terms=terms)
    changes = _terms_fields(terms) | {"scheduled_change": None, "scheduled_terms": None}
    if decision.kind == "cycle_change" and sub.status != "trialing":
        changes |= {
            "current_period_start": at,
            "current_period_end": add_cycle(at, decision.billing_cycle, at.day),
            "billing_anchor_day": at.day,
            "addons": next_period_addons(sub.addons),  # a new period starts: as a renewal would
        }
    return _next(sub, at, **changes)


# -- add-ons -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AddonDecision:
    """What attaching an add-on or changing its quantity does at ``at``, decided on ``based_on_version``.
    ``subscription`` is as the change leaves it (for a change with a positive ``lines`` total: once
    that invoice is paid); ``item`` is the add-on as it then stands; ``lines`` is invoiced now."""

    subscription: Subscription
    item: SubscriptionAddon
    lines: list[InvoiceLine]
    based_on_version: int


def _addon_label(item: SubscriptionAddon, quantity: int, cycle: BillingCycle) -> str:
    if item.unit == "flat":
        return f"{item.name} ({cycle})"
    return f"{item.name} ({quantity} {'unit' if quantity == 1 else 'units'}, {cycle})"


def addon_lines(
    items: Sequence[SubscriptionAddon], cycle: BillingCycle, start: datetime, end: datetime
) -> list[InvoiceLine]:
    """A full period's line per add-on: quantity times the cycle's unit price."""
    return [
        InvoiceLine(
            description=_addon_label(item, item.quantity, cycle),
            quantity=item.quantity,
            unit_amount=item.unit_amount(cycle),
            amount=item.quantity * item.unit_amount(cycle),
            period_start=start,
            period_end=end,
        )
        for item in items
    ]


def next_period_addons(items: Sequence[SubscriptionAddon]) -> list[SubscriptionAddon]:
    """The add-ons of the next period: removals take effect, scheduled quantities apply."""
    return [
        item.model_copy(
            update={"quantity": item.scheduled_quantity or item.quantity, "scheduled_quantity": None}
        )
        for item in items
        if not item.cancel_at_period_end
    ]


def addon_increments(sub: Subscription) -> list[dict[str, int]]:
    """What the attached add-ons add to the plan's limits now (``usage.effective_quotas``)."""
    return [
        {metric: extra * item.quantity for metric, extra in item.limits_increase.items()}
        for item in sub.addons
        if item.limits_increase
    ]


def _addon_item(sub: Subscription, item_id: str) -> SubscriptionAddon:
    for item in sub.addons:
        if item.id == item_id:
            return item
    raise SubscriptionAddonNotFound(f"Subscription {sub.id} has no add-on {item_id!r}.")


def _check_addons_changeable(sub: Subscription) -> None:
    _check_changeable(sub)
    if sub.custom_terms:
        raise ContactSales("The subscription has custom terms; contact sales to add to them.")


def _with_item(sub: Subscription, item: SubscriptionAddon, at: datetime) -> Subscription:
    items = [item if existing.id == item.id else existing for existing in sub.addons]
    if item.id not in {existing.id for existing in sub.addons}:
        items.append(item)
    return _next(sub, at, addons=items)


def _remaining_time_lines(
    sub: Subscription, item: SubscriptionAddon, old_quantity: int, new_quantity: int, at: datetime
) -> list[InvoiceLine]:
    """Prorated like an upgrade: the unused time of the old quantity credited, the rest of the
    period at the new one debited. Nothing during a trial (it is free) or past the period end (a
    renewal still pending bills the new quantity in full)."""
    start, end = _period(sub)
    if sub.status == "trialing" or at >= end:
        return []
    unit = item.unit_amount(sub.billing_cycle)
    proration = prorate(unit * old_quantity, unit * new_quantity, start, end, at)
    lines = []
    if old_quantity:
        old_label = _addon_label(item, old_quantity, sub.billing_cycle)
        lines.append(_line(f"Unused time on {old_label}", proration.credit, at, end, proration=True))
    new_label = _addon_label(item, new_quantity, sub.billing_cycle)
    lines.append(_line(f"Remaining time on {new_label}", proration.debit, at, end, proration=True))
    return lines


def attach_addon(
    sub: Subscription, addon: Addon, quantity: int, at: datetime, *, item_id: str
) -> AddonDecision:
    """Attach ``quantity`` units of ``addon`` from ``at``: the rest of the current period is invoiced now,
    prorated per second (nothing during a trial: the trial-end invoice bills it), and every
    renewal bills it in full. 409 ``addon_already_attached`` for an add-on already on the
    subscription (change its quantity instead); a flat add-on is attached once."""
    at = _utc(at)
    _check_addons_changeable(sub)
    if not addon.is_active:
        raise AddonNotFound(f"{addon.name} is no longer offered.")
    if addon.currency != sub.currency:
        raise CurrencyMismatch(
            f"{addon.name} is priced in {addon.currency}, the subscription is billed in {sub.currency}."
        )
    if addon.unit == "flat" and quantity != 1:
        raise InvalidField("quantity", f"{addon.name} is a flat add-on: its quantity is 1.")
    if any(item.slug == addon.slug for item in sub.addons):
        raise AddonAlreadyAttached(
            f"{addon.name} is already attached; change its quantity "
            "(PATCH /billing/subscriptions/{id}/addons/{item_id})."
        )
    item = SubscriptionAddon(
        id=item_id,
        subscription_id=_stored_id_of(sub),
        addon_id=addon.id,
        name=addon.name,
        slug=addon.slug,
        price_monthly=addon.price_monthly,
        quantity=quantity,
        created_at=at,
        price_annual=addon.price_annual,
        unit=addon.unit,
        limits_increase=dict(addon.limits_increase),
    )
    lines = _remaining_time_lines(sub, item, 0, quantity, at)
    return AddonDecision(_with_item(sub, item, at), item, lines, sub.version)


def change_addon_quantity(sub: Subscription, item_id: str, quantity: int, at: datetime) -> AddonDecision:
    """Set an attached add-on's quantity. More: at once, prorated like an upgrade. Fewer: from the
    next period (``scheduled_quantity``; the paid units stay until then, no refund). Changing the
    quantity of an add-on being removed keeps it. During a trial: at once, nothing invoiced."""
    at = _utc(at)
    _check_addons_changeable(sub)
    item = _addon_item(sub, item_id)
    if item.unit == "flat" and quantity != 1:
        raise InvalidField("quantity", f"{item.name} is a flat add-on: its quantity is 1.")
    kept = {"cancel_at_period_end": False, "scheduled_quantity": None}
    if quantity > item.quantity or (sub.status == "trialing" and quantity != item.quantity):
        changed = item.model_copy(update={**kept, "quantity": quantity})
        lines = _remaining_time_lines(sub, item, item.quantity, quantity, at)
    elif quantity < item.quantity:
        changed = item.model_copy(update={**kept, "scheduled_quantity": quantity})
        lines = []
    else:
        changed = item.model_copy(update=kept)
        lines = []
    if changed == item:
        return AddonDecision(sub, item, [], sub.version)  # nothing to change or write
    return AddonDecision(_with_item(sub, changed, at), changed, lines, sub.version)


def remove_addon(sub: Subscription, item_id: str, at: datetime) -> AddonDecision:
    """Remove an add-on at the end of the current period (the trial, during one): it counts and is
    not refunded until then, and the next invoice no longer bills it. Removing it again changes
    nothing."""
    at = _utc(at)
    _check_addons_changeable(sub)
    item = _addon_item(sub, item_id)
    if item.cancel_at_period_end:
        return AddonDecision(sub, item, [], sub.version)
    removed = item.model_copy(update={"cancel_at_period_end": True, "scheduled_quantity": None})
    return AddonDecision(_with_item(sub, removed, at), removed, [], sub.version)


def _stored_id_of(sub: Subscription) -> str:
    _require_stored(sub)
    assert sub.id is not None
    return sub.id


# -- cancelling ---------------------------------------------------------------------------------------
def cancel(sub: Subscription, at: datetime, grace: timedelta = DEFAULT_GRACE_PERIOD) -> Subscription:
    """Cancel at the customer's request.

    Active or trialing → ``grace_period`` until ``max(current_period_end, at + grace)``: the paid
    (or free trial) time is kept, and at least ``grace`` to change one's mind. A trial in grace is
    never charged (``end_trial`` ignores it; ``end_grace`` cancels it).
    With nothing paid for the current period (``past_due``, ``incomplete``, or a trial whose first
    charge is outstanding) → ``cancelled`` at once: there is no paid time to keep, and the open
    invoice is the caller's to void.
    """
    at = _utc(at)
    ensure_writable(sub)
    _require_stored(sub)
    if sub.status in ("grace_period", "cancelled"):
        raise AlreadyCancelled(f"The subscription is already {sub.status.replace('_', ' ')}.")
    if sub.status in ("past_due", "incomplete") or sub.trial_over_awaiting_payment:
        return _next(sub, at, status="cancelled", cancelled_at=at, incomplete_expires_at=None)
    _, end = _period(sub)
    return _next(
        sub,
        at,
        status="grace_period",
        previous_status=sub.status,
        cancel_at_period_end=True,
        cancelled_at=at,
        grace_period_ends_at=max(end, at + grace),
    )


def reactivate(sub: Subscription, at: datetime) -> Subscription:
    """Undo a cancellation while in grace: back to the previous status, the cancel fields cleared.
    A trial comes back as a trial: the caller re-arms its end timer (the old one sees another
    version)."""
    at = _utc(at)
    ensure_writable(sub)
    _require_stored(sub)
    if sub.status == "cancelled" and sub.grace_period_ends_at is not None:
        raise GracePeriodOver()
    if sub.status != "grace_period" or sub.grace_period_ends_at is None or sub.previous_status is None:
        raise NotInGracePeriod()
    if at >= sub.grace_period_ends_at:
        raise GracePeriodOver()
    return _next(
        sub,
        at,
        status=sub.previous_status,
        previous_status=None,
        cancel_at_period_end=False,
        cancelled_at=None,
        grace_period_ends_at=None,
    )


def end_grace(sub: Subscription, at: datetime) -> Subscription | None:
    """Grace is over: → ``cancelled`` (the organization is on Free; ``grace_period_ends_at`` stays
    so a late reactivation is told ``grace_period_over``). None when reactivated meanwhile, already
    ended, or fired early."""
    at = _utc(at)
    if sub.status != "grace_period" or sub.grace_period_ends_at is None or at < sub.grace_period_ends_at:
        return None
    return _next(
        sub, at, status="cancelled", previous_status=None, scheduled_change=None, scheduled_terms=None
    )


# -- renewal and dunning ------------------------------------------------------------------------------
def renew(sub: Subscription, at: datetime) -> Renewal | None:
    """Move an active subscription whose period has ended into the next one,
    ``[current_period_end, add_cycle(current_period_end))``, applying a scheduled change due by then,
    and bill that period (a line for the plan in force, one per add-on kept). The status stays
    ``active`` until the caller reports the charge (``renewal_payment_failed`` on a failure).

    One period per call: a caller far behind (a test clock jumping months) calls again while it
    returns a renewal. None when not due, not active, or cancelling at period end.
    """
    at = _utc(at)
    if sub.id is None or sub.status != "active" or sub.cancel_at_period_end:
        return None
    _, end = _period(sub)
    if at < end:
        return None
    changes: dict[str, Any] = {}
    plan_name, cycle, price = sub.plan_name, sub.billing_cycle, sub.price
    terms = sub.scheduled_terms
    if sub.scheduled_change is not None and terms is not None and sub.scheduled_change.effective_at <= end:
        changes = _terms_fields(terms) | {"scheduled_change": None, "scheduled_terms": None}
        plan_name, cycle, price = terms.plan_name, terms.billing_cycle, terms.price
    new_end = add_cycle(end, cycle, sub.billing_anchor_day or end.day)
    addons = next_period_addons(sub.addons)
    renewed = _next(sub, at, current_period_start=end, current_period_end=new_end, addons=addons, **changes)
    line = _line(_label(plan_name, cycle), price, end, new_end)
    lines = [line, *addon_lines(addons, cycle, end, new_end)]
    return Renewal(subscription=renewed, lines=lines, billing_reason="subscription_cycle")


def renewal_payment_failed(sub: Subscription, at: datetime) -> Subscription | None:
    """The renewal charge failed: ``active`` → ``past_due`` (dunning retries). None otherwise."""
    if sub.status != "active":
        return None
    return _next(sub, _utc(at), status="past_due")


def payment_recovered(sub: Subscription, at: datetime) -> Subscription | None:
    """A retry (or the customer) paid the overdue invoice: ``past_due`` → ``active``. None otherwise."""
    if sub.status != "past_due":
        return None
    return _next(sub, _utc(at), status="active")


def retries_exhausted(sub: Subscription, at: datetime) -> Subscription | None:
    """The last retry failed: ``past_due`` → ``cancelled`` (Free). None otherwise."""
    at = _utc(at)
    if sub.status != "past_due":
        return None
    return _next(sub, at, status="cancelled", cancelled_at=at)


# -- operators ----------------------------------------------------------------------------------------
def suspend(sub: Subscription, reason: str, at: datetime) -> Subscription:
    """Operator suspension: writes refused, reads allowed. Works on the Free stand-in too (the
    caller then stores it). Timers find nothing to do while suspended; after ``unsuspend`` the
    renewal sweep picks up an overdue renewal, and the caller re-arms trial or grace timers."""
    if sub.status == "suspended":
        raise AlreadySuspended()
    return _next(
        sub, _utc(at), status="suspended", status_before_suspension=sub.status, suspension_reason=reason
    )


def unsuspend(sub: Subscription, at: datetime) -> Subscription:
    """Lift a suspension: back to the status it interrupted."""
    if sub.status != "suspended" or sub.status_before_suspension is None:
        raise NotSuspended()
    return _next(
        sub,
        _utc(at),
        status=sub.status_before_suspension,
        status_before_suspension=None,
        suspension_reason=None,
    )


def _paid_through_period(sub: Subscription, at: datetime) -> bool:
    """Whether the current period was paid for and still has unused time at ``at``."""
    paid = sub.status == "active" or (sub.status == "grace_period" and sub.previous_status == "active")
    if not paid or sub.current_period_start is None or sub.current_period_end is None:
        return False
    return sub.current_period_start <= at < sub.current_period_end


def activate_enterprise(
    organization_id: str,
    existing: Subscription | None,
    *,
    price_monthly: int,
    currency: Currency,
    cycle: BillingCycle,
    limits: Limits,
    features: Features,
    payment_terms_days: int,
    at: datetime,
) -> StartDecision:
    """An operator puts the organization on Enterprise custom terms, active from ``at``.

    The per-cycle price is ``price_monthly`` (times 12 for annual: the operator sets the monthly
    equivalent, no catalog discount applies). The first period starts at ``at`` and is invoiced at
    once with ``payment_terms_days`` to pay (the caller sets the due date). A live subscription is
    converted in place (same id, payment method, creation time) with its unused paid time credited;
    a cancelled one (or none) gives way to a new subscription.
    """
    at = _utc(at)
    if price_monthly < 0:
        raise InvalidField("price_monthly", "The price cannot be negative.")
    if payment_terms_days < 0:
        raise InvalidField("payment_terms_days", "Payment terms cannot be negative.")
    if existing is not None:
        if existing.organization_id != organization_id:
            raise ValueError("the existing subscription belongs to another organization")
        ensure_writable(existing)
    keep = existing if existing is not None and _is_live(existing, at) else None
    price = price_monthly if cycle == "monthly" else price_monthly * 12
    end = add_cycle(at, cycle, at.day)
    lines: list[InvoiceLine] = []
    if keep is not None and _paid_through_period(keep, at):
        start, old_end = _period(keep)
        credit = prorate(keep.price, 0, start, old_end, at).credit
        old_label = _label(keep.plan_name, keep.billing_cycle)
        lines.append(_line(f"Unused time on {old_label}", credit, at, old_end, proration=True))
    lines.append(_line(_label(ENTERPRISE_PLAN_NAME, cycle), price, at, end))
    subscription = Subscription(
        id=keep.id if keep else new_id("sub"),
        organization_id=organization_id,
        plan=ENTERPRISE_PLAN,
        plan_name=ENTERPRISE_PLAN_NAME,
        status="active",
        billing_cycle=cycle,
        current_period_start=at,
        current_period_end=end,
        payment_method_id=keep.payment_method_id if keep else None,
        payment_gateway=keep.payment_gateway if keep else None,
        gateway_customer_id=keep.gateway_customer_id if keep else None,
        gateway_subscription_id=keep.gateway_subscription_id if keep else None,
        limits=limits,
        features=features,
        addons=keep.addons if keep else [],
        version=keep.version + 1 if keep else 1,
        created_at=keep.created_at if keep else at,
        updated_at=at,
        currency=currency,
        price=price,
        custom_terms=True,
        billing_anchor_day=at.day,
        payment_terms_days=payment_terms_days,
    )
    reason: BillingReason = "subscription_update" if keep else "subscription_create"
    return StartDecision(subscription=subscription, first_invoice_lines=lines, billing_reason=reason)
