"""Add-ons on a subscription: the services behind ``/billing/subscriptions/{id}/addons``.

The decisions are pure (``domain.addons``: ``attach_addon``, ``change_addon_quantity``,
``remove_addon``); this module writes them. Attaching an add-on, or raising its quantity, mid-period
is invoiced and charged like an upgrade, through the very machinery of plan changes
(``paid_changes.charge_subscription_change``): one charge per version of the subscription however many
requests race, nothing changed when declined, and an asynchronous payment applies the change the
invoice records (``AddonChangeOrder``) when it settles. Everything else (a trial, fewer units,
a removal at the period end) is written at once with nothing invoiced.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from aws_lambda_powertools import Logger

from tagih.domain import addons as rules
from tagih.domain import invoices as inv
from tagih.domain.addons import AddonDecision
from tagih.domain.catalog import Addon
from tagih.domain.errors import BillingError
from tagih.domain.invoices import Invoice, invoice_data
from tagih.domain.subscriptions import Subscription, SubscriptionAddon
from tagih.events.models import EventType
from tagih.ids import derived_id
from tagih.services.context import Billing
from tagih.services.drafts import change_draft
from tagih.services.paid_changes import Decided, SubscriptionChange, change_moment, charge_subscription_change

logger = Logger()
ADDON_ID_PREFIX = "addon_"


class AddonChanged(NamedTuple):
    subscription: Subscription
    item: SubscriptionAddon
    # The prorated invoice: paid; ``open`` with a ``payment_url`` while an asynchronous payment is
    # awaited (the add-on is then not attached yet); ``None`` when nothing is invoiced now.
    invoice: Invoice | None


def list_addons(billing: Billing, organization_id: str, subscription_id: str) -> list[SubscriptionAddon]:
    return list(billing.subscriptions.get(organization_id, subscription_id).addons)


def catalog_slug(addon_id: str | None, slug: str | None) -> str:
    """The catalog slug from ``addon_id`` (``addon_<slug>``) or ``addon`` (the slug itself)."""
    if slug is not None:
        return slug
    if addon_id is None:
        raise ValueError("addon_id or addon is required")
    return addon_id.removeprefix(ADDON_ID_PREFIX)


def attach_addon(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    *,
    addon_slug: str,
    quantity: int,
    now: datetime,
) -> AddonChanged:
    current = billing.subscriptions.get(organization_id, subscription_id)
    addon = billing.catalog.addon(addon_slug)
    now = change_moment(billing, current, now)
    # The same for every request attaching it to this version: a retry names the item its first try did.
    item_id = derived_id("si", organization_id, subscription_id, str(current.version), addon.slug)
    decision = rules.attach_addon(current, addon, quantity, now, item_id=item_id)
    order = inv.AddonChangeOrder(
        action="attach", addon=addon.slug, item_id=item_id, quantity=quantity, requested_at=now
    )
    return _carry_out(
        billing,
        current,
        decision,
        order=order,
        redecide=_attach_decider(addon, quantity, item_id, now),
        now=now,
    )


def change_addon_quantity(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    item_id: str,
    *,
    quantity: int,
    now: datetime,
) -> AddonChanged:
    current = billing.subscriptions.get(organization_id, subscription_id)
    now = change_moment(billing, current, now)
    decision = rules.change_addon_quantity(current, item_id, quantity, now)
    order = inv.AddonChangeOrder(
        action="quantity", addon=decision.item.slug, item_id=item_id, quantity=quantity, requested_at=now
    )
    return _carry_out(
        billing,
        current,
        decision,
        order=order,
        redecide=_quantity_decider(item_id, quantity, now),
        now=now,
    )


def remove_addon(
    billing: Billing, organization_id: str, subscription_id: str, item_id: str, *, now: datetime
) -> AddonChanged:
    current = billing.subscriptions.get(organization_id, subscription_id)
    decision = rules.remove_addon(current, item_id, now)
    return _carry_out(billing, current, decision, order=None, redecide=None, now=now)


def _carry_out(
    billing: Billing,
    current: Subscription,
    decision: AddonDecision,
    *,
    order: inv.AddonChangeOrder | None,
    redecide: Callable[[Subscription], Decided | None] | None,
    now: datetime,
) -> AddonChanged:
    draft = change_draft(billing, current, decision.lines, now, addon_change=order)
    if draft is not None and draft.amount_due > 0 and redecide is not None:
        change = SubscriptionChange(
            billing, current, now, Decided(decision.lines, decision.subscription), redecide=redecide
        )
        changed, invoice = charge_subscription_change(change, draft)
        item = _item_of(changed, decision.item)
        return AddonChanged(changed, item, invoice)
    if decision.subscription is current:  # nothing to change
        return AddonChanged(current, decision.item, None)
    org = current.organization_id
    events: list[tuple[EventType, dict[str, Any]]] = [
        ("billing.subscription.updated", decision.subscription.public_data())
    ]
    if draft is None:
        billing.subscriptions.save(decision.subscription, current.version)
        billing.publish(org, now, *events)
        return AddonChanged(decision.subscription, decision.item, None)
    # Lines netting to nothing due: the record of the change, paid at once when numbered.
    billing.subscriptions.save(decision.subscription, current.version, invoices=[(draft, None)])
    finalized = billing.invoices.finalize(draft, now)
    events.append(("billing.invoice.created", invoice_data(finalized)))
    if finalized.status == "paid":
        events.append(("billing.invoice.paid", invoice_data(finalized)))
    billing.publish(org, now, *events)
    return AddonChanged(decision.subscription, decision.item, finalized)


def _item_of(sub: Subscription, wanted: SubscriptionAddon) -> SubscriptionAddon:
    """The item as ``sub`` holds it; the decided one while a payment is awaited (not attached yet)."""
    return next((item for item in sub.addons if item.id == wanted.id), wanted)


def _attach_decider(
    addon: Addon, quantity: int, item_id: str, at: datetime
) -> Callable[[Subscription], Decided | None]:
    def decide(sub: Subscription) -> Decided:
        decision = rules.attach_addon(sub, addon, quantity, at, item_id=item_id)
        return Decided(decision.lines, decision.subscription)

    return decide


def _quantity_decider(item_id: str, quantity: int, at: datetime) -> Callable[[Subscription], Decided | None]:
    def decide(sub: Subscription) -> Decided:
        decision = rules.change_addon_quantity(sub, item_id, quantity, at)
        return Decided(decision.lines, decision.subscription)

    return decide


def ordered_addon_change(
    billing: Billing, subscription: Subscription, invoice: Invoice, order: inv.AddonChangeOrder, at: datetime
) -> Subscription | None:
    """The add-on change a settled invoice paid for, applied as of when it was asked, if the
    subscription would still invoice exactly those lines for it; otherwise None, logged for a refund."""
    decided: Decided | None = None
    try:
        if order.action == "attach":
            addon = billing.catalog.addon(order.addon)
            decided = _attach_decider(addon, order.quantity, order.item_id, order.requested_at)(subscription)
        else:
            decided = _quantity_decider(order.item_id, order.quantity, order.requested_at)(subscription)
    except BillingError:
        decided = None
    if decided is None or decided.lines != invoice.lines:
        logger.error(
            "a paid add-on change no longer applies; refund the payment",
            extra={"subscription_id": subscription.id, "invoice_id": invoice.id},
        )
        return None
    return decided.changed.model_copy(update={"updated_at": at})
