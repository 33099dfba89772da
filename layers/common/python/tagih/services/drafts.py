"""The one builder of a subscription's draft invoice, and of a paid change's.

Every invoice a subscription gets (first, trial end, renewal, change, Enterprise, final overage)
starts here: in the subscription's currency, taxed at the catalog's rate for it, not yet numbered.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from tagih.domain import invoices as inv
from tagih.domain.invoices import Invoice

if TYPE_CHECKING:
    from tagih.domain.subscriptions import Subscription
    from tagih.services.context import Billing


def subscription_draft(
    billing: Billing,
    sub: Subscription,
    reason: inv.BillingReason,
    lines: list[inv.InvoiceLine],
    *,
    period: tuple[datetime, datetime],
    due_date: datetime,
    now: datetime,
) -> Invoice:
    """A draft invoice of ``sub``'s, in its currency, taxed at the catalog's rate for it."""
    return inv.draft_invoice(
        organization_id=sub.organization_id,
        subscription_id=sub.id,
        billing_reason=reason,
        currency=sub.currency,
        lines=lines,
        tax=billing.catalog.tax_rate(sub.currency),
        period_start=period[0],
        period_end=period[1],
        due_date=due_date,
        now=now,
    )


def change_draft(
    billing: Billing,
    sub: Subscription,
    lines: list[inv.InvoiceLine],
    now: datetime,
    *,
    plan_change: inv.PlanChangeOrder | None = None,
    addon_change: inv.AddonChangeOrder | None = None,
) -> Invoice | None:
    """The draft invoicing a change's ``lines`` (None when there are none), due now, over the lines'
    span (``[now, period end)`` for an upgrade, the new year for a monthly→annual change), recording
    what it pays for, so a payment that settles later applies exactly that."""
    if not lines:
        return None
    starts = [line.period_start or now for line in lines]
    ends = [line.period_end or now for line in lines]
    draft = subscription_draft(
        billing, sub, "subscription_update", lines, period=(min(starts), max(ends)), due_date=now, now=now
    )
    return draft.model_copy(update={"plan_change": plan_change, "addon_change": addon_change})
