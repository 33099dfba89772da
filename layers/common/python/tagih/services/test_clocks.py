"""What falls due on a test clock, and running it in order when the clock advances.

A test clock (DESIGN.md "Time and test clocks") moves one organization's time; ``advance`` runs the
very lifecycle actions the timers would have run in between (``services.lifecycle``,
``services.dunning``), one at a time, each listed afresh from the state the previous one left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from tagih.domain import invoices as inv
from tagih.domain.invoices import BillingReason, Invoice
from tagih.domain.subscriptions import TRIAL_WILL_END_NOTICE, Subscription
from tagih.services.dunning import retry_payment_action
from tagih.services.lifecycle import (
    ActionResult,
    end_grace_action,
    end_trial_action,
    ended_by_grace,
    expire_incomplete_action,
    renew_action,
    retry_schedule_of,
    trial_will_end_action,
    unrecorded_period_invoice,
)

if TYPE_CHECKING:
    from tagih.services.context import Billing

MAX_ADVANCE_STEPS = 200  # a test clock jumping years runs a few dozen actions; more is a bug


class DueAction(NamedTuple):
    """An action due ``at``; ``run()`` carries it out at that moment, at the version it was listed."""

    at: datetime
    name: str
    run: Callable[[], ActionResult]


def due_actions(
    billing: Billing,
    organization_id: str,
    until: datetime,
    *,
    since: datetime | None = None,
    schedule: Sequence[timedelta] | None = None,
    notice: timedelta = TRIAL_WILL_END_NOTICE,
) -> list[DueAction]:
    """What falls due for one organization up to ``until`` (inclusive), earliest first: the
    trial-will-end notice, trial end, renewal, grace end, incomplete expiry, the next dunning retry
    of the past-due subscription's open invoice. A charge cut short (see the module docstring) is
    listed alone, at the moment it started: it is finished before anything else falls due.

    Each entry depends on the state now, so run only the FIRST and list again (one action changes
    what is due next; ``advance`` does exactly that). The notice is the only entry that writes
    nothing, so it is listed only while due after ``since`` (the moment the clock last ran).
    Overdue state transitions are listed however late they are. Nothing is due while suspended."""
    schedule = retry_schedule_of(billing, schedule)
    sub = billing.subscriptions.current(organization_id)
    if sub is None or sub.id is None:
        return []
    org, sub_id, version = organization_id, sub.id, sub.version
    due: list[DueAction] = []

    def add(at: datetime | None, name: str, run: Callable[[datetime], ActionResult]) -> None:
        if at is not None and at <= until:
            due.append(DueAction(at, name, lambda: run(at)))

    cut_short = _charge_cut_short(billing, sub)
    if cut_short is not None:  # finished first, as its timer's retry would (a GatewayUnavailable)
        name, left = cut_short
        resume: dict[str, Callable[[datetime], ActionResult]] = {
            "end_trial": lambda at: end_trial_action(billing, org, sub_id, version, at, schedule=schedule),
            "renew": lambda at: renew_action(billing, org, sub_id, version, at, schedule=schedule),
            "end_grace": lambda at: end_grace_action(billing, org, sub_id, version, at),
        }
        add(left.created_at, name, resume[name])
        return due
    if sub.status == "trialing" and sub.trial_ends_at is not None and not sub.trial_over_awaiting_payment:
        ends = sub.trial_ends_at
        notice_at = max(ends - notice, sub.created_at)
        if since is None or since < notice_at:
            add(
                notice_at,
                "trial_will_end",
                lambda at: trial_will_end_action(billing, org, sub_id, version, at, notice=notice),
            )
        add(
            ends,
            "end_trial",
            lambda at: end_trial_action(billing, org, sub_id, version, at, schedule=schedule),
        )
    elif sub.status == "active" and not sub.cancel_at_period_end:
        add(
            sub.current_period_end,
            "renew",
            lambda at: renew_action(billing, org, sub_id, version, at, schedule=schedule),
        )
    elif sub.status == "grace_period":
        add(
            sub.grace_period_ends_at,
            "end_grace",
            lambda at: end_grace_action(billing, org, sub_id, version, at),
        )
    elif sub.status == "incomplete":
        add(
            sub.incomplete_expires_at,
            "expire_incomplete",
            lambda at: expire_incomplete_action(billing, org, sub_id, version, at),
        )
    elif sub.status == "past_due":
        dunned = next(
            (
                invoice
                for invoice in billing.invoices.list_for_organization(org)
                if invoice.subscription_id == sub_id
                and invoice.status in inv.UNPAID_STATUSES
                and invoice.next_retry_at is not None
                and 1 <= invoice.retry_count <= len(schedule)
            ),
            None,
        )
        if dunned is not None:
            invoice_id, index = dunned.id, dunned.retry_count
            add(
                dunned.next_retry_at,
                "retry_payment",
                lambda at: retry_payment_action(billing, org, invoice_id, index, at, schedule=schedule),
            )
    return sorted(due, key=lambda action: action.at)


def _charge_cut_short(billing: Billing, sub: Subscription) -> tuple[str, Invoice] | None:
    """The action whose charge stopped between its first write and its outcome, with its draft."""
    reason: BillingReason
    if sub.status == "trialing" and sub.trial_over_awaiting_payment:
        name, reason = "end_trial", "subscription_create"
    elif sub.status == "active":
        name, reason = "renew", "subscription_cycle"
    elif ended_by_grace(sub):
        name, reason = "end_grace", "subscription_cycle"
    else:
        return None
    left = unrecorded_period_invoice(billing, sub, reason)
    return (name, left) if left is not None else None


def advance(
    billing: Billing,
    organization_id: str,
    since: datetime,
    until: datetime,
    *,
    schedule: Sequence[timedelta] | None = None,
    notice: timedelta = TRIAL_WILL_END_NOTICE,
) -> list[tuple[datetime, str, ActionResult]]:
    """Run, in time order, everything due for the organization in ``(since, until]`` (and anything
    overdue before it): a test clock moving from ``since`` to ``until``. Stops when nothing more is
    due, or when an action is skipped (it would be listed again: nothing to gain from looping)."""
    ran: list[tuple[datetime, str, ActionResult]] = []
    last = since
    for _ in range(MAX_ADVANCE_STEPS):
        due = due_actions(billing, organization_id, until, since=last, schedule=schedule, notice=notice)
        if not due:
            return ran
        first = due[0]
        result = first.run()
        ran.append((first.at, first.name, result))
        if result.status == "skipped":
            return ran
        last = max(last, first.at)
    raise RuntimeError(f"more than {MAX_ADVANCE_STEPS} lifecycle actions for {organization_id}; a loop?")
