"""Changing plan or billing cycle: ``POST …/change``, ``…/change/preview`` and ``PATCH …/{id}``.

``domain.plan_changes`` decides a change (``preview_change``) and carries it out on the model
(``apply_change``); this module writes it. A change with something positive to invoice now is
charged through ``paid_changes`` (once per version of the subscription); anything else (a trial,
a scheduled downgrade, a proration netting to nothing) is written at once. A change paid
asynchronously is applied when its payment settles (``ordered_plan_change``, from
``settlement``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from tagih.domain import invoices as inv
from tagih.domain.catalog import Plan, TaxRate
from tagih.domain.errors import BillingError, VersionConflict
from tagih.domain.invoices import Invoice, invoice_data
from tagih.domain.plan_changes import apply_change, preview_change
from tagih.domain.subscriptions import BillingCycle, ChangeDecision, ScheduledChange, Subscription
from tagih.services.drafts import change_draft
from tagih.services.paid_changes import (
    Decided,
    PlanChanged,
    SubscriptionChange,
    change_moment,
    charge_subscription_change,
)

if TYPE_CHECKING:
    from tagih.services.context import Billing, Event

logger = Logger()


@dataclass(frozen=True)
class PlanChangePreview:
    """What ``change_plan`` would do at the same moment, computed and not written."""

    decision: ChangeDecision
    subscription: Subscription  # as the change would leave it (an upgrade: once its invoice is paid)
    invoice: Invoice | None  # the draft the change would invoice and charge; None when nothing
    tax: TaxRate  # the subscription currency's, shown even when nothing is invoiced

    @property
    def scheduled_change(self) -> ScheduledChange | None:
        return None if self.decision.immediate else self.subscription.scheduled_change


def _plan_change_draft(
    billing: Billing, sub: Subscription, decision: ChangeDecision, now: datetime
) -> Invoice | None:
    order = inv.PlanChangeOrder(plan=decision.plan, billing_cycle=decision.billing_cycle, requested_at=now)
    return change_draft(billing, sub, decision.lines, now, plan_change=order)


def preview_plan_change(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    *,
    plan_slug: str,
    cycle: BillingCycle | None,
    now: datetime,
) -> PlanChangePreview:
    """``POST …/change/preview``: the same decision ``change_plan`` takes at ``now``, nothing written.
    The draft's id and hosted token are throwaway: only ``change_plan`` creates an invoice."""
    current = billing.subscriptions.get(organization_id, subscription_id)
    plan = billing.catalog.plan(plan_slug)
    decision = preview_change(current, plan, cycle, now)
    return PlanChangePreview(
        decision=decision,
        subscription=apply_change(current, decision, plan, now),
        invoice=_plan_change_draft(billing, current, decision, now),
        tax=billing.catalog.tax_rate(current.currency),
    )


def change_plan(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    *,
    plan_slug: str,
    cycle: BillingCycle | None,
    expected_version: int | None = None,
    now: datetime,
) -> PlanChanged:
    """``POST …/change`` and ``PATCH …/{id}``: move the subscription to ``plan_slug`` (and ``cycle``).

    - ``expected_version`` not the stored version → 409 ``version_conflict``, before anything else;
    - a positive net to invoice now (an upgrade's proration, monthly→annual) → a draft invoice
      (``subscription_update``, due now) charged to the subscription's payment method, else the
      organization's default (422 ``payment_method_required`` without one), while still a draft,
      like a first invoice. Paid → numbered, and the changed subscription and the paid invoice are
      written in ONE transaction. Declined → 402 and nothing changes. Asynchronous (virtual
      account, e-wallet) → the plan stays as it is and the invoice is kept ``open`` with its
      ``payment_url``; when that payment settles, ``InvoicePaymentListener`` applies the change the
      invoice records (``plan_change``) as of when it was asked;
    - nothing positive to invoice (a trial, a downgrade or an annual→monthly switch scheduled for
      the period end, a proration netting to zero or less) → written at once with no charge, with a
      (paid at once) invoice only when there are lines.

    How two concurrent changes are kept from both charging: see the comment above
    ``MAX_CHANGE_TRIES``. A write that lands on the subscription while the winner is charging (a
    cancel, an operator's suspension) is handled by ``_commit_paid_change``.
    """
    current = billing.subscriptions.get(organization_id, subscription_id)
    if expected_version is not None and expected_version != current.version:
        raise VersionConflict(
            f"Subscription {subscription_id!r} is at version {current.version}, not {expected_version}; "
            "read it again and retry."
        )
    plan = billing.catalog.plan(plan_slug)
    now = change_moment(billing, current, now)
    decision = preview_change(current, plan, cycle, now)
    draft = _plan_change_draft(billing, current, decision, now)
    if draft is not None and draft.amount_due > 0:
        change = SubscriptionChange(
            billing,
            current,
            now,
            Decided(decision.lines, apply_change(current, decision, plan, now)),
            redecide=_plan_change_decider(plan, decision.billing_cycle, now),
        )
        return charge_subscription_change(change, draft)

    changed = apply_change(current, decision, plan, now)
    if changed is current:  # the same plan and cycle, nothing scheduled: nothing to write
        return PlanChanged(current, None)
    if draft is None:
        billing.subscriptions.save(changed, current.version)
        billing.publish(organization_id, now, ("billing.subscription.updated", changed.public_data()))
        return PlanChanged(changed, None)
    # Lines netting to nothing due: the record of the change, paid at once when numbered.
    billing.subscriptions.save(changed, current.version, invoices=[(draft, None)])
    finalized = billing.invoices.finalize(draft, now)
    events: list[Event] = [
        ("billing.subscription.updated", changed.public_data()),
        ("billing.invoice.created", invoice_data(finalized)),
    ]
    if finalized.status == "paid":
        events.append(("billing.invoice.paid", invoice_data(finalized)))
    billing.publish(organization_id, now, *events)
    return PlanChanged(changed, finalized)


def _plan_change_decider(
    plan: Plan, cycle: BillingCycle, at: datetime
) -> Callable[[Subscription], Decided | None]:
    def decide(sub: Subscription) -> Decided | None:
        decision = preview_change(sub, plan, cycle, at)
        if not decision.immediate:
            return None
        return Decided(decision.lines, apply_change(sub, decision, plan, at))

    return decide


def ordered_plan_change(
    billing: Billing, subscription: Subscription, invoice: Invoice, order: inv.PlanChangeOrder, at: datetime
) -> Subscription | None:
    """The change a settled ``subscription_update`` invoice paid for, applied as of when it was
    asked (an annual period starts then: that is what the lines billed). Only if the subscription
    would still invoice exactly those lines for it; otherwise None, logged for a refund."""
    try:
        plan = billing.catalog.plan(order.plan)
        decision = preview_change(subscription, plan, order.billing_cycle, order.requested_at)
    except BillingError:
        decision = None
    if decision is None or not decision.immediate or decision.lines != invoice.lines:
        logger.error(
            "a paid plan change no longer applies; refund the payment",
            extra={"subscription_id": subscription.id, "invoice_id": invoice.id},
        )
        return None
    changed = apply_change(subscription, decision, plan, order.requested_at)
    return changed.model_copy(update={"updated_at": at})
