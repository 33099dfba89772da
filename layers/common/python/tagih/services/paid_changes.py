"""Paid changes of a subscription (a plan change, an add-on): charged once, then written with
their paid invoice in one transaction.

``plan_changes`` and ``addons`` decide a change and its lines; ``charge_subscription_change``
charges the change's draft while it is still a draft, once per version of the subscription however
many requests race, and writes the changed subscription with the paid invoice. How that holds is
the comment above ``MAX_CHANGE_TRIES``; what happens when the subscription moved during the charge
is ``_commit_paid_change``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from aws_lambda_powertools import Logger

from tagih import clock
from tagih.domain import invoices as inv
from tagih.domain.errors import (
    BillingError,
    ChargeInDoubt,
    GatewayUnavailable,
    InvoiceNotFound,
    PaymentDeclined,
    VersionConflict,
)
from tagih.domain.gateway_names import FIRST_ATTEMPT
from tagih.domain.invoices import Invoice, invoice_data
from tagih.domain.subscriptions import Subscription
from tagih.ids import derived_id
from tagih.services.charging import charge_invoice, paying_method

if TYPE_CHECKING:
    from tagih.domain.payment_methods import PaymentMethod
    from tagih.domain.payments import Payment
    from tagih.services.context import Billing

logger = Logger()


# How a paid change is kept from charging twice (``change_plan``):
#
# The right to charge for changing version ``v`` of a subscription is the conditional write of the
# charge's payment record, keyed by a reference derived from (subscription, ``v``, try): the change's
# invoice id is deterministic (``change_invoice_id``), and so is its charge reference. Two requests
# that read the same version compete for that one write BEFORE any gateway call: the winner charges,
# the loser gets 409 ``version_conflict`` and never reaches the gateway. A request that reads the
# subscription after the winner committed sees the next version (409 with ``expected_version``, or a
# change from the new plan). Nothing else is written before the charge succeeds: a declined card
# leaves only its failed payment record (the next try of the same change takes the next try number),
# the subscription keeps its version and no invoice is kept.
#
# Rejected alternatives: bumping the subscription's version as a claim before charging does not stop
# a request that reads the bumped version during the charge (it would claim and charge again), and
# undoing it after a decline leaves a version change with nothing changed; writing the draft invoice
# as the claim needs a draft to be deleted after a decline, which the stores do not offer on its own.
MAX_CHANGE_TRIES = 10  # declined charges for one change of one version before refusing more


# A ``processing`` claim older than this was left by a crashed request (the functions time out after
# 15 s): charging it again with the same reference is what ``charging.charge_attempt`` is built for.
ABANDONED_CHARGE = timedelta(minutes=2)


MAX_CHANGE_COMMITS = 3


class PlanChanged(NamedTuple):
    subscription: Subscription
    # The prorated invoice: paid; ``open`` with a ``payment_url`` while an asynchronous payment is
    # awaited (the plan is then unchanged); ``None`` when nothing is invoiced now.
    invoice: Invoice | None


def change_invoice_id(subscription: Subscription, attempt: int) -> str:
    """The id of the invoice for try ``attempt`` of a change of ``subscription`` at its version: the
    same for every request that read that version, so their charges share one reference."""
    return derived_id("inv", f"plan-change:{subscription.id}:{subscription.version}:{attempt}")


def change_moment(billing: Billing, current: Subscription, now: datetime) -> datetime:
    """When a change of ``current`` (at its version) is priced: ``now``, unless an earlier request's
    try of it is claimed and not declined (in flight, awaiting its payment, or charged): then when
    that try was claimed, so that a retry after a crash decides the same lines for the same amount
    and finishes that try under its reference, instead of being refused for a proration computed
    a few seconds later. One read when no change of this version was tried."""
    from tagih.domain.gateway_names import charge_reference

    for attempt in range(1, MAX_CHANGE_TRIES + 1):
        reference = charge_reference(change_invoice_id(current, attempt), FIRST_ATTEMPT)
        tried = billing.payments.get(current.organization_id, reference)
        if tried is None:
            return now
        if tried.status != "failed":
            return tried.created_at
    return now


@dataclass(frozen=True)
class Decided:
    """A change decided on one version: the lines it invoices now and the subscription it makes."""

    lines: list[inv.InvoiceLine]
    changed: Subscription


@dataclass(frozen=True)
class SubscriptionChange:
    """A paid change (a plan change, an add-on) being carried out: decided on ``base`` (the version
    read) at ``now``. ``redecide`` decides the same change on a newer version (None, or a
    ``BillingError``, when it no longer applies)."""

    billing: Billing
    base: Subscription
    now: datetime
    decided: Decided
    redecide: Callable[[Subscription], Decided | None]


def charge_subscription_change(change: SubscriptionChange, draft: Invoice) -> PlanChanged:
    """Charge a change's draft invoice, once per version of the subscription however many requests
    race (see the comment above ``MAX_CHANGE_TRIES``), and write the change with its paid invoice."""
    from tagih.domain.payments import processing_claim  # loads only on the charging path (cold start)

    billing, current, now = change.billing, change.base, change.now
    method = paying_method(
        billing,
        current.organization_id,
        subscription=current,
        required="This change is charged at once; add a payment method first.",
    )
    for attempt in range(1, MAX_CHANGE_TRIES + 1):
        candidate = draft.model_copy(update={"id": change_invoice_id(current, attempt)})
        claim = processing_claim(
            organization_id=candidate.organization_id,
            subject_id=candidate.id,
            attempt=FIRST_ATTEMPT,
            purpose="invoice",
            gateway=method.gateway,
            payment_method_id=method.id,
            amount=candidate.amount_due,
            currency=candidate.currency,
            at=now,
        )
        existing = billing.payments.claim(claim)
        if existing is None:  # ours: no other request may charge this change of this version
            return _charge_claimed_change(change, candidate, method, claim)
        if existing.status == "failed":  # a declined try: the next one gets its own reference
            _void_unpaid_change_invoice(billing, existing, now)
            continue
        # Another request holds this try. What it charges is its invoice if stored (a proration
        # computed a few seconds apart differs), else what we would charge.
        charged = _stored_invoice_or(billing, candidate)
        if charged.status == "paid":
            # An asynchronous payment of this change settled (and applied it, or was logged for a
            # refund): charging the same change again would make the customer pay twice.
            raise VersionConflict(
                f"This change was paid on invoice {charged.id}; read the subscription again."
            )
        if (existing.amount, existing.currency) != (charged.amount_due, charged.currency):
            raise VersionConflict(
                "Another change of this subscription is being paid; read the subscription again."
            )
        if existing.status == "processing":
            # Measured on the clock, not ``now``: a retry's change is priced at the claim's moment.
            if clock.now() - existing.updated_at < ABANDONED_CHARGE:
                raise VersionConflict(
                    "This change is being charged by another request; read the subscription again shortly."
                )
            return _charge_claimed_change(change, charged, method, existing)
        # succeeded or pending: an earlier request charged this very change and did not finish
        # recording it (it crashed, or is finishing right now): finish it, never charge again.
        return _record_change_payment(change, charged, existing)
    raise PaymentDeclined(
        f"{MAX_CHANGE_TRIES} charges for this change were declined; use another payment method or "
        "contact support.",
        gateway=method.gateway,
    )


def _charge_claimed_change(
    change: SubscriptionChange, candidate: Invoice, method: PaymentMethod, claim: Payment
) -> PlanChanged:
    billing = change.billing
    try:
        # ``charging.charge_attempt`` finds our claim and carries it out (its "left processing" path).
        payment = charge_invoice(billing, candidate, method, FIRST_ATTEMPT, change.now)
    except ChargeInDoubt:
        raise  # the gateway may have the money: the claim stays for the retry (or the janitor)
    except (PaymentDeclined, GatewayUnavailable):
        # A decline is recorded as failed and a gateway fault released the claim already; a fault
        # before the gateway was asked (its customer record) leaves our claim: release it, so the
        # same change can be tried again at once. Nothing else was written.
        billing.payments.release_claim(claim.organization_id, claim.reference, claim.version)
        raise
    return _record_change_payment(change, candidate, payment)


def _void_unpaid_change_invoice(billing: Billing, failed: Payment, now: datetime) -> None:
    """An asynchronous try that expired left its invoice open: void it, so nobody pays for a change
    that was not made. A declined card never stored one."""
    try:
        invoice = billing.invoices.get(failed.organization_id, failed.subject_id)
    except InvoiceNotFound:
        return
    if invoice.status in inv.UNPAID_STATUSES:
        try:
            billing.invoices.replace(inv.void(invoice, now), invoice.version)
        except VersionConflict:
            logger.info("change invoice moved while voiding it", extra={"invoice_id": invoice.id})


def _stored_invoice_or(billing: Billing, candidate: Invoice) -> Invoice:
    try:
        return billing.invoices.get(candidate.organization_id, candidate.id)
    except InvoiceNotFound:
        return candidate


def _stored_change_invoice(billing: Billing, candidate: Invoice, now: datetime) -> Invoice:
    """The change's invoice, numbered: written and finalized now, or as an earlier request left it."""
    try:
        stored = billing.invoices.get(candidate.organization_id, candidate.id)
    except InvoiceNotFound:
        billing.invoices.save_draft(candidate)  # VersionConflict if a racing request just did
        stored = candidate
    return billing.invoices.finalize(stored, now) if stored.status == "draft" else stored


def _record_change_payment(change: SubscriptionChange, candidate: Invoice, payment: Payment) -> PlanChanged:
    billing, base, now = change.billing, change.base, change.now
    from tagih.domain.payments import awaiting_payment  # the charging path only (cold start)

    org = base.organization_id
    invoice = _stored_change_invoice(billing, candidate, now)
    if payment.status != "succeeded":  # pending: the plan stays until the payment settles
        if invoice.payment_url is not None or invoice.status not in inv.UNPAID_STATUSES:
            return PlanChanged(base, invoice)
        awaiting = awaiting_payment(invoice, payment, now)
        billing.invoices.replace(awaiting, invoice.version)
        billing.publish(org, now, ("billing.invoice.created", invoice_data(awaiting)))
        return PlanChanged(base, awaiting)
    if invoice.status != "open":
        raise VersionConflict(f"Invoice {invoice.id} was already recorded; read the subscription again.")
    paid = inv.mark_paid(invoice, payment.amount, now)
    changed = _commit_paid_change(change, invoice, paid)
    billing.publish(
        org,
        now,
        ("billing.subscription.updated", changed.public_data()),
        ("billing.invoice.created", invoice_data(invoice)),
        ("billing.invoice.paid", invoice_data(paid)),
    )
    return PlanChanged(changed, paid)


def _commit_paid_change(change: SubscriptionChange, finalized: Invoice, paid: Invoice) -> Subscription:
    """Write the changed subscription with its paid invoice, in ONE transaction.

    The charge is made, so the change should land: if the subscription moved meanwhile (another
    write between our read and now), it is read again and the change applied to it, provided it
    would invoice exactly the lines that were paid (``expected_version`` was checked when the
    request began, before the charge; a write that kept the terms does not undo a paid change).
    Otherwise (cancelled, suspended, repriced) the paid invoice is recorded on its own, the payment
    flagged for a refund in the logs, and 409."""
    billing, base, decided, now = change.billing, change.base, change.decided, change.now
    org = base.organization_id
    for _ in range(MAX_CHANGE_COMMITS):
        try:
            billing.subscriptions.save(decided.changed, base.version, invoices=[(paid, finalized.version)])
            return decided.changed
        except VersionConflict:
            fresh = billing.subscriptions.current(org)
        if fresh is None or fresh.id != base.id or fresh.version == base.version:
            break  # gone, replaced, or the invoice (not the subscription) moved: another request recorded it
        try:
            again = change.redecide(fresh)
        except BillingError:
            break
        if again is None or again.lines != decided.lines:
            break
        base, decided = fresh, again
    billing.invoices.replace(paid, finalized.version)  # VersionConflict: another request recorded it
    logger.error(
        "a paid subscription change could not be applied; refund the payment",
        extra={"organization_id": org, "subscription_id": base.id, "invoice_id": paid.id},
    )
    billing.publish(
        org,
        now,
        ("billing.invoice.created", invoice_data(finalized)),
        ("billing.invoice.paid", invoice_data(paid)),
    )
    raise VersionConflict(
        f"The subscription changed while the change was being charged; the payment is recorded on "
        f"invoice {paid.id} and the plan was not changed. Contact support for a refund."
    )
