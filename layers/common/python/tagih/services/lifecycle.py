"""Lifecycle actions: what the timers (Step Functions, the renewal sweep) and test clocks call
(DESIGN.md "Subscription lifecycle", "Time and test clocks").

Every action re-reads the organization's subscription strongly consistent, re-checks it and
returns an ``ActionResult``: ``done`` with what it did, or ``skipped`` with why (``stale``: another
subscription, or ``expected_version`` given and no longer the stored one; ``early``; ``not_due``:
the transition does not apply, e.g. a duplicate firing). A skipped action writes nothing and
charges nothing. Events are published after the write they describe committed.

Charging a period (trial end, renewal) is three steps, each safe to repeat:

1. the subscription moved into the period and the period's DRAFT invoice are written in one save
   (the draft marks "charge in progress": it has no number yet);
2. the wallet pays what its balance covers (``credits_applied``, in one transaction with the
   balance), then what is left due is charged at ``charging.attempt_to_charge`` (one payment
   record per attempt, so a repeat never charges twice, and an attempt that already took the
   money is reused);
3. the outcome is written: finalized (numbered) and paid + the subscription's status in one save;
   or finalized, open, with the first failure recorded (``next_retry_at``) + ``past_due``; or
   finalized, open with the payment's ``payment_url`` (pending: a notification pays it).

A firing that finds the current period's invoice with no outcome recorded (still a draft, or
finalized with no retry and no pay page: a crash, or ``GatewayUnavailable``, between 1 and 3)
resumes at step 2 (an attempt already recorded is used, not charged again), provided it is not
stale: ``expected_version`` None (the sweep, a test clock), the stored version, or exactly one
behind it (only step 1 happened since the timer was armed).

Dunning retries are ``services.dunning``'s, and what falls due on a test clock is
``services.test_clocks``'s; both build on the helpers here (``ActionResult``, ``charge_due``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

from tagih.domain import invoices as inv
from tagih.domain.addons import addon_increments
from tagih.domain.errors import PaymentDeclined, PlanNotFound
from tagih.domain.invoices import BillingReason, Invoice, invoice_data
from tagih.domain.payments import awaiting_payment, settled_attempt
from tagih.domain.subscriptions import TRIAL_WILL_END_NOTICE, Renewal, Subscription, next_renewal_at
from tagih.domain.transitions import (
    end_grace,
    end_trial,
    expire_incomplete,
    renew,
    renewal_payment_failed,
    trial_converted,
    trial_payment_failed,
)
from tagih.services.charging import attempt_to_charge, charge_invoice, paying_method, recorded_attempts
from tagih.services.drafts import subscription_draft

if TYPE_CHECKING:
    from tagih.domain.payment_methods import PaymentMethod
    from tagih.domain.payments import Payment
    from tagih.services.context import Billing, Event


ActionStatus = Literal["done", "skipped"]
Outcome = Literal["paid", "payment_failed", "pending"]  # of charging what an invoice has due


@dataclass(frozen=True)
class ActionResult:
    """What an action did. ``reason``: for ``done`` the outcome (``paid``, ``payment_failed``,
    ``pending``, ``cancelled``, ``published``, ...), for ``skipped`` why nothing happened.
    ``next_retry_at``: when the invoice's next dunning retry falls due (None: none scheduled), for
    a state machine to wait for. ``due_at``: for ``early``, when the action falls due now (the
    moment moved later since the timer was armed), for the timer to wait again."""

    status: ActionStatus
    reason: str
    subscription: Subscription | None = None
    invoice: Invoice | None = None
    next_retry_at: datetime | None = None
    due_at: datetime | None = None


def skipped(
    reason: str, subscription: Subscription | None = None, invoice: Invoice | None = None
) -> ActionResult:
    return ActionResult("skipped", reason, subscription, invoice)


def early(due_at: datetime, subscription: Subscription, invoice: Invoice | None = None) -> ActionResult:
    return ActionResult("skipped", "early", subscription, invoice, due_at=due_at)


def load_subscription(
    billing: Billing, organization_id: str, subscription_id: str, expected_version: int | None
) -> Subscription | ActionResult:
    sub = billing.subscriptions.current(organization_id)
    if sub is None or sub.id != subscription_id:
        return skipped("stale", sub)
    if expected_version is not None and sub.version != expected_version:
        return skipped("stale", sub)
    return sub


def retry_schedule_of(billing: Billing, schedule: Sequence[timedelta] | None) -> Sequence[timedelta]:
    """``schedule`` when given (tests), else the configured one; checked either way."""
    chosen = billing.retry_schedule if schedule is None else schedule
    if not chosen or any(b <= a for a, b in pairwise(chosen)):
        raise ValueError("a retry schedule is a non-empty, increasing list of delays")
    return chosen


def subscription_method(billing: Billing, sub: Subscription) -> PaymentMethod | None:
    """Which method pays ``sub``'s invoices now: a timer records a failed charge, rather than
    failing, when there is none (``charging.paying_method``)."""
    return paying_method(billing, sub.organization_id, subscription=sub, vanished_default="none")


def wallet_first(billing: Billing, invoice: Invoice, at: datetime) -> Invoice:
    """``invoice`` after the wallet paid what it can of it, unless a card attempt may still take
    the money (left processing by a firing that stopped, or pending): resuming it charges the
    amount it claimed, so the wallet must not change what is due meanwhile (a new amount would be
    a new attempt, and the first might still go through)."""
    if any(p.status in ("processing", "pending") for p in recorded_attempts(billing.payments, invoice)):
        return invoice
    from tagih.services.wallet import pay_from_wallet_first  # the charging path only (cold start)

    return pay_from_wallet_first(billing, invoice, at)


def charge_due(
    billing: Billing, invoice: Invoice, method: PaymentMethod | None, at: datetime
) -> tuple[Outcome, Payment | None]:
    """Charge what ``invoice`` has due once (``next_attempt``); no method is a failure. A
    ``GatewayUnavailable`` propagates: nothing was recorded, a later firing tries again."""
    if method is None:
        return "payment_failed", None
    plan = attempt_to_charge(billing, invoice, method)
    if plan.settled is not None:
        return "paid", plan.settled
    try:
        payment = charge_invoice(billing, invoice, method, plan.attempt, at)
    except PaymentDeclined:
        return "payment_failed", None
    return ("paid" if payment.status == "succeeded" else "pending"), payment


# -- charging a period (trial end, renewal) ------------------------------------------------------------
def unrecorded_period_invoice(billing: Billing, sub: Subscription, reason: BillingReason) -> Invoice | None:
    """The invoice of ``sub``'s current period whose charge's outcome was never recorded: still a
    draft, or finalized by a firing that stopped before its outcome write (open, no retry, no pay
    page, no Midtrans order awaiting a transfer)."""
    for invoice in billing.invoices.list_for_organization(sub.organization_id):
        unrecorded = invoice.status == "draft" or (
            invoice.status == "open"
            and invoice.retry_count == 0
            and invoice.payment_url is None
            and invoice.gateway_invoice_id is None
        )
        if (
            unrecorded
            and invoice.subscription_id == sub.id
            and invoice.billing_reason == reason
            and invoice.period_start == sub.current_period_start
        ):
            return invoice
    return None


def _resumed_charge(
    billing: Billing, invoice: Invoice, sub: Subscription, at: datetime
) -> tuple[Outcome, Payment | None]:
    """The outcome of a finalized invoice's first charge, charging only if none was recorded."""
    recorded = recorded_attempts(billing.payments, invoice)
    settled = settled_attempt(recorded)
    if settled is not None:
        return "paid", settled
    if any(p.status == "failed" for p in recorded):
        return "payment_failed", None
    return charge_due(billing, invoice, subscription_method(billing, sub), at)


def _overage_lines(billing: Billing, ended: Subscription) -> list[inv.InvoiceLine]:
    """Use beyond the quotas in the period ``ended`` just closed, billed in arrears at its plan's
    overage prices, one line per metric (nothing for a plan that prices none, or custom terms)."""
    start, end = ended.current_period_start, ended.current_period_end
    if billing.usage is None or start is None or end is None or ended.custom_terms:
        return []
    try:
        plan = billing.catalog.plan(ended.plan)
    except PlanNotFound:  # retired from the catalog since: its overage prices went with it
        return []
    if not plan.overage:
        return []
    from tagih.domain.overage import overage_lines  # the renewal path only (cold start)
    from tagih.domain.usage import effective_quotas

    used = billing.usage.counted_between(ended.organization_id, start, end)
    quotas = effective_quotas(ended.limits, addon_increments(ended))
    return overage_lines(plan, used, period_start=start, period_end=end, quotas=quotas)


def _start_period(
    billing: Billing, base: Subscription, renewal: Renewal, at: datetime
) -> tuple[Subscription, Invoice]:
    moved = renewal.subscription
    start, end = moved.current_period_start, moved.current_period_end
    if start is None or end is None:
        raise ValueError("end_trial and renew always set the period")
    lines = renewal.lines
    if renewal.billing_reason == "subscription_cycle":
        lines = [*lines, *_overage_lines(billing, base)]
    draft = subscription_draft(
        billing, moved, renewal.billing_reason, lines, period=(start, end), due_date=start, now=at
    )
    billing.subscriptions.save(moved, base.version, invoices=[(draft, None)])
    return moved, draft


def _charge_draft(
    billing: Billing, sub: Subscription, draft: Invoice, at: datetime
) -> tuple[Invoice, Outcome, Payment | None]:
    """Step 2 for a draft: the wallet first, then the card for what is left (nothing when the
    wallet paid it all: finalizing marks it paid)."""
    draft = wallet_first(billing, draft, at)
    if not draft.amount_due:
        return draft, "paid", None
    outcome, payment = charge_due(billing, draft, subscription_method(billing, sub), at)
    return draft, outcome, payment


def _charge_period(
    billing: Billing,
    sub: Subscription,
    draft: Invoice,
    at: datetime,
    schedule: Sequence[timedelta] | None,
    *,
    on_paid: Callable[[Subscription, datetime], Subscription | None],
    on_failed: Callable[[Subscription, datetime], Subscription | None],
    announce_paid_period: bool = False,
) -> ActionResult:
    """Steps 2 and 3 (module docstring) for the stored ``sub`` and its period's ``draft``. With no
    ``schedule`` a declined charge is recorded and never retried automatically.

    ``announce_paid_period``: the move into the period is the change subscribers hear of (a
    renewal), so a paid charge that writes no new subscription state still publishes
    ``billing.subscription.updated`` with ``sub`` in its new period. Published with the outcome,
    after the one conditional write that records it: a repeat of the action finds the outcome
    recorded and publishes nothing, so each period is announced once."""
    org = sub.organization_id
    if draft.status == "draft":
        draft, outcome, payment = _charge_draft(billing, sub, draft, at)
        finalized = billing.invoices.finalize(draft, at)
    else:  # finalized by a firing that stopped before writing the outcome
        outcome, payment = _resumed_charge(billing, draft, sub, at)
        finalized = draft
    events: list[Event] = [("billing.invoice.created", invoice_data(finalized))]
    written_sub: Subscription | None = None
    if finalized.status == "paid":  # nothing was due (a zero price)
        outcome, written = "paid", finalized
        written_sub = on_paid(sub, at)
        if written_sub is not None:
            billing.subscriptions.save(written_sub, sub.version)
        events.append(("billing.invoice.paid", invoice_data(written)))
    elif outcome == "paid":
        assert payment is not None
        written = inv.mark_paid(finalized, payment.amount, at)
        written_sub = on_paid(sub, at)
        if written_sub is not None:
            billing.subscriptions.save(written_sub, sub.version, invoices=[(written, finalized.version)])
        else:
            billing.invoices.replace(written, finalized.version)
        events.append(("billing.invoice.paid", invoice_data(written)))
    elif outcome == "pending":
        assert payment is not None
        written = awaiting_payment(finalized, payment, at)
        billing.invoices.replace(written, finalized.version)
    else:
        written = _record_declined(billing, finalized, at, schedule)
        written_sub = on_failed(sub, at)
        if written_sub is not None:
            billing.subscriptions.save(written_sub, sub.version, invoices=[(written, finalized.version)])
        else:
            billing.invoices.replace(written, finalized.version)
        events.append(("billing.invoice.payment_failed", invoice_data(written)))
    renewed = sub if announce_paid_period and outcome == "paid" else None
    announced = written_sub or renewed
    if announced is not None:
        events.append(("billing.subscription.updated", announced.public_data()))
    billing.publish(org, at, *events)
    return ActionResult(
        "done",
        outcome,
        written_sub or sub,
        written,
        written.next_retry_at if outcome == "payment_failed" else None,
    )


def _record_declined(
    billing: Billing, finalized: Invoice, at: datetime, schedule: Sequence[timedelta] | None
) -> Invoice:
    """The declined first charge recorded, and the dunning timer armed for the first retry (before
    anything is written: see timers.port) when there is a ``schedule``."""
    if not schedule:
        return inv.record_retry(finalized, at, None)
    declined = inv.record_retry(finalized, at, at + schedule[0])
    billing.timers.start_dunning_timer(declined)
    return declined


@dataclass(frozen=True)
class _PeriodKind:
    """How a period is charged: the transition into it, and what its charge's outcome does."""

    move: Callable[[Subscription, datetime], Renewal | None]
    billing_reason: BillingReason
    in_progress: Callable[[Subscription], bool]  # where a draft of the period may be left
    due_at: Callable[[Subscription], datetime | None]
    on_paid: Callable[[Subscription, datetime], Subscription | None]
    on_failed: Callable[[Subscription, datetime], Subscription | None]
    announce_paid_period: bool = False  # see _charge_period


def _period_action(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    expected_version: int | None,
    at: datetime,
    *,
    schedule: Sequence[timedelta] | None,
    kind: _PeriodKind,
) -> ActionResult:
    chosen = retry_schedule_of(billing, schedule)
    loaded = load_subscription(billing, organization_id, subscription_id, None)
    if isinstance(loaded, ActionResult):
        return loaded
    sub = loaded
    fresh = expected_version is None or sub.version == expected_version

    def charge(current: Subscription, invoice: Invoice) -> ActionResult:
        return _charge_period(
            billing,
            current,
            invoice,
            at,
            chosen,
            on_paid=kind.on_paid,
            on_failed=kind.on_failed,
            announce_paid_period=kind.announce_paid_period,
        )

    moved = kind.move(sub, at) if fresh else None
    if moved is not None:
        return charge(*_start_period(billing, sub, moved, at))
    # Resuming a charge left in progress: not stale if only its own first write happened since.
    resumable = expected_version is None or sub.version in {expected_version, expected_version + 1}
    left = (
        unrecorded_period_invoice(billing, sub, kind.billing_reason)
        if resumable and kind.in_progress(sub)
        else None
    )
    if left is not None:
        return charge(sub, left)
    due_at = kind.due_at(sub)
    if not fresh:
        return skipped("stale", sub)
    return early(due_at, sub) if due_at is not None and at < due_at else skipped("not_due", sub)


# -- trials ----------------------------------------------------------------------------------------------
def trial_will_end_action(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    expected_version: int | None,
    at: datetime,
    *,
    notice: timedelta = TRIAL_WILL_END_NOTICE,
) -> ActionResult:
    """Publish ``billing.subscription.trial_will_end`` when the trial (still trialing at
    ``expected_version``) ends within ``notice``. Writes nothing; a repeat publishes again, which
    consumers dedupe like any at-least-once event."""
    loaded = load_subscription(billing, organization_id, subscription_id, expected_version)
    if isinstance(loaded, ActionResult):
        return loaded
    sub = loaded
    ends = _trial_end_due(sub)
    if ends is None or at >= ends:
        return skipped("not_due", sub)
    if at < ends - notice:
        return early(ends - notice, sub)
    billing.publish(organization_id, at, ("billing.subscription.trial_will_end", sub.public_data()))
    return ActionResult("done", "published", sub)


def _trial_end_due(sub: Subscription) -> datetime | None:
    if sub.status != "trialing" or sub.trial_over_awaiting_payment:
        return None
    return sub.trial_ends_at


_TRIAL_END = _PeriodKind(
    move=end_trial,
    billing_reason="subscription_create",
    in_progress=lambda sub: sub.trial_over_awaiting_payment,
    due_at=_trial_end_due,
    on_paid=trial_converted,
    on_failed=trial_payment_failed,
)


def end_trial_action(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    expected_version: int | None,
    at: datetime,
    *,
    schedule: Sequence[timedelta] | None = None,
) -> ActionResult:
    """The trial is over: invoice the first paid period (``subscription_create``) and charge it.
    Paid → ``active``; declined or no payment method → ``past_due`` with the invoice open and its
    first retry scheduled; pending → still trialing, awaiting the payment."""
    return _period_action(
        billing, organization_id, subscription_id, expected_version, at, schedule=schedule, kind=_TRIAL_END
    )


# -- renewal -----------------------------------------------------------------------------------------------
def _keep_active(sub: Subscription, at: datetime) -> Subscription | None:
    return None  # a paid renewal leaves the (already renewed, active) subscription as it is


def _renewal_due(sub: Subscription) -> datetime | None:
    return next_renewal_at(sub) if sub.status == "active" else None  # a trial's end is not a renewal


_RENEWAL = _PeriodKind(
    move=renew,
    billing_reason="subscription_cycle",
    in_progress=lambda sub: sub.status == "active",
    due_at=_renewal_due,
    on_paid=_keep_active,
    on_failed=renewal_payment_failed,
    announce_paid_period=True,  # docs/events.md: billing.subscription.updated on renewal
)


def renew_action(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    expected_version: int | None,
    at: datetime,
    *,
    schedule: Sequence[timedelta] | None = None,
) -> ActionResult:
    """The period ended: move into the next one (a scheduled change applies), invoice it
    (``subscription_cycle``) and charge it. Paid → active in the new period; declined → ``past_due``
    with the invoice open and its first retry scheduled. One period per call."""
    return _period_action(
        billing, organization_id, subscription_id, expected_version, at, schedule=schedule, kind=_RENEWAL
    )


# -- grace and incomplete expiry ------------------------------------------------------------------------
def _final_invoice(billing: Billing, sub: Subscription, at: datetime) -> Invoice | None:
    """The draft closing a paid period that ends with its grace: the period's overage in arrears
    (a renewal would have carried those lines). None for a trial, or nothing over the quotas."""
    start, end = sub.current_period_start, sub.current_period_end
    if sub.previous_status != "active" or start is None or end is None:
        return None
    lines = _overage_lines(billing, sub)
    if not lines:
        return None
    return subscription_draft(
        billing, sub, "subscription_cycle", lines, period=(start, end), due_date=at, now=at
    )


def _charge_final_invoice(billing: Billing, sub: Subscription, draft: Invoice, at: datetime) -> ActionResult:
    """Charged once, the wallet first. A decline leaves it open for the customer to pay (``POST
    /billing/invoices/{id}/pay``, the hosted page) and is not retried: the subscription is over,
    and a card is not charged again, unasked, after a cancellation."""
    done = _charge_period(billing, sub, draft, at, None, on_paid=_unchanged, on_failed=_unchanged)
    return ActionResult("done", "cancelled", sub, done.invoice)


def _unchanged(sub: Subscription, at: datetime) -> None:
    return None


def end_grace_action(
    billing: Billing, organization_id: str, subscription_id: str, expected_version: int | None, at: datetime
) -> ActionResult:
    """Grace is over: ``cancelled`` (the organization is on Free). A paid period whose use went
    over its quotas closes with a final invoice of that overage, saved with the cancellation and
    then charged (steps 2 and 3 of the module docstring; a firing that finds it left uncharged
    resumes it)."""
    loaded = load_subscription(billing, organization_id, subscription_id, expected_version)
    if isinstance(loaded, ActionResult):
        return loaded
    sub = loaded
    ended = end_grace(sub, at)
    if ended is None:
        if sub.status == "grace_period" and sub.grace_period_ends_at is not None:
            return early(sub.grace_period_ends_at, sub)
        left = unrecorded_period_invoice(billing, sub, "subscription_cycle") if ended_by_grace(sub) else None
        if left is not None:
            return _charge_final_invoice(billing, sub, left, at)
        return skipped("not_due", sub)
    final = _final_invoice(billing, sub, at)
    billing.subscriptions.save(ended, sub.version, invoices=[(final, None)] if final else ())
    billing.publish(organization_id, at, ("billing.subscription.cancelled", ended.public_data()))
    if final is not None:
        return _charge_final_invoice(billing, ended, final, at)
    return ActionResult("done", "cancelled", ended)


def ended_by_grace(sub: Subscription) -> bool:
    return sub.status == "cancelled" and sub.cancel_at_period_end and sub.grace_period_ends_at is not None


def expire_incomplete_action(
    billing: Billing, organization_id: str, subscription_id: str, expected_version: int | None, at: datetime
) -> ActionResult:
    """The first payment never came: ``cancelled``, and its open first invoice voided in the same
    save (nothing is owed for a subscription that never started; what the wallet paid of it goes
    back to the wallet first)."""
    loaded = load_subscription(billing, organization_id, subscription_id, expected_version)
    if isinstance(loaded, ActionResult):
        return loaded
    sub = loaded
    expired = expire_incomplete(sub, at)
    if expired is None:
        if sub.status == "incomplete" and sub.incomplete_expires_at is not None:
            return early(sub.incomplete_expires_at, sub)
        return skipped("not_due", sub)
    unpaid = [
        invoice
        for invoice in billing.invoices.list_for_organization(organization_id)
        if invoice.subscription_id == sub.id
        and invoice.billing_reason == "subscription_create"
        and invoice.status in {"draft", *inv.UNPAID_STATUSES}
    ]
    from tagih.services.wallet import void_returning_wallet_credit  # the wallet's models (cold start)

    voided = [void_returning_wallet_credit(billing, invoice, at) for invoice in unpaid]
    billing.subscriptions.save(expired, sub.version, invoices=voided)
    billing.publish(organization_id, at, ("billing.subscription.cancelled", expired.public_data()))
    return ActionResult("done", "cancelled", expired, voided[0][0] if voided else None)
