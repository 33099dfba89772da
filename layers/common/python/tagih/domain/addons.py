"""Add-ons on a subscription as pure decisions: attaching, changing the quantity, removing, and
what each invoices now (prorated like an upgrade) or at the next period.

Like every transition, each returns the subscription as it should become (``version + 1``) and
the lines to invoice; ``services.addons`` writes and charges them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tagih.domain.catalog import Addon
from tagih.domain.errors import (
    AddonAlreadyAttached,
    AddonNotFound,
    ContactSales,
    CurrencyMismatch,
    InvalidField,
    SubscriptionAddonNotFound,
)
from tagih.domain.invoices import InvoiceLine
from tagih.domain.proration import prorate
from tagih.domain.subscriptions import (
    BillingCycle,
    Subscription,
    SubscriptionAddon,
    as_utc,
    check_changeable,
    current_period,
    next_version,
    period_line,
    require_stored,
)


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


def addon_label(item: SubscriptionAddon, quantity: int, cycle: BillingCycle) -> str:
    if item.unit == "flat":
        return f"{item.name} ({cycle})"
    return f"{item.name} ({quantity} {'unit' if quantity == 1 else 'units'}, {cycle})"


def addon_lines(
    items: Sequence[SubscriptionAddon], cycle: BillingCycle, start: datetime, end: datetime
) -> list[InvoiceLine]:
    """A full period's line per add-on: quantity times the cycle's unit price."""
    return [
        InvoiceLine(
            description=addon_label(item, item.quantity, cycle),
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
    check_changeable(sub)
    if sub.custom_terms:
        raise ContactSales("The subscription has custom terms; contact sales to add to them.")


def _with_item(sub: Subscription, item: SubscriptionAddon, at: datetime) -> Subscription:
    items = [item if existing.id == item.id else existing for existing in sub.addons]
    if item.id not in {existing.id for existing in sub.addons}:
        items.append(item)
    return next_version(sub, at, addons=items)


def _remaining_time_lines(
    sub: Subscription, item: SubscriptionAddon, old_quantity: int, new_quantity: int, at: datetime
) -> list[InvoiceLine]:
    """Prorated like an upgrade: the unused time of the old quantity credited, the rest of the
    period at the new one debited. Nothing during a trial (it is free) or past the period end (a
    renewal still pending bills the new quantity in full)."""
    start, end = current_period(sub)
    if sub.status == "trialing" or at >= end:
        return []
    unit = item.unit_amount(sub.billing_cycle)
    proration = prorate(unit * old_quantity, unit * new_quantity, start, end, at)
    lines = []
    if old_quantity:
        old_label = addon_label(item, old_quantity, sub.billing_cycle)
        lines.append(period_line(f"Unused time on {old_label}", proration.credit, at, end, proration=True))
    new_label = addon_label(item, new_quantity, sub.billing_cycle)
    lines.append(period_line(f"Remaining time on {new_label}", proration.debit, at, end, proration=True))
    return lines


def attach_addon(
    sub: Subscription, addon: Addon, quantity: int, at: datetime, *, item_id: str
) -> AddonDecision:
    """Attach ``quantity`` units of ``addon`` from ``at``: the rest of the current period is invoiced now,
    prorated per second (nothing during a trial: the trial-end invoice bills it), and every
    renewal bills it in full. 409 ``addon_already_attached`` for an add-on already on the
    subscription (change its quantity instead); a flat add-on is attached once."""
    at = as_utc(at)
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
    at = as_utc(at)
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
    at = as_utc(at)
    _check_addons_changeable(sub)
    item = _addon_item(sub, item_id)
    if item.cancel_at_period_end:
        return AddonDecision(sub, item, [], sub.version)
    removed = item.model_copy(update={"cancel_at_period_end": True, "scheduled_quantity": None})
    return AddonDecision(_with_item(sub, removed, at), removed, [], sub.version)


def _stored_id_of(sub: Subscription) -> str:
    require_stored(sub)
    assert sub.id is not None
    return sub.id
