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
   balance), then what is left due is charged with ``collection.next_attempt`` (one payment record
   per attempt, so a repeat never charges twice, and an attempt that already took the money is
   reused);
3. the outcome is written: finalized (numbered) and paid + the subscription's status in one save;
   or finalized, open, with the first failure recorded (``next_retry_at``) + ``past_due``; or
   finalized, open with the payment's ``payment_url`` (pending: a notification pays it).

A firing that finds the current period's invoice with no outcome recorded (still a draft, or
finalized with no retry and no pay page: a crash, or ``GatewayUnavailable``, between 1 and 3)
resumes at step 2 (an attempt already recorded is used, not charged again), provided it is not
stale: ``expected_version`` None (the sweep, a test clock), the stored version, or exactly one
behind it (only step 1 happened since the timer was armed).

Dunning (``retry_payment_action``): retry ``i`` (1-based, ``retry_count == i`` before it runs) falls
due at ``first failure + schedule[i - 1]``; the invoice's ``next_retry_at`` holds it. A retry whose
charge was already declined (a failed payment recorded at or after that moment, before the
invoice recorded it) is recorded without charging again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Literal, NamedTuple

from tagih.domain import invoices as inv
from tagih.domain import subscriptions as subs
from tagih.domain.billing import (
    Billing,
    charge_invoice,
    invoice_data,
    pay_from_wallet_first,
    subscription_draft,
    void_returning_wallet_credit,
)
from tagih.domain.collection import next_attempt
from tagih.domain.errors import InvoiceNotFound, PaymentDeclined, PaymentMethodNotFound, PlanNotFound
from tagih.domain.invoices import BillingReason, Invoice
from tagih.domain.payment_methods import PaymentMethod
from tagih.domain.payments import Payment
from tagih.domain.subscriptions import Subscription
from tagih.events.models import EventType
from tagih.gateways.names import charge_reference

DEFAULT_RETRY_SCHEDULE = subs.DEFAULT_RETRY_SCHEDULE
TRIAL_WILL_END_NOTICE = subs.TRIAL_WILL_END_NOTICE
MAX_RECORDED_ATTEMPTS = 99  # as collection.MAX_ATTEMPTS
MAX_ADVANCE_STEPS = 200  # a test clock jumping years runs a few dozen actions; more is a bug

ActionStatus = Literal["done", "skipped"]
Event = tuple[EventType, dict[str, Any]]
ChargeOutcome = Literal["paid", "payment_failed", "pending"]


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


def _skip(
    reason: str, subscription: Subscription | None = None, invoice: Invoice | None = None
) -> ActionResult:
    return ActionResult("skipped", reason, subscription, invoice)


def _early(due_at: datetime, subscription: Subscription, invoice: Invoice | None = None) -> ActionResult:
    return ActionResult("skipped", "early", subscription, invoice, due_at=due_at)


def _load(
    billing: Billing, organization_id: str, subscription_id: str, expected_version: int | None
) -> Subscription | ActionResult:
    sub = billing.subscriptions.current(organization_id)
    if sub is None or sub.id != subscription_id:
        return _skip("stale", sub)
    if expected_version is not None and sub.version != expected_version:
        return _skip("stale", sub)
    return sub


def _schedule_of(billing: Billing, schedule: Sequence[timedelta] | None) -> Sequence[timedelta]:
    """``schedule`` when given (tests), else the configured one; checked either way."""
    chosen = billing.retry_schedule if schedule is None else schedule
    if not chosen or any(b <= a for a, b in pairwise(chosen)):
        raise ValueError("a retry schedule is a non-empty, increasing list of delays")
    return chosen


# -- payment methods and charges ------------------------------------------------------------------------
def _method_for(billing: Billing, sub: Subscription) -> PaymentMethod | None:
    """The subscription's payment method, else the organization's default, else None."""
    org = sub.organization_id
    if sub.payment_method_id is not None:
        try:
            return billing.payment_methods.get(org, sub.payment_method_id)
        except PaymentMethodNotFound:
            pass  # removed since: the default pays
    pointer = billing.payment_methods.default_pointer(org)
    if pointer is None:
        return None
    try:
        return billing.payment_methods.get(org, pointer.payment_method_id)
    except PaymentMethodNotFound:
        return None


def _recorded_attempts(billing: Billing, invoice: Invoice) -> list[Payment]:
    found: list[Payment] = []
    for attempt in range(1, MAX_RECORDED_ATTEMPTS + 1):
        payment = billing.payments.get(invoice.organization_id, charge_reference(invoice.id, attempt))
        if payment is None:
            break
        found.append(payment)
    return found


def _wallet_first(billing: Billing, invoice: Invoice, at: datetime) -> Invoice:
    """``invoice`` after the wallet paid what it can of it, unless a card attempt may still take
    the money (left processing by a firing that stopped, or pending): resuming it charges the
    amount it claimed, so the wallet must not change what is due meanwhile (a new amount would be
    a new attempt, and the first might still go through)."""
    if any(p.status in ("processing", "pending") for p in _recorded_attempts(billing, invoice)):
        return invoice
    return pay_from_wallet_first(billing, invoice, at)


def _charge(
    billing: Billing, invoice: Invoice, method: PaymentMethod | None, at: datetime
) -> tuple[ChargeOutcome, Payment | None]:
    """Charge what ``invoice`` has due once (``next_attempt``); no method is a failure. A
    ``GatewayUnavailable`` propagates: nothing was recorded, a later firing tries again."""
    if method is None:
        return "payment_failed", None
    plan = next_attempt(billing.payments, invoice, method)
    if plan.settled is not None:
        return "paid", plan.settled
    try:
        payment = charge_invoice(billing, invoice, method, plan.attempt, at)
    except PaymentDeclined:
        return "payment_failed", None
    return ("paid" if payment.status == "succeeded" else "pending"), payment


def _awaiting(invoice: Invoice, payment: Payment, at: datetime) -> Invoice:
    return invoice.model_copy(
        update={
            "payment_url": payment.payment_url,
            "gateway_invoice_id": payment.reference if payment.gateway == "midtrans" else None,
            "version": invoice.version + 1,
            "updated_at": at,
        }
    )


# -- charging a period (trial end, renewal) ------------------------------------------------------------
def _period_draft(billing: Billing, sub: Subscription, reason: BillingReason) -> Invoice | None:
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
) -> tuple[ChargeOutcome, Payment | None]:
    """The outcome of a finalized invoice's first charge, charging only if none was recorded."""
    recorded = _recorded_attempts(billing, invoice)
    settled = next((p for p in recorded if p.status == "succeeded" and p.purpose == "invoice"), None)
    if settled is not None:
        return "paid", settled
    if any(p.status == "failed" for p in recorded):
        return "payment_failed", None
    return _charge(billing, invoice, _method_for(billing, sub), at)


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
    from tagih.domain.usage import effective_quotas, overage_lines  # the renewal path only

    used = billing.usage.counted_between(ended.organization_id, start, end)
    quotas = effective_quotas(ended.limits, subs.addon_increments(ended))
    return overage_lines(plan, used, period_start=start, period_end=end, quotas=quotas)


def _start_period(
    billing: Billing, base: Subscription, renewal: subs.Renewal, at: datetime
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
) -> tuple[Invoice, ChargeOutcome, Payment | None]:
    """Step 2 for a draft: the wallet first, then the card for what is left (nothing when the
    wallet paid it all: finalizing marks it paid)."""
    draft = _wallet_first(billing, draft, at)
    if not draft.amount_due:
        return draft, "paid", None
    outcome, payment = _charge(billing, draft, _method_for(billing, sub), at)
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
) -> ActionResult:
    """Steps 2 and 3 (module docstring) for the stored ``sub`` and its period's ``draft``. With no
    ``schedule`` a declined charge is recorded and never retried automatically."""
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
        written = _awaiting(finalized, payment, at)
        billing.invoices.replace(written, finalized.version)
    else:
        written = _record_declined(billing, finalized, at, schedule)
        written_sub = on_failed(sub, at)
        if written_sub is not None:
            billing.subscriptions.save(written_sub, sub.version, invoices=[(written, finalized.version)])
        else:
            billing.invoices.replace(written, finalized.version)
        events.append(("billing.invoice.payment_failed", invoice_data(written)))
    if written_sub is not None:
        events.append(("billing.subscription.updated", written_sub.public_data()))
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

    move: Callable[[Subscription, datetime], subs.Renewal | None]
    billing_reason: BillingReason
    in_progress: Callable[[Subscription], bool]  # where a draft of the period may be left
    due_at: Callable[[Subscription], datetime | None]
    on_paid: Callable[[Subscription, datetime], Subscription | None]
    on_failed: Callable[[Subscription, datetime], Subscription | None]


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
    chosen = _schedule_of(billing, schedule)
    loaded = _load(billing, organization_id, subscription_id, None)
    if isinstance(loaded, ActionResult):
        return loaded
    sub = loaded
    fresh = expected_version is None or sub.version == expected_version
    moved = kind.move(sub, at) if fresh else None
    if moved is not None:
        stored, draft = _start_period(billing, sub, moved, at)
        return _charge_period(
            billing, stored, draft, at, chosen, on_paid=kind.on_paid, on_failed=kind.on_failed
        )
    # Resuming a charge left in progress: not stale if only its own first write happened since.
    resumable = expected_version is None or sub.version in {expected_version, expected_version + 1}
    left = _period_draft(billing, sub, kind.billing_reason) if resumable and kind.in_progress(sub) else None
    if left is not None:
        return _charge_period(billing, sub, left, at, chosen, on_paid=kind.on_paid, on_failed=kind.on_failed)
    due_at = kind.due_at(sub)
    if not fresh:
        return _skip("stale", sub)
    return _early(due_at, sub) if due_at is not None and at < due_at else _skip("not_due", sub)


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
    loaded = _load(billing, organization_id, subscription_id, expected_version)
    if isinstance(loaded, ActionResult):
        return loaded
    sub = loaded
    ends = _trial_end_due(sub)
    if ends is None or at >= ends:
        return _skip("not_due", sub)
    if at < ends - notice:
        return _early(ends - notice, sub)
    billing.publish(organization_id, at, ("billing.subscription.trial_will_end", sub.public_data()))
    return ActionResult("done", "published", sub)


def _trial_end_due(sub: Subscription) -> datetime | None:
    if sub.status != "trialing" or sub.trial_over_awaiting_payment:
        return None
    return sub.trial_ends_at


_TRIAL_END = _PeriodKind(
    move=subs.end_trial,
    billing_reason="subscription_create",
    in_progress=lambda sub: sub.trial_over_awaiting_payment,
    due_at=_trial_end_due,
    on_paid=subs.trial_converted,
    on_failed=subs.trial_payment_failed,
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
    return subs.next_renewal_at(sub)


_RENEWAL = _PeriodKind(
    move=subs.renew,
    billing_reason="subscription_cycle",
    in_progress=lambda sub: sub.status == "active",
    due_at=_renewal_due,
    on_paid=_keep_active,
    on_failed=subs.renewal_payment_failed,
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


# -- dunning ----------------------------------------------------------------------------------------------
def _retry_target(
    billing: Billing, organization_id: str, invoice_id: str, attempt_index: int, at: datetime
) -> tuple[Invoice, Subscription, datetime] | ActionResult:
    """The invoice, its past-due subscription and the retry's planned moment, or why not now."""
    try:
        invoice = billing.invoices.get(organization_id, invoice_id)
    except InvoiceNotFound:
        return _skip("not_found")
    sub = billing.subscriptions.current(organization_id)
    if invoice.status not in inv.UNPAID_STATUSES:
        return _skip("not_unpaid", sub, invoice)
    if (
        sub is None
        or sub.id != invoice.subscription_id
        or sub.status != "past_due"
        or invoice.retry_count != attempt_index
    ):
        return _skip("stale", sub, invoice)
    planned = invoice.next_retry_at
    if planned is None:
        return _skip("not_due", sub, invoice)
    if at < planned:
        return _early(planned, sub, invoice)
    return invoice, sub, planned


def _retry_charge(
    billing: Billing, invoice: Invoice, sub: Subscription, planned: datetime, at: datetime
) -> tuple[ChargeOutcome, Payment | None]:
    recorded = _recorded_attempts(billing, invoice)
    settled = next((p for p in recorded if p.status == "succeeded" and p.purpose == "invoice"), None)
    if settled is not None:
        return "paid", settled
    if any(p.status == "failed" and p.created_at >= planned for p in recorded):
        return "payment_failed", None  # this retry was declined already: not again
    return _charge(billing, invoice, _method_for(billing, sub), at)


def retry_payment_action(
    billing: Billing,
    organization_id: str,
    invoice_id: str,
    attempt_index: int,
    at: datetime,
    *,
    schedule: Sequence[timedelta] | None = None,
) -> ActionResult:
    """Dunning retry ``attempt_index`` (1..len(schedule)) of an open/overdue invoice of a
    ``past_due`` subscription (module docstring). Paid → invoice paid + ``active`` in one save;
    failed → the retry recorded with the next one's date (``next_retry_at`` in the result); the
    last one failed → ``uncollectible`` + ``cancelled`` (Free) in one save. A pending payment (a pay
    page) is kept on the invoice and counts as a failure for the schedule; paying it later pays the
    invoice."""
    schedule = _schedule_of(billing, schedule)
    if not 1 <= attempt_index <= len(schedule):
        raise ValueError(f"retry {attempt_index} is not in a schedule of {len(schedule)}")
    target = _retry_target(billing, organization_id, invoice_id, attempt_index, at)
    if isinstance(target, ActionResult):
        return target
    invoice, sub, planned = target
    invoice = _wallet_first(billing, invoice, at)  # topped up since the last try: the wallet pays first
    events: list[Event] = []
    current = invoice
    if current.status == "open" and at >= current.due_date:
        current = inv.mark_overdue(current, at)
        events.append(("billing.invoice.overdue", invoice_data(current)))
    outcome: ChargeOutcome
    if current.amount_due:
        outcome, payment = _retry_charge(billing, current, sub, planned, at)
    else:
        outcome, payment = "paid", None
    if outcome == "paid":
        paid = inv.mark_paid(current, payment.amount if payment else 0, at)
        recovered = subs.payment_recovered(sub, at)
        if recovered is None:  # not past_due: checked in _retry_target
            raise AssertionError("a past-due subscription recovers")
        billing.subscriptions.save(recovered, sub.version, invoices=[(paid, invoice.version)])
        events += [
            ("billing.invoice.paid", invoice_data(paid)),
            ("billing.subscription.updated", recovered.public_data()),
        ]
        billing.publish(organization_id, at, *events)
        return ActionResult("done", "paid", recovered, paid)

    if payment is not None:  # pending: kept where the payer completes it; dunning goes on
        current = _awaiting(current, payment, at)
    if attempt_index < len(schedule):
        next_at = planned + (schedule[attempt_index] - schedule[attempt_index - 1])
        retried = inv.record_retry(current, at, next_at)
        billing.invoices.replace(retried, invoice.version)
        events.append(("billing.invoice.payment_failed", invoice_data(retried)))
        billing.publish(organization_id, at, *events)
        return ActionResult("done", outcome, sub, retried, next_at)

    given_up = inv.mark_uncollectible(inv.record_retry(current, at, None), at)
    cancelled = subs.retries_exhausted(sub, at)
    if cancelled is None:
        raise AssertionError("a past-due subscription is cancelled when retries are exhausted")
    billing.subscriptions.save(cancelled, sub.version, invoices=[(given_up, invoice.version)])
    events += [
        ("billing.invoice.payment_failed", invoice_data(given_up)),
        ("billing.subscription.cancelled", cancelled.public_data()),
    ]
    billing.publish(organization_id, at, *events)
    return ActionResult("done", "retries_exhausted", cancelled, given_up)


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
    loaded = _load(billing, organization_id, subscription_id, expected_version)
    if isinstance(loaded, ActionResult):
        return loaded
    sub = loaded
    ended = subs.end_grace(sub, at)
    if ended is None:
        if sub.status == "grace_period" and sub.grace_period_ends_at is not None:
            return _early(sub.grace_period_ends_at, sub)
        left = _period_draft(billing, sub, "subscription_cycle") if _ended_by_grace(sub) else None
        if left is not None:
            return _charge_final_invoice(billing, sub, left, at)
        return _skip("not_due", sub)
    final = _final_invoice(billing, sub, at)
    billing.subscriptions.save(ended, sub.version, invoices=[(final, None)] if final else ())
    billing.publish(organization_id, at, ("billing.subscription.cancelled", ended.public_data()))
    if final is not None:
        return _charge_final_invoice(billing, ended, final, at)
    return ActionResult("done", "cancelled", ended)


def _ended_by_grace(sub: Subscription) -> bool:
    return sub.status == "cancelled" and sub.cancel_at_period_end and sub.grace_period_ends_at is not None


def expire_incomplete_action(
    billing: Billing, organization_id: str, subscription_id: str, expected_version: int | None, at: datetime
) -> ActionResult:
    """The first payment never came: ``cancelled``, and its open first invoice voided in the same
    save (nothing is owed for a subscription that never started; what the wallet paid of it goes
    back to the wallet first)."""
    loaded = _load(billing, organization_id, subscription_id, expected_version)
    if isinstance(loaded, ActionResult):
        return loaded
    sub = loaded
    expired = subs.expire_incomplete(sub, at)
    if expired is None:
        if sub.status == "incomplete" and sub.incomplete_expires_at is not None:
            return _early(sub.incomplete_expires_at, sub)
        return _skip("not_due", sub)
    unpaid = [
        invoice
        for invoice in billing.invoices.list_for_organization(organization_id)
        if invoice.subscription_id == sub.id
        and invoice.billing_reason == "subscription_create"
        and invoice.status in {"draft", *inv.UNPAID_STATUSES}
    ]
    voided = [void_returning_wallet_credit(billing, invoice, at) for invoice in unpaid]
    billing.subscriptions.save(expired, sub.version, invoices=voided)
    billing.publish(organization_id, at, ("billing.subscription.cancelled", expired.public_data()))
    return ActionResult("done", "cancelled", expired, voided[0][0] if voided else None)


# -- what falls due (test clocks) -------------------------------------------------------------------
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
    schedule = _schedule_of(billing, schedule)
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
    elif _ended_by_grace(sub):
        name, reason = "end_grace", "subscription_cycle"
    else:
        return None
    left = _period_draft(billing, sub, reason)
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
