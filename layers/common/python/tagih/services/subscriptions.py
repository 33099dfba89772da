"""Subscribing and cancelling: the services behind the subscription routes, over the pure domain.

``domain.transitions`` decides what a subscription becomes, ``domain.invoices`` what is owed,
``services.charging`` charges once per invoice attempt; this module puts them together with the
stores, the gateways and the event publisher, all passed in (``Billing``), so a request, a timer
and a gateway notification run the same code.

The first invoice of a subscription is charged while it is still a draft: a declined card removes
the subscription and its draft in one transaction ("402 and nothing kept", API.md), and the draft
never took an invoice number, so numbers stay gapless. Only an invoice that was paid or is awaiting
an asynchronous payment is finalized and numbered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from tagih.domain import invoices as inv
from tagih.domain.catalog import Plan
from tagih.domain.errors import BillingError, ChargeInDoubt, PlanNotFound
from tagih.domain.gateway_names import FIRST_ATTEMPT
from tagih.domain.invoices import Invoice, invoice_data, rewritten
from tagih.domain.plan_slugs import FREE_PLAN
from tagih.domain.subscriptions import BillingCycle, Subscription, current_or_free, current_period
from tagih.domain.transitions import activate_after_first_payment, cancel, reactivate, start_subscription
from tagih.events.models import EventType
from tagih.ids import derived_id
from tagih.services.charging import attempt_to_charge, charge_invoice, paying_method, recorded_attempts
from tagih.services.drafts import subscription_draft

if TYPE_CHECKING:
    from tagih.domain.payments import Payment
    from tagih.services.context import Billing, Event


@dataclass(frozen=True)
class Subscribed:
    subscription: Subscription
    invoice: Invoice | None  # the first invoice (None for a trial)


def current_subscription(billing: Billing, organization_id: str, now: datetime) -> Subscription:
    """The organization's subscription, or Free when it has none (API.md)."""
    stored = billing.subscriptions.current(organization_id)
    return current_or_free(organization_id, stored, partial(billing.catalog.plan, FREE_PLAN), now)


def get_subscription(billing: Billing, organization_id: str, subscription_id: str) -> Subscription:
    return billing.subscriptions.get(organization_id, subscription_id)


# -- subscribing --------------------------------------------------------------------------------------
def default_plan(billing: Billing) -> Plan:
    """API.md: the cheapest paid active plan that can be subscribed to."""
    paid = [
        p
        for p in billing.catalog.plans()
        if p.is_active and not p.is_custom and (p.base_price_monthly or 0) > 0
    ]
    if not paid:
        raise PlanNotFound("The catalog has no paid plan to subscribe to.")
    return min(paid, key=lambda p: (p.base_price_monthly or 0, p.sort_order))


def subscribe(
    billing: Billing,
    *,
    organization_id: str,
    plan_slug: str | None,
    cycle: BillingCycle,
    payment_method_id: str | None,
    now: datetime,
    request_key: str | None = None,
) -> Subscribed:
    """``POST /billing/subscriptions``. With ``request_key`` (the request's ``Idempotency-Key``)
    the subscription's id derives from the organization, the key and the request, so a retry after
    a crash finds the subscription its first try wrote and carries its first charge on
    (``_resume_first_charge``) instead of answering 409 ``already_subscribed``."""
    plan = billing.catalog.plan(plan_slug) if plan_slug else default_plan(billing)
    existing = billing.subscriptions.current(organization_id)
    subscription_id = (
        derived_id(
            "sub", organization_id, "subscribe", request_key, plan.slug, cycle, payment_method_id or ""
        )
        if request_key is not None
        else None
    )
    if existing is not None and subscription_id is not None and existing.id == subscription_id:
        return _resume_first_charge(billing, existing, now)
    method = paying_method(billing, organization_id, named=payment_method_id)
    trial_available = not billing.subscriptions.has_trialled(organization_id)
    decision = start_subscription(
        organization_id,
        plan,
        cycle,
        now,
        trial_available=trial_available,
        payment_method_id=method.id if method else None,
        gateway=method.gateway if method else None,
        currency=plan.currency,
        existing=existing,
        trial_length=billing.trial_length,
        subscription_id=subscription_id,
    )
    subscription = decision.subscription
    replacing = existing if existing is not None and existing.id is not None else None
    if decision.first_invoice_lines is None:
        billing.timers.start_trial_timer(subscription)  # armed before the commit: see timers.port
        billing.subscriptions.create(subscription, replacing=replacing, trial_started=True)
        billing.publish(organization_id, now, ("billing.subscription.created", subscription.public_data()))
        return Subscribed(subscription, None)

    assert method is not None  # start_subscription refuses a paid start without one
    draft = subscription_draft(
        billing,
        subscription,
        decision.billing_reason,
        decision.first_invoice_lines,
        period=current_period(subscription),
        due_date=now,
        now=now,
    )
    billing.subscriptions.create(subscription, replacing=replacing, invoices=[draft])
    # the wallet's models load on the charging path only (cold start)
    from tagih.services.wallet import pay_from_wallet_first, return_wallet_credit

    try:
        draft = pay_from_wallet_first(billing, draft, now)
        payment = charge_invoice(billing, draft, method, FIRST_ATTEMPT, now) if draft.amount_due else None
    except ChargeInDoubt:
        raise  # the gateway may have the money: the subscription and its draft stay for the retry
    except BillingError:
        # Nothing is kept: what the wallet paid goes back to it, then the draft goes with the subscription.
        billing.subscriptions.delete(subscription, invoices=[return_wallet_credit(billing, draft, now)])
        raise
    return _first_invoice_charged(billing, subscription, draft, payment, now)


def _resume_first_charge(billing: Billing, subscription: Subscription, now: datetime) -> Subscribed:
    """The same request's earlier try wrote ``subscription`` and died (or is still running): carry
    its first invoice on from where it stopped. An attempt already claimed or charged is asked again
    under its reference (``attempt_to_charge``), never charged a second time."""
    invoice = next(
        (
            found
            for found in billing.invoices.list_for_organization(subscription.organization_id)
            if found.subscription_id == subscription.id and found.billing_reason == "subscription_create"
        ),
        None,
    )
    if subscription.status != "incomplete" or invoice is None or invoice.status not in _UNFINISHED:
        return Subscribed(subscription, invoice)
    method = paying_method(
        billing,
        subscription.organization_id,
        subscription=subscription,
        required="The first invoice needs a payment method.",
    )
    from tagih.services.wallet import pay_from_wallet_first, return_wallet_credit  # the charging path

    try:
        if invoice.status == "draft" and not recorded_attempts(billing.payments, invoice):
            invoice = pay_from_wallet_first(billing, invoice, now)  # nothing claimed yet: the wallet first
        plan = attempt_to_charge(billing, invoice, method)
        payment = plan.settled
        if payment is None and invoice.amount_due:
            payment = charge_invoice(billing, invoice, method, plan.attempt, now)
    except ChargeInDoubt:
        raise
    except BillingError:
        if invoice.status == "draft":  # as on the first try: a decline keeps nothing
            billing.subscriptions.delete(subscription, invoices=[return_wallet_credit(billing, invoice, now)])
        raise
    return _first_invoice_charged(billing, subscription, invoice, payment, now)


_UNFINISHED = frozenset({"draft", "open"})


def _first_invoice_charged(
    billing: Billing, subscription: Subscription, draft: Invoice, payment: Payment | None, now: datetime
) -> Subscribed:
    # Paid at once when the wallet covered it; numbered already when an earlier try died after this.
    finalized = draft if draft.number is not None else billing.invoices.finalize(draft, now)
    events: list[Event] = []
    if payment is None or payment.status == "succeeded":
        # Covered by the wallet, it was paid as it was numbered: written again with the subscription.
        paid = inv.mark_paid(finalized, payment.amount, now) if payment else rewritten(finalized, now)
        active = activate_after_first_payment(subscription, now) or subscription
        billing.subscriptions.save(active, subscription.version, invoices=[(paid, finalized.version)])
        events += [
            ("billing.subscription.created", active.public_data()),
            ("billing.invoice.created", invoice_data(finalized)),
            ("billing.invoice.paid", invoice_data(paid)),
        ]
        result = Subscribed(active, paid)
    else:  # pending: a virtual account or e-wallet the payer completes later
        billing.timers.start_incomplete_timer(subscription)
        from tagih.domain.payments import awaiting_payment  # the charging path only (cold start)

        awaiting = awaiting_payment(finalized, payment, now)
        billing.invoices.replace(awaiting, finalized.version)
        events += [
            ("billing.subscription.created", subscription.public_data()),
            ("billing.invoice.created", invoice_data(awaiting)),
        ]
        result = Subscribed(subscription, awaiting)
    billing.publish(subscription.organization_id, now, *events)
    return result


# -- cancelling -------------------------------------------------------------------------------------
def cancel_subscription(
    billing: Billing, organization_id: str, subscription_id: str, now: datetime
) -> Subscription:
    current = billing.subscriptions.get(organization_id, subscription_id)
    cancelled = cancel(current, now, billing.grace_period)
    if cancelled.status == "grace_period":
        billing.timers.start_grace_timer(cancelled)
    billing.subscriptions.save(cancelled, current.version)
    kind: EventType = (
        "billing.subscription.cancelled"
        if cancelled.status == "cancelled"
        else "billing.subscription.updated"
    )
    billing.publish(organization_id, now, (kind, cancelled.public_data()))
    return cancelled


def reactivate_subscription(
    billing: Billing, organization_id: str, subscription_id: str, now: datetime
) -> Subscription:
    current = billing.subscriptions.get(organization_id, subscription_id)
    reactivated = reactivate(current, now)
    ends = reactivated.trial_ends_at
    if reactivated.status == "trialing" and ends is not None and ends <= now:
        # The trial's own timer fired while it was cancelled and stopped; a new one ends it now.
        billing.timers.start_trial_timer(reactivated)
    billing.subscriptions.save(reactivated, current.version)
    billing.timers.stop_grace_timer(current)
    billing.publish(organization_id, now, ("billing.subscription.updated", reactivated.public_data()))
    return reactivated
