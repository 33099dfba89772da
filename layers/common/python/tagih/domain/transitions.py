"""The subscription lifecycle as pure transitions (DESIGN.md "Subscription lifecycle"):
subscribing, trials, cancelling and reactivating, grace, renewal and dunning outcomes, suspension
and Enterprise terms.

The rules ``domain.subscriptions`` states hold here: every function is given the moment it acts
at and returns what should be written and invoiced; requests get a domain error when a
transition is not allowed, timers and notifications get ``None`` when a firing is early,
duplicate or stale."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tagih.domain.addons import addon_lines, next_period_addons
from tagih.domain.catalog import Features, Limits, Plan
from tagih.domain.errors import (
    AlreadyCancelled,
    AlreadySubscribed,
    AlreadySuspended,
    GracePeriodOver,
    InvalidField,
    NotInGracePeriod,
    NotSuspended,
    PaymentMethodRequired,
)
from tagih.domain.gateway_names import GatewayName
from tagih.domain.invoices import BillingReason, InvoiceLine
from tagih.domain.money import Currency
from tagih.domain.proration import prorate
from tagih.domain.subscriptions import (
    DEFAULT_GRACE_PERIOD,
    ENTERPRISE_PLAN,
    ENTERPRISE_PLAN_NAME,
    INCOMPLETE_EXPIRY,
    BillingCycle,
    Renewal,
    StartDecision,
    Subscription,
    add_cycle,
    as_utc,
    check_target_plan,
    current_period,
    ensure_writable,
    is_live,
    next_version,
    period_line,
    plan_label,
    plan_price,
    require_stored,
    terms_fields,
)
from tagih.ids import new_id


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
    subscription_id: str | None = None,
) -> StartDecision:
    """A new subscription to ``plan``.

    With a trial (the plan has ``trial_days`` and the organization never trialled): ``trialing``,
    the current period is the trial itself and nothing is invoiced. Otherwise ``incomplete`` with
    the first period's line: the caller charges it, then calls ``activate_after_first_payment``; an
    asynchronous payment leaves it ``incomplete`` until paid or ``expire_incomplete`` 23 h later.
    ``trial_length`` overrides ``plan.trial_days`` (the ``TRIAL_DURATION`` configuration, seconds in
    end-to-end tests). ``existing`` is the organization's stored subscription, if any: a live one
    refuses (409 already_subscribed), a cancelled one is replaced by this one (a new id, or
    ``subscription_id`` when the request's key names it).
    """
    now = as_utc(now)
    if existing is not None:
        ensure_writable(existing)
        if is_live(existing, now):
            hint = " Reactivate it instead." if existing.status == "grace_period" else ""
            raise AlreadySubscribed(
                f"The organization already has a {existing.plan_name} subscription ({existing.status}).{hint}"
            )
    check_target_plan(plan, currency)
    price = plan_price(plan, cycle)
    common: dict[str, Any] = {
        "id": subscription_id or new_id("sub"),
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
        subscription=incomplete,
        first_invoice_lines=[period_line(plan_label(plan.name, cycle), price, now, end)],
    )


def activate_after_first_payment(sub: Subscription, at: datetime) -> Subscription | None:
    """The first invoice is paid: ``incomplete`` → ``active``. A payment that lands after the expiry
    moment but before the expiry timer ran still activates (the money arrived). None when the
    subscription is no longer incomplete (a duplicate notification, or already expired)."""
    if sub.status != "incomplete":
        return None
    return next_version(sub, as_utc(at), status="active", incomplete_expires_at=None)


def expire_incomplete(sub: Subscription, at: datetime) -> Subscription | None:
    """23 h without the first payment: ``incomplete`` → ``cancelled``. None when paid meanwhile,
    already expired, or fired before ``incomplete_expires_at``."""
    at = as_utc(at)
    if sub.status != "incomplete" or sub.incomplete_expires_at is None or at < sub.incomplete_expires_at:
        return None
    return next_version(sub, at, status="cancelled", cancelled_at=at)


# -- trials -------------------------------------------------------------------------------------------
def end_trial(sub: Subscription, at: datetime) -> Renewal | None:
    """The trial is over: the first paid period starts at ``trial_ends_at`` (not at the firing time,
    so a late timer charges the same period) and its line is to be charged. The status stays
    ``trialing`` until the caller reports the charge (``trial_converted`` / ``trial_payment_failed``).
    None when fired early, when no longer trialing (cancelled into grace: a cancelled trial is never
    charged; suspended), or when the trial was already ended (a duplicate firing)."""
    at = as_utc(at)
    if sub.status != "trialing" or sub.trial_ends_at is None or at < sub.trial_ends_at:
        return None
    if sub.trial_over_awaiting_payment:
        return None
    first = sub.trial_ends_at
    end = add_cycle(first, sub.billing_cycle, first.day)
    addons = next_period_addons(sub.addons)
    ended = next_version(
        sub,
        at,
        current_period_start=first,
        current_period_end=end,
        billing_anchor_day=first.day,
        addons=addons,
    )
    line = period_line(plan_label(sub.plan_name, sub.billing_cycle), sub.price, first, end)
    lines = [line, *addon_lines(addons, sub.billing_cycle, first, end)]
    return Renewal(subscription=ended, lines=lines, billing_reason="subscription_create")


def trial_converted(sub: Subscription, at: datetime) -> Subscription | None:
    """The first charge after the trial succeeded: → ``active``. None unless ``end_trial`` ran and
    its charge is still outstanding."""
    if not sub.trial_over_awaiting_payment:
        return None
    return next_version(sub, as_utc(at), status="active")


def trial_payment_failed(sub: Subscription, at: datetime) -> Subscription | None:
    """The first charge after the trial failed: → ``past_due`` (dunning takes over). None unless
    ``end_trial`` ran and its charge is still outstanding."""
    if not sub.trial_over_awaiting_payment:
        return None
    return next_version(sub, as_utc(at), status="past_due")


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
    at = as_utc(at)
    ensure_writable(sub)
    require_stored(sub)
    if sub.status in ("grace_period", "cancelled"):
        raise AlreadyCancelled(f"The subscription is already {sub.status.replace('_', ' ')}.")
    if sub.status in ("past_due", "incomplete") or sub.trial_over_awaiting_payment:
        return next_version(sub, at, status="cancelled", cancelled_at=at, incomplete_expires_at=None)
    _, end = current_period(sub)
    return next_version(
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
    at = as_utc(at)
    ensure_writable(sub)
    require_stored(sub)
    if sub.status == "cancelled" and sub.grace_period_ends_at is not None:
        raise GracePeriodOver()
    if sub.status != "grace_period" or sub.grace_period_ends_at is None or sub.previous_status is None:
        raise NotInGracePeriod()
    if at >= sub.grace_period_ends_at:
        raise GracePeriodOver()
    return next_version(
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
    at = as_utc(at)
    if sub.status != "grace_period" or sub.grace_period_ends_at is None or at < sub.grace_period_ends_at:
        return None
    return next_version(
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
    at = as_utc(at)
    if sub.id is None or sub.status != "active" or sub.cancel_at_period_end:
        return None
    _, end = current_period(sub)
    if at < end:
        return None
    changes: dict[str, Any] = {}
    plan_name, cycle, price = sub.plan_name, sub.billing_cycle, sub.price
    terms = sub.scheduled_terms
    if sub.scheduled_change is not None and terms is not None and sub.scheduled_change.effective_at <= end:
        changes = terms_fields(terms) | {"scheduled_change": None, "scheduled_terms": None}
        plan_name, cycle, price = terms.plan_name, terms.billing_cycle, terms.price
    new_end = add_cycle(end, cycle, sub.billing_anchor_day or end.day)
    addons = next_period_addons(sub.addons)
    renewed = next_version(
        sub, at, current_period_start=end, current_period_end=new_end, addons=addons, **changes
    )
    line = period_line(plan_label(plan_name, cycle), price, end, new_end)
    lines = [line, *addon_lines(addons, cycle, end, new_end)]
    return Renewal(subscription=renewed, lines=lines, billing_reason="subscription_cycle")


def renewal_payment_failed(sub: Subscription, at: datetime) -> Subscription | None:
    """The renewal charge failed: ``active`` → ``past_due`` (dunning retries). None otherwise."""
    if sub.status != "active":
        return None
    return next_version(sub, as_utc(at), status="past_due")


def payment_recovered(sub: Subscription, at: datetime) -> Subscription | None:
    """A retry (or the customer) paid the overdue invoice: ``past_due`` → ``active``. None otherwise."""
    if sub.status != "past_due":
        return None
    return next_version(sub, as_utc(at), status="active")


def retries_exhausted(sub: Subscription, at: datetime) -> Subscription | None:
    """The last retry failed: ``past_due`` → ``cancelled`` (Free). None otherwise."""
    at = as_utc(at)
    if sub.status != "past_due":
        return None
    return next_version(sub, at, status="cancelled", cancelled_at=at)


# -- operators ----------------------------------------------------------------------------------------
def suspend(sub: Subscription, reason: str, at: datetime) -> Subscription:
    """Operator suspension: writes refused, reads allowed. Works on the Free stand-in too (the
    caller then stores it). Timers find nothing to do while suspended; after ``unsuspend`` the
    renewal sweep picks up an overdue renewal, and the caller re-arms trial or grace timers."""
    if sub.status == "suspended":
        raise AlreadySuspended()
    return next_version(
        sub, as_utc(at), status="suspended", status_before_suspension=sub.status, suspension_reason=reason
    )


def unsuspend(sub: Subscription, at: datetime) -> Subscription:
    """Lift a suspension: back to the status it interrupted."""
    if sub.status != "suspended" or sub.status_before_suspension is None:
        raise NotSuspended()
    return next_version(
        sub,
        as_utc(at),
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
    at = as_utc(at)
    if price_monthly < 0:
        raise InvalidField("price_monthly", "The price cannot be negative.")
    if payment_terms_days < 0:
        raise InvalidField("payment_terms_days", "Payment terms cannot be negative.")
    if existing is not None:
        if existing.organization_id != organization_id:
            raise ValueError("the existing subscription belongs to another organization")
        ensure_writable(existing)
    keep = existing if existing is not None and is_live(existing, at) else None
    price = price_monthly if cycle == "monthly" else price_monthly * 12
    end = add_cycle(at, cycle, at.day)
    lines: list[InvoiceLine] = []
    if keep is not None and _paid_through_period(keep, at):
        start, old_end = current_period(keep)
        credit = prorate(keep.price, 0, start, old_end, at).credit
        old_label = plan_label(keep.plan_name, keep.billing_cycle)
        lines.append(period_line(f"Unused time on {old_label}", credit, at, old_end, proration=True))
    lines.append(period_line(plan_label(ENTERPRISE_PLAN_NAME, cycle), price, at, end))
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
