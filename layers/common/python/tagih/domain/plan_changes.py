"""Plan and billing-cycle changes as pure decisions: ``preview_change`` decides what a change does
(now, prorated; or scheduled for the period end) and ``apply_change`` carries it out on the model.
``services.plan_changes`` writes and charges them."""

from __future__ import annotations

from datetime import datetime

from tagih.domain.addons import addon_label, addon_lines, next_period_addons
from tagih.domain.catalog import Plan
from tagih.domain.errors import (
    ContactSales,
    VersionConflict,
)
from tagih.domain.invoices import InvoiceLine
from tagih.domain.proration import costs_more_per_day, prorate
from tagih.domain.subscriptions import (
    BillingCycle,
    ChangeDecision,
    ChangeKind,
    ScheduledChange,
    Subscription,
    add_cycle,
    as_utc,
    check_changeable,
    check_target_plan,
    current_period,
    next_version,
    period_line,
    plan_label,
    plan_price,
    plan_terms,
    terms_fields,
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
    at = as_utc(at)
    cycle: BillingCycle = new_cycle or sub.billing_cycle
    check_changeable(sub)

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
    check_target_plan(new_plan, sub.currency)
    new_price = plan_price(new_plan, cycle)
    start, end = current_period(sub)
    old_label, new_label = plan_label(sub.plan_name, sub.billing_cycle), plan_label(new_plan.name, cycle)
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
            lines.append(period_line(f"Unused time on {old_label}", credit, at, end, proration=True))
            for item in sub.addons:  # the add-ons move to the annual cycle with the plan
                unused = prorate(item.unit_amount("monthly") * item.quantity, 0, start, end, at).credit
                label = addon_label(item, item.quantity, "monthly")
                lines.append(period_line(f"Unused time on {label}", unused, at, end, proration=True))
        lines.append(period_line(new_label, new_price, at, year_end))
        lines += addon_lines(next_period_addons(sub.addons), "annual", at, year_end)
        return decision("cycle_change", immediate=True, effective_at=at, lines=lines)

    if sub.billing_cycle == "annual" and cycle == "monthly":
        return decision("cycle_change", immediate=False, effective_at=end)

    if upgrade:
        lines = []
        if at < end:
            proration = prorate(sub.price, new_price, start, end, at)
            lines = [
                period_line(f"Unused time on {old_label}", proration.credit, at, end, proration=True),
                period_line(f"Remaining time on {new_label}", proration.debit, at, end, proration=True),
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
    at = as_utc(at)
    if decision.based_on_version != sub.version:
        raise VersionConflict(
            f"Subscription {sub.id!r} is at version {sub.version}, not {decision.based_on_version}."
        )
    if decision.plan != new_plan.slug:
        raise ValueError("the decision is for another plan")
    if decision.kind == "same":
        if sub.scheduled_change is None:
            return sub
        return next_version(sub, at, scheduled_change=None, scheduled_terms=None)
    terms = plan_terms(new_plan, decision.billing_cycle)
    if not decision.immediate:
        scheduled = ScheduledChange(
            plan=terms.plan, billing_cycle=terms.billing_cycle, effective_at=decision.effective_at
        )
        return next_version(sub, at, scheduled_change=scheduled, scheduled_terms=terms)
    changes = terms_fields(terms) | {"scheduled_change": None, "scheduled_terms": None}
    if decision.kind == "cycle_change" and sub.status != "trialing":
        changes |= {
            "current_period_start": at,
            "current_period_end": add_cycle(at, decision.billing_cycle, at.day),
            "billing_anchor_day": at.day,
            "addons": next_period_addons(sub.addons),  # a new period starts: as a renewal would
        }
    return next_version(sub, at, **changes)
