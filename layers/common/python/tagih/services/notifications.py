"""Gateway notifications: from a notification's raw body to the payment change it stands for.

``receive_notification`` verifies the signature and asks the gateway for the charge's status (the
truth, never the notification's own claims); ``record_verified_payment`` applies that status in one
transaction with the processed-event marker and tells the listener (``settlement``, the wallet).
The decisions are ``domain.payments``'s."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from tagih import clock
from tagih.domain.errors import Conflict
from tagih.domain.payments import (
    MAX_TRANSITION_TRIES,
    NO_LISTENER,
    GatewayEventStore,
    NotificationOutcome,
    Payment,
    PaymentFailed,
    PaymentListener,
    PaymentStore,
    ProcessedEvent,
    decide_notification,
    is_payment_event,
    settled_payment,
)

if TYPE_CHECKING:
    from tagih.domain.gateway import (
        GatewayNotification,
        PaymentGateway,
        PaymentStatus,
    )


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
    if notification.reference is None or not is_payment_event(notification):
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
        decision = decide_notification(payment, status, now())
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
        return announce(decision, listener)
    raise Conflict(f"Payment {status.reference!r} kept changing while a notification was applied.")


def announce(payment: Payment, listener: PaymentListener) -> NotificationOutcome:
    """Tell ``listener`` what became of a final ``payment`` (idempotent listeners may hear it twice)."""
    if payment.status == "succeeded":
        settled = settled_payment(payment)
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
        settled = settled_payment(payment)
        listener.on_payment_settled(settled)
    return NotificationOutcome("duplicate", payment=payment, settled=settled, reason=reason)
