"""Payments: one record per charge attempt, charged at most once, settled at most once.

A ``Payment`` is keyed by the attempt's deterministic reference (``charge_reference(invoice_id,
attempt)``), which is also the Midtrans ``order_id`` and the Stripe idempotency key. This module
holds the records, their store's Protocol and the pure decisions on them; two services use them:

- ``services.charging.charge_attempt`` claims the reference with a conditional write (the
  ``processing_claim``) *before* calling the gateway, so a retried Lambda or a double click finds
  the claim and makes no second charge. A claim left in ``processing`` (a crash between claim and
  outcome, or a gateway that did not answer) is retried with the same reference, which the
  gateway's own idempotency makes safe. Only a fault the gateway refused before doing anything
  removes the claim: no charge is recorded and the caller answers 503.
- ``services.notifications.record_verified_payment`` is the one call through which a confirmed (or
  failed) payment reaches billing: invoices and the wallet plug in as a ``PaymentListener``. The
  status comes from the gateway's status API (the truth), never from the notification's own
  claims (``decide_notification``); the transition and the processed-event marker are one
  transaction, so a duplicate delivery changes nothing even when two deliveries race.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from tagih.domain.errors import Conflict, PaymentDeclined
from tagih.domain.gateway_names import GatewayName, charge_reference

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tagih.domain.gateway import (
        ChargeResult,
        GatewayNotification,
        PaymentInstructions,
        PaymentStatus,
    )
    from tagih.domain.invoices import Invoice
    from tagih.domain.payment_methods import PaymentMethod


PaymentPurpose = Literal["invoice", "wallet_top_up"]
PaymentRecordStatus = Literal["processing", "pending", "succeeded", "failed"]
OutcomeKind = Literal["settled", "failed", "duplicate", "ignored"]

FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed"})
OPEN_STATUSES: frozenset[str] = frozenset({"processing", "pending"})
FRAUD_ACCEPT = "accept"
MAX_TRANSITION_TRIES = 3  # a lost version race re-reads and decides again; more means a bug
MAX_ATTEMPTS = 99  # charge attempts of one invoice: far beyond any real one; only a bug loops this long


class ChargeReferenceConflict(Conflict):
    """The reference is already recorded for a different charge (another amount or subject)."""

    code = "charge_reference_conflict"
    default_message = "This charge attempt was already made with different details."


@dataclass(frozen=True)
class Payment:
    organization_id: str
    reference: str  # charge_reference(subject_id, attempt): Midtrans order_id, Stripe idempotency key
    purpose: PaymentPurpose
    subject_id: str  # the invoice or wallet transaction the money is for
    attempt: int
    gateway: GatewayName
    payment_method_id: str | None
    amount: int  # in Tagih's unit for the currency
    currency: str
    status: PaymentRecordStatus
    created_at: datetime
    updated_at: datetime
    version: int = 1
    gateway_charge_id: str | None = None
    decline_reason: str | None = None
    payment_url: str | None = None
    instructions: PaymentInstructions | None = None
    # A reusable method reference the gateway handed back on first use (Midtrans saved_token_id),
    # for the payment-method code to keep; never a card number or a one-time token.
    reusable_method_id: str | None = None


@dataclass(frozen=True)
class PaymentSettled:
    """A payment that is now confirmed by the gateway: what invoices and the wallet act on."""

    organization_id: str
    reference: str
    purpose: PaymentPurpose
    subject_id: str
    gateway: GatewayName
    amount: int
    currency: str
    gateway_charge_id: str | None
    settled_at: datetime


@dataclass(frozen=True)
class PaymentFailed:
    """An asynchronous payment the gateway gave up on (expired, denied, cancelled)."""

    organization_id: str
    reference: str
    purpose: PaymentPurpose
    subject_id: str
    gateway: GatewayName
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class NotificationOutcome:
    """What one verified notification did. ``reason`` says why it was ignored (for logs)."""

    kind: OutcomeKind
    payment: Payment | None = None
    settled: PaymentSettled | None = None
    failed: PaymentFailed | None = None
    reason: str | None = None
    # Money moved that Tagih will not count (another amount, a fraud hold): a person must look.
    needs_review: bool = False


@dataclass(frozen=True)
class ProcessedEvent:
    """The marker that a gateway event changed a payment; its key is ``GWEVENT#<gateway>#<id>``."""

    gateway: GatewayName
    event_id: str
    reference: str
    processed_at: datetime


# -- ports ------------------------------------------------------------------------------------------
class PaymentStore(Protocol):
    def claim(self, payment: Payment) -> Payment | None:
        """Write ``payment`` only if its reference is new; otherwise return the stored one."""
        ...

    def get(self, organization_id: str, reference: str) -> Payment | None: ...

    def find_by_reference(self, reference: str) -> Payment | None:
        """The payment behind a gateway reference, without knowing its organization."""
        ...

    def save_outcome(self, payment: Payment, expected_version: int) -> bool:
        """Replace a ``processing`` claim at ``expected_version``; False when it moved meanwhile."""
        ...

    def release_claim(self, organization_id: str, reference: str, expected_version: int) -> None:
        """Delete a claim still ``processing`` at ``expected_version``; a no-op otherwise."""
        ...

    def transition(self, payment: Payment, expected_version: int, event: ProcessedEvent) -> TransitionResult:
        """In one transaction: write ``payment`` if still at ``expected_version``, and record ``event``
        as processed if it never was. Nothing is written unless both hold."""
        ...


TransitionResult = Literal["written", "duplicate_event", "version_conflict"]


class GatewayEventStore(Protocol):
    def is_processed(self, gateway: GatewayName, event_id: str) -> bool: ...


class PaymentListener(Protocol):
    """How invoices and the wallet learn of payments. Must be idempotent: a redelivered
    notification of a settled payment calls ``on_payment_settled`` again (a crash between the
    commit and the listener must not lose the news)."""

    def on_payment_settled(self, settled: PaymentSettled) -> None: ...

    def on_payment_failed(self, failed: PaymentFailed) -> None: ...


class NoPaymentListener:
    """Today's listener: invoices and the wallet (later issues) replace it."""

    def on_payment_settled(self, settled: PaymentSettled) -> None:
        return None

    def on_payment_failed(self, failed: PaymentFailed) -> None:
        return None


NO_LISTENER = NoPaymentListener()


def processing_claim(
    *,
    organization_id: str,
    subject_id: str,
    attempt: int,
    purpose: PaymentPurpose,
    gateway: GatewayName,
    payment_method_id: str | None,
    amount: int,
    currency: str,
    at: datetime,
) -> Payment:
    """The record that claims attempt ``attempt`` of charging ``subject_id``, written before the
    gateway is asked: whoever writes it first may charge under its reference."""
    return Payment(
        organization_id=organization_id,
        reference=charge_reference(subject_id, attempt),
        purpose=purpose,
        subject_id=subject_id,
        attempt=attempt,
        gateway=gateway,
        payment_method_id=payment_method_id,
        amount=amount,
        currency=currency,
        status="processing",
        created_at=at,
        updated_at=at,
    )


@dataclass(frozen=True)
class AttemptPlan:
    attempt: int
    settled: Payment | None = None  # an earlier attempt that already took the money


def next_attempt(recorded: Sequence[Payment], invoice: Invoice, method: PaymentMethod) -> AttemptPlan:
    """Which attempt of ``invoice`` to charge to ``method``, from the attempts ``recorded`` (attempt
    1, 2, ... as stored): the lowest attempt with no payment yet, except that an attempt that
    already succeeded settles the invoice with that payment (the money was taken, the invoice never
    heard: a crash, a lost response), and an attempt still open (``processing`` after a crash,
    ``pending`` transfer or pay page) with the same method and amount is asked again, so the payer
    gets the same virtual account or pay link and two concurrent calls share one reference."""
    reusable: int | None = None
    for attempt, payment in enumerate(recorded, start=1):
        if payment.status == "succeeded" and payment.purpose == "invoice":
            return AttemptPlan(attempt, settled=payment)
        if (
            payment.status in OPEN_STATUSES
            and payment.payment_method_id == method.id
            and payment.amount == invoice.amount_due
        ):
            reusable = attempt
    if len(recorded) >= MAX_ATTEMPTS:
        raise Conflict(f"Invoice {invoice.id} has had {MAX_ATTEMPTS} charge attempts; contact support.")
    return AttemptPlan(reusable or len(recorded) + 1)


def settled_attempt(recorded: Sequence[Payment]) -> Payment | None:
    """The recorded attempt that took the invoice's money, if one did."""
    return next((p for p in recorded if p.status == "succeeded" and p.purpose == "invoice"), None)


def awaiting_payment(invoice: Invoice, payment: Payment, at: datetime) -> Invoice:
    """``invoice`` (still open) carrying where and how the payer completes the asynchronous
    ``payment``: its pay page, and for Midtrans its order id (``gateway_invoice_id``)."""
    return invoice.model_copy(
        update={
            "payment_url": payment.payment_url,
            "gateway_invoice_id": payment.reference if payment.gateway == "midtrans" else None,
            "version": invoice.version + 1,
            "updated_at": at,
        }
    )


def check_same_charge(existing: Payment, claim: Payment) -> None:
    if (existing.amount, existing.currency, existing.subject_id, existing.purpose, existing.gateway) != (
        claim.amount,
        claim.currency,
        claim.subject_id,
        claim.purpose,
        claim.gateway,
    ):
        raise ChargeReferenceConflict(
            f"Charge attempt {existing.reference!r} was made for {existing.amount} {existing.currency}."
        )


def with_charge_result(claim: Payment, result: ChargeResult, moment: datetime) -> Payment:
    status: PaymentRecordStatus = (
        "succeeded"
        if result.outcome == "succeeded"
        else "pending"
        if result.outcome == "pending"
        else "failed"
    )
    return replace(
        claim,
        status=status,
        version=claim.version + 1,
        updated_at=moment,
        gateway_charge_id=result.gateway_charge_id or claim.gateway_charge_id,
        decline_reason=(result.decline_reason or "declined") if status == "failed" else None,
        payment_url=result.payment_url,
        instructions=result.instructions,
        reusable_method_id=result.reusable_method_id,
    )


def charged_or_declined(payment: Payment) -> Payment:
    """The same answer for the first call and every retry of it."""
    if payment.status == "failed":
        raise PaymentDeclined(payment.decline_reason or "declined", gateway=payment.gateway)
    return payment


def is_payment_event(notification: GatewayNotification) -> bool:
    if notification.gateway == "stripe":
        return notification.event_type.startswith("payment_intent.")
    return True


def decide_notification(
    payment: Payment, status: PaymentStatus, moment: datetime
) -> Payment | NotificationOutcome:
    """The payment as it should become, or why it stays as it is."""
    if (status.gateway, status.reference) != (payment.gateway, payment.reference):
        return NotificationOutcome("ignored", payment=payment, reason="the status is of another charge")
    if status.state == "succeeded":
        return _decide_success(payment, status, moment)
    if status.state == "failed":
        return _decide_failure(payment, status, moment)
    return NotificationOutcome("ignored", payment=payment, reason=f"gateway status {status.gateway_status}")


def _decide_success(
    payment: Payment, status: PaymentStatus, moment: datetime
) -> Payment | NotificationOutcome:
    if payment.status == "succeeded":
        return NotificationOutcome("duplicate", payment=payment, reason="already succeeded")
    if (status.amount, status.currency.upper()) != (payment.amount, payment.currency):
        return NotificationOutcome(
            "ignored",
            payment=payment,
            reason="amount or currency mismatch",
            needs_review=True,
        )
    if payment.gateway == "midtrans" and status.fraud_status != FRAUD_ACCEPT:
        return NotificationOutcome(
            "ignored", payment=payment, reason=f"fraud_status {status.fraud_status}", needs_review=True
        )
    # From processing, pending — or failed: the gateway says the money was taken, and its status
    # API is the truth (a Stripe PaymentIntent whose first try failed may succeed later).
    return replace(
        payment,
        status="succeeded",
        version=payment.version + 1,
        updated_at=moment,
        decline_reason=None,
        gateway_charge_id=status.gateway_charge_id or payment.gateway_charge_id,
    )


def _decide_failure(
    payment: Payment, status: PaymentStatus, moment: datetime
) -> Payment | NotificationOutcome:
    if payment.status == "failed":
        return NotificationOutcome("duplicate", payment=payment, reason="already failed")
    if payment.status == "succeeded":
        return NotificationOutcome("ignored", payment=payment, reason="failure after success")
    return replace(
        payment,
        status="failed",
        version=payment.version + 1,
        updated_at=moment,
        decline_reason=status.gateway_status or "failed",
        gateway_charge_id=status.gateway_charge_id or payment.gateway_charge_id,
    )


def settled_payment(payment: Payment) -> PaymentSettled:
    return PaymentSettled(
        organization_id=payment.organization_id,
        reference=payment.reference,
        purpose=payment.purpose,
        subject_id=payment.subject_id,
        gateway=payment.gateway,
        amount=payment.amount,
        currency=payment.currency,
        gateway_charge_id=payment.gateway_charge_id,
        settled_at=payment.updated_at,
    )
