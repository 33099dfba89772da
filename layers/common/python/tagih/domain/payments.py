"""Payments: one record per charge attempt, charged at most once, settled at most once.

A ``Payment`` is keyed by the attempt's deterministic reference (``charge_reference(invoice_id,
attempt)``), which is also the Midtrans ``order_id`` and the Stripe idempotency key. Two services
live here:

- ``charge_invoice_attempt`` claims the reference with a conditional write *before* calling the
  gateway, so a retried Lambda or a double click finds the claim and makes no second charge. A
  claim left in ``processing`` (a crash between claim and outcome) is retried with the same
  reference, which the gateway's own idempotency makes safe. A transient fault removes the claim:
  no charge is recorded and the caller answers 503.
- ``record_verified_payment`` is the one call through which a confirmed (or failed) payment reaches
  billing: invoices and the wallet plug in as a ``PaymentListener``. The status comes from the
  gateway's status API (the truth), never from the notification's own claims; the transition and
  the processed-event marker are one transaction, so a duplicate delivery changes nothing even
  when two deliveries race.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from aws_lambda_powertools import Logger

from tagih import clock
from tagih.domain.errors import Conflict, GatewayUnavailable, PaymentDeclined
from tagih.gateways.names import GatewayName

if TYPE_CHECKING:
    from tagih.gateways.port import (
        ChargeRequest,
        ChargeResult,
        GatewayNotification,
        PaymentGateway,
        PaymentInstructions,
        PaymentStatus,
    )

logger = Logger()  # same service and formatter as the handler's (POWERTOOLS_SERVICE_NAME)

PaymentPurpose = Literal["invoice", "wallet_top_up"]
PaymentRecordStatus = Literal["processing", "pending", "succeeded", "failed"]
OutcomeKind = Literal["settled", "failed", "duplicate", "ignored"]

FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed"})
OPEN_STATUSES: frozenset[str] = frozenset({"processing", "pending"})
FRAUD_ACCEPT = "accept"
MAX_TRANSITION_TRIES = 3  # a lost version race re-reads and decides again; more means a bug


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


# -- charging ---------------------------------------------------------------------------------------
def charge_invoice_attempt(
    gateway: PaymentGateway,
    payments: PaymentStore,
    request: ChargeRequest,
    purpose: PaymentPurpose,
    *,
    payment_method_id: str | None = None,
    now: Callable[[], datetime] = clock.now,
) -> Payment:
    """Charge ``request`` once per reference, however often this is called.

    Returns the ``succeeded`` or ``pending`` payment; raises ``PaymentDeclined`` (recorded as
    ``failed``) or ``GatewayUnavailable`` (nothing recorded).
    """
    moment = now()
    claim = Payment(
        organization_id=request.organization_id,
        reference=request.reference,
        purpose=purpose,
        subject_id=request.invoice_id,
        attempt=request.attempt,
        gateway=gateway.name,
        payment_method_id=payment_method_id,
        amount=request.amount,
        currency=request.currency,
        status="processing",
        created_at=moment,
        updated_at=moment,
    )
    existing = payments.claim(claim)
    if existing is not None:
        _same_charge(existing, claim)
        if existing.status != "processing":
            logger.info("charge attempt already made", extra=_log_fields(existing))
            return _answer(existing)
        # A crashed earlier try: the gateway may or may not have the charge; its idempotency on the
        # same reference makes asking again safe.
        logger.info("resuming a charge attempt left processing", extra=_log_fields(existing))
        claim = existing

    try:
        result = gateway.charge(request)
    except GatewayUnavailable:
        payments.release_claim(claim.organization_id, claim.reference, claim.version)
        raise
    except PaymentDeclined as declined:  # an adapter may raise rather than return "declined"
        from tagih.gateways.port import ChargeResult  # loaded with the adapter; not at import

        result = ChargeResult(
            outcome="declined",
            gateway=gateway.name,
            reference=claim.reference,
            decline_reason=declined.reason,
        )
    if result.outcome == "transient":
        payments.release_claim(claim.organization_id, claim.reference, claim.version)
        raise GatewayUnavailable(gateway=gateway.name)

    recorded = _with_result(claim, result, now())
    if not payments.save_outcome(recorded, claim.version):
        # A notification (Stripe's webhook may beat the API response) moved it first: its state wins.
        current = payments.get(claim.organization_id, claim.reference)
        if current is None:
            raise GatewayUnavailable("The charge attempt was lost; retry.", gateway=gateway.name)
        recorded = current
    logger.info("charge attempt recorded", extra=_log_fields(recorded))
    return _answer(recorded)


def _same_charge(existing: Payment, claim: Payment) -> None:
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


def _with_result(claim: Payment, result: ChargeResult, moment: datetime) -> Payment:
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


def _answer(payment: Payment) -> Payment:
    """The same answer for the first call and every retry of it."""
    if payment.status == "failed":
        raise PaymentDeclined(payment.decline_reason or "declined", gateway=payment.gateway)
    return payment


# -- notifications -----------------------------------------------------------------------------------
def receive_notification(
    gateway: PaymentGateway,
    payments: PaymentStore,
    gateway_events: GatewayEventStore,
    headers: dict[str, str],
    raw_body: bytes,
    *,
    listener: PaymentListener = NO_LISTENER,
    now: Callable[[], datetime] = clock.now,
) -> NotificationOutcome:
    """A gateway's notification, from its raw body to the payment change it stands for.

    ``InvalidSignature`` when the signature does not hold (nothing is read or written);
    ``GatewayUnavailable`` when the gateway's status API cannot be asked (the gateway retries).
    """
    notification = gateway.verify_notification(headers, raw_body)
    if notification.reference is None or not _is_payment_event(notification):
        return NotificationOutcome("ignored", reason=f"not a payment event ({notification.event_type})")
    if gateway_events.is_processed(notification.gateway, notification.event_id):
        return _duplicate(
            payments.find_by_reference(notification.reference), listener, "event already processed"
        )
    payment = payments.find_by_reference(notification.reference)
    if payment is None:
        # Not a charge Tagih recorded: a card verification, another system on the same merchant
        # account, a dashboard test. Acknowledged, so the gateway stops retrying; logged by the caller.
        return NotificationOutcome("ignored", reason="unknown reference")
    charge_id = payment.gateway_charge_id or notification.raw_fields.get("payment_intent")
    # The notification's own claims are not trusted beyond its signature: ask the gateway.
    status = gateway.fetch_status(notification.reference, charge_id)
    return record_verified_payment(payments, gateway_events, notification, status, listener=listener, now=now)


def _is_payment_event(notification: GatewayNotification) -> bool:
    if notification.gateway == "stripe":
        return notification.event_type.startswith("payment_intent.")
    return True


def record_verified_payment(
    payments: PaymentStore,
    gateway_events: GatewayEventStore,
    notification: GatewayNotification,
    status: PaymentStatus,
    *,
    listener: PaymentListener = NO_LISTENER,
    now: Callable[[], datetime] = clock.now,
) -> NotificationOutcome:
    """Apply the gateway's own status (``status``, fetched after ``notification`` was verified).

    ``succeeded`` needs the charged amount and currency and, for Midtrans, ``fraud_status`` accept;
    ``failed`` fails a payment still open. Anything else — still pending, an older state delivered
    late, a failure after success — changes nothing.
    """
    if gateway_events.is_processed(notification.gateway, notification.event_id):
        payment = payments.find_by_reference(status.reference)
        return _duplicate(payment, listener, "event already processed")

    for _ in range(MAX_TRANSITION_TRIES):
        payment = payments.find_by_reference(notification.reference or status.reference)
        if payment is None:
            return NotificationOutcome("ignored", reason="unknown reference")
        decision = _decide(payment, status, now())
        if isinstance(decision, NotificationOutcome):
            if decision.kind == "duplicate":
                return _duplicate(payment, listener, decision.reason)
            return decision
        event = ProcessedEvent(
            gateway=notification.gateway,
            event_id=notification.event_id,
            reference=payment.reference,
            processed_at=decision.updated_at,
        )
        written = payments.transition(decision, payment.version, event)
        if written == "duplicate_event":
            return _duplicate(
                payments.find_by_reference(status.reference), listener, "event already processed"
            )
        if written == "version_conflict":
            continue  # another delivery moved it; decide again on what is stored now
        return _announce(decision, listener)
    raise Conflict(f"Payment {status.reference!r} kept changing while a notification was applied.")


def _decide(payment: Payment, status: PaymentStatus, moment: datetime) -> Payment | NotificationOutcome:
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


def _settled(payment: Payment) -> PaymentSettled:
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


def _announce(payment: Payment, listener: PaymentListener) -> NotificationOutcome:
    if payment.status == "succeeded":
        settled = _settled(payment)
        listener.on_payment_settled(settled)
        return NotificationOutcome("settled", payment=payment, settled=settled)
    failed = PaymentFailed(
        organization_id=payment.organization_id,
        reference=payment.reference,
        purpose=payment.purpose,
        subject_id=payment.subject_id,
        gateway=payment.gateway,
        reason=payment.decline_reason or "failed",
        failed_at=payment.updated_at,
    )
    listener.on_payment_failed(failed)
    return NotificationOutcome("failed", payment=payment, failed=failed)


def _duplicate(payment: Payment | None, listener: PaymentListener, reason: str | None) -> NotificationOutcome:
    settled = None
    if payment is not None and payment.status == "succeeded":
        # Idempotent listeners hear it again: the first delivery may have crashed after the commit.
        settled = _settled(payment)
        listener.on_payment_settled(settled)
    return NotificationOutcome("duplicate", payment=payment, settled=settled, reason=reason)


def _log_fields(payment: Payment) -> dict[str, object]:
    """Identifiers and states only: never a token, a card field or a gateway body."""
    return {
        "reference": payment.reference,
        "gateway": payment.gateway,
        "status": payment.status,
        "attempt": payment.attempt,
    }
