"""Dunning: the retries of a declined period charge (``retry_payment_action``), as the dunning
timer (Step Functions) and test clocks fire them.

Retry ``i`` (1-based, ``retry_count == i`` before it runs) falls due at ``first failure +
schedule[i - 1]``; the invoice's ``next_retry_at`` holds it. The wallet pays first (topped up since
the last try); a retry whose charge was already declined (a failed payment recorded at or after
that moment, before the invoice recorded it) is recorded without charging again. Like every
lifecycle action it re-reads and re-checks its invoice and subscription and answers an
``ActionResult`` (``services.lifecycle``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tagih.domain import invoices as inv
from tagih.domain.errors import InvoiceNotFound
from tagih.domain.invoices import Invoice, invoice_data
from tagih.domain.payments import awaiting_payment, settled_attempt
from tagih.domain.subscriptions import Subscription
from tagih.domain.transitions import payment_recovered, retries_exhausted
from tagih.services.charging import recorded_attempts
from tagih.services.lifecycle import (
    ActionResult,
    Outcome,
    charge_due,
    early,
    retry_schedule_of,
    skipped,
    subscription_method,
    wallet_first,
)

if TYPE_CHECKING:
    from tagih.domain.payments import Payment
    from tagih.services.context import Billing, Event


def _retry_target(
    billing: Billing, organization_id: str, invoice_id: str, attempt_index: int, at: datetime
) -> tuple[Invoice, Subscription, datetime] | ActionResult:
    """The invoice, its past-due subscription and the retry's planned moment, or why not now."""
    try:
        invoice = billing.invoices.get(organization_id, invoice_id)
    except InvoiceNotFound:
        return skipped("not_found")
    sub = billing.subscriptions.current(organization_id)
    if invoice.status not in inv.UNPAID_STATUSES:
        return skipped("not_unpaid", sub, invoice)
    if (
        sub is None
        or sub.id != invoice.subscription_id
        or sub.status != "past_due"
        or invoice.retry_count != attempt_index
    ):
        return skipped("stale", sub, invoice)
    planned = invoice.next_retry_at
    if planned is None:
        return skipped("not_due", sub, invoice)
    if at < planned:
        return early(planned, sub, invoice)
    return invoice, sub, planned


def _retry_charge(
    billing: Billing, invoice: Invoice, sub: Subscription, planned: datetime, at: datetime
) -> tuple[Outcome, Payment | None]:
    recorded = recorded_attempts(billing.payments, invoice)
    settled = settled_attempt(recorded)
    if settled is not None:
        return "paid", settled
    if any(p.status == "failed" and p.created_at >= planned for p in recorded):
        return "payment_failed", None  # this retry was declined already: not again
    return charge_due(billing, invoice, subscription_method(billing, sub), at)


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
    schedule = retry_schedule_of(billing, schedule)
    if not 1 <= attempt_index <= len(schedule):
        raise ValueError(f"retry {attempt_index} is not in a schedule of {len(schedule)}")
    target = _retry_target(billing, organization_id, invoice_id, attempt_index, at)
    if isinstance(target, ActionResult):
        return target
    invoice, sub, planned = target
    invoice = wallet_first(billing, invoice, at)  # topped up since the last try: the wallet pays first
    events: list[Event] = []
    current = invoice
    if current.status == "open" and at >= current.due_date:
        current = inv.mark_overdue(current, at)
        events.append(("billing.invoice.overdue", invoice_data(current)))
    outcome: Outcome
    if current.amount_due:
        outcome, payment = _retry_charge(billing, current, sub, planned, at)
    else:
        outcome, payment = "paid", None
    if outcome == "paid":
        paid = inv.mark_paid(current, payment.amount if payment else 0, at)
        recovered = payment_recovered(sub, at)
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
        current = awaiting_payment(current, payment, at)
    if attempt_index < len(schedule):
        next_at = planned + (schedule[attempt_index] - schedule[attempt_index - 1])
        retried = inv.record_retry(current, at, next_at)
        billing.invoices.replace(retried, invoice.version)
        events.append(("billing.invoice.payment_failed", invoice_data(retried)))
        billing.publish(organization_id, at, *events)
        return ActionResult("done", outcome, sub, retried, next_at)

    given_up = inv.mark_uncollectible(inv.record_retry(current, at, None), at)
    cancelled = retries_exhausted(sub, at)
    if cancelled is None:
        raise AssertionError("a past-due subscription is cancelled when retries are exhausted")
    billing.subscriptions.save(cancelled, sub.version, invoices=[(given_up, invoice.version)])
    events += [
        ("billing.invoice.payment_failed", invoice_data(given_up)),
        ("billing.subscription.cancelled", cancelled.public_data()),
    ]
    billing.publish(organization_id, at, *events)
    return ActionResult("done", "retries_exhausted", cancelled, given_up)
