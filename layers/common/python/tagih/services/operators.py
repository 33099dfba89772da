"""Operator services: Enterprise terms, suspending and unsuspending an organization.

They act on the organization they are given (the path's), not on the caller's: the operator
routes check the ``billing:operator`` scope before any of this runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from tagih.domain.catalog import Features, Limits
from tagih.domain.errors import CurrencyMismatch, NotSuspended
from tagih.domain.invoices import Invoice, invoice_data
from tagih.domain.money import Currency
from tagih.domain.plan_slugs import FREE_PLAN
from tagih.domain.subscriptions import BillingCycle, Subscription, current_period, free_subscription
from tagih.domain.transitions import activate_enterprise, suspend, unsuspend
from tagih.events.models import EventType
from tagih.ids import new_id
from tagih.services.drafts import subscription_draft

if TYPE_CHECKING:
    from tagih.services.context import Billing, Event


class EnterpriseActivated(NamedTuple):
    subscription: Subscription
    invoice: Invoice  # the first period's invoice: open, due after the payment terms


def activate_enterprise_terms(
    billing: Billing,
    organization_id: str,
    *,
    price_monthly: int,
    currency: Currency,
    cycle: BillingCycle,
    limits: Limits,
    features: Features,
    payment_terms_days: int,
    now: datetime,
) -> EnterpriseActivated:
    """Put the organization on Enterprise custom terms, active from ``now`` (``activate_enterprise``).

    Enterprise pays by invoice: the first period (less the unused paid time of a live subscription
    it converts) is invoiced at once, ``open`` and due ``payment_terms_days`` from now, and NOT
    charged to any card. The subscription and the draft are written in one transaction (a live
    subscription at the version read, else replacing a cancelled one or none), then the invoice is
    numbered. A converted subscription must already be billed in ``currency`` (422
    ``currency_mismatch``): its credit is in that currency. A suspended organization is refused
    (403 ``organization_suspended``): unsuspend it first.
    """
    existing = billing.subscriptions.current(organization_id)
    decision = activate_enterprise(
        organization_id,
        existing,
        price_monthly=price_monthly,
        currency=currency,
        cycle=cycle,
        limits=limits,
        features=features,
        payment_terms_days=payment_terms_days,
        at=now,
    )
    subscription = decision.subscription
    converted = existing is not None and existing.id == subscription.id
    if existing is not None and converted and existing.currency != currency:
        raise CurrencyMismatch(
            f"The subscription is billed in {existing.currency}; Enterprise terms in {currency} "
            "would credit its unused time in another currency."
        )
    draft = subscription_draft(
        billing,
        subscription,
        decision.billing_reason,
        decision.first_invoice_lines or [],
        period=current_period(subscription),
        due_date=now + timedelta(days=payment_terms_days),
        now=now,
    )
    if existing is not None and converted:
        billing.subscriptions.save(subscription, existing.version, invoices=[(draft, None)])
    else:
        billing.subscriptions.create(subscription, replacing=existing, invoices=[draft])
    invoice = billing.invoices.finalize(draft, now)  # nothing due (a price of 0): paid at once
    kind: EventType = "billing.subscription.updated" if converted else "billing.subscription.created"
    events: list[Event] = [
        (kind, subscription.public_data()),
        ("billing.invoice.created", invoice_data(invoice)),
    ]
    if invoice.status == "paid":
        events.append(("billing.invoice.paid", invoice_data(invoice)))
    billing.publish(organization_id, now, *events)
    return EnterpriseActivated(subscription, invoice)


def _is_free_stand_in(sub: Subscription) -> bool:
    """A suspended organization on Free is stored as the Free stand-in with an id: no period, no price."""
    return sub.plan == FREE_PLAN and sub.price == 0 and sub.current_period_start is None


def suspend_organization(billing: Billing, organization_id: str, reason: str, now: datetime) -> Subscription:
    """Suspend: reads allowed, writes refused (403 ``organization_suspended``). An organization on
    Free (nothing stored, or a cancelled subscription) gets the Free stand-in stored, suspended, so
    that subscribing is refused too; ``unsuspend_organization`` removes it again. 409
    ``already_suspended`` when suspended."""
    existing = billing.subscriptions.current(organization_id)
    if existing is not None and existing.status != "cancelled":
        suspended = suspend(existing, reason, now)
        billing.subscriptions.save(suspended, existing.version)
    else:
        free = free_subscription(organization_id, billing.catalog.plan(FREE_PLAN), now)
        suspended = suspend(free.model_copy(update={"id": new_id("sub")}), reason, now)
        billing.subscriptions.create(suspended, replacing=existing)
    billing.publish(organization_id, now, ("billing.subscription.updated", suspended.public_data()))
    return suspended


def unsuspend_organization(billing: Billing, organization_id: str, now: datetime) -> Subscription:
    """Lift a suspension: back to the status it interrupted (an organization on Free: back to Free,
    nothing stored). 409 ``not_suspended`` otherwise. Timers that found nothing to do while
    suspended are not re-armed here: the renewal sweep picks an overdue renewal up by itself."""
    existing = billing.subscriptions.current(organization_id)
    if existing is None:
        raise NotSuspended()
    restored = unsuspend(existing, now)
    if _is_free_stand_in(restored):
        billing.subscriptions.delete(existing)
        restored = free_subscription(organization_id, billing.catalog.plan(FREE_PLAN), now)
    else:
        billing.subscriptions.save(restored, existing.version)
    billing.publish(organization_id, now, ("billing.subscription.updated", restored.public_data()))
    return restored
