"""In-memory fakes for the payments service: the payment and gateway-event stores, a scripted
gateway that counts its charges, and a listener that records what it heard."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tagih.domain.errors import GatewayUnavailable
from tagih.domain.gateway import (
    AttachedMethod,
    AttachRequest,
    ChargeRequest,
    ChargeResult,
    Customer,
    GatewayNotification,
    PaymentStatus,
)
from tagih.domain.gateway_names import GatewayName
from tagih.domain.payments import Payment, PaymentFailed, PaymentSettled, ProcessedEvent, TransitionResult


class InMemoryPayments:
    """Both ``PaymentStore`` and ``GatewayEventStore``: one lock stands for one transaction."""

    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}
        self.processed_events: dict[tuple[str, str], ProcessedEvent] = {}
        self.writes = 0  # state changes of payments after their claim
        self._lock = threading.Lock()

    def claim(self, payment: Payment) -> Payment | None:
        with self._lock:
            existing = self.payments.get(payment.reference)
            if existing is not None:
                return existing
            self.payments[payment.reference] = payment
            return None

    def get(self, organization_id: str, reference: str) -> Payment | None:
        payment = self.payments.get(reference)
        return payment if payment is not None and payment.organization_id == organization_id else None

    def find_by_reference(self, reference: str) -> Payment | None:
        return self.payments.get(reference)

    def save_outcome(self, payment: Payment, expected_version: int) -> bool:
        with self._lock:
            current = self.payments.get(payment.reference)
            if current is None or current.version != expected_version or current.status != "processing":
                return False
            self.payments[payment.reference] = payment
            self.writes += 1
            return True

    def release_claim(self, organization_id: str, reference: str, expected_version: int) -> None:
        with self._lock:
            current = self.payments.get(reference)
            if current is not None and current.version == expected_version and current.status == "processing":
                del self.payments[reference]

    def transition(self, payment: Payment, expected_version: int, event: ProcessedEvent) -> TransitionResult:
        with self._lock:
            if (event.gateway, event.event_id) in self.processed_events:
                return "duplicate_event"
            current = self.payments.get(payment.reference)
            if current is None or current.version != expected_version:
                return "version_conflict"
            self.payments[payment.reference] = payment
            self.processed_events[(event.gateway, event.event_id)] = event
            self.writes += 1
            return "written"

    def is_processed(self, gateway: GatewayName, event_id: str) -> bool:
        return (gateway, event_id) in self.processed_events


@dataclass
class ScriptedGateway:
    """A ``PaymentGateway`` whose answers a test sets; it charges each reference once, like the
    real gateways' idempotency, and counts every call."""

    name: GatewayName = "midtrans"
    # succeeded | pending | declined | transient | unavailable (refused: nothing charged) |
    # lost_answer (charged, then the answer never arrived: a read timeout after capture)
    outcome: str = "succeeded"
    decline_reason: str = "Card declined by the issuer"
    statuses: dict[str, PaymentStatus] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    charges: dict[str, ChargeRequest] = field(default_factory=dict)  # reference → the charge made

    def ensure_customer(self, customer: Customer) -> str | None:
        return None

    def attach_method(self, request: AttachRequest) -> AttachedMethod:
        raise NotImplementedError

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.calls["charge"] += 1
        if self.outcome == "unavailable":
            raise GatewayUnavailable(gateway=self.name, nothing_charged=True)
        if self.outcome == "transient":
            return ChargeResult(outcome="transient", gateway=self.name, reference=request.reference)
        self.charges.setdefault(request.reference, request)
        if self.outcome == "lost_answer":
            raise GatewayUnavailable(gateway=self.name)
        if self.outcome == "declined":
            return ChargeResult(
                outcome="declined",
                gateway=self.name,
                reference=request.reference,
                decline_reason=self.decline_reason,
            )
        return ChargeResult(
            outcome=self.outcome,  # type: ignore[arg-type]  # a test sets a valid outcome
            gateway=self.name,
            reference=request.reference,
            gateway_charge_id=f"charge-{request.reference}",
            amount=request.amount,
            currency=request.currency,
            payment_url="https://pay.example/" + request.reference if self.outcome == "pending" else None,
        )

    def fetch_status(self, reference: str, gateway_charge_id: str | None = None) -> PaymentStatus:
        self.calls["fetch_status"] += 1
        return self.statuses[reference]

    def verify_notification(self, headers: dict[str, str], raw_body: bytes) -> GatewayNotification:
        raise NotImplementedError

    def cancel(self, reference: str) -> bool:
        self.calls["cancel"] += 1
        return False


@dataclass
class RecordingListener:
    settled: list[PaymentSettled] = field(default_factory=list)
    failed: list[PaymentFailed] = field(default_factory=list)

    def on_payment_settled(self, settled: PaymentSettled) -> None:
        self.settled.append(settled)

    def on_payment_failed(self, failed: PaymentFailed) -> None:
        self.failed.append(failed)


def status(
    reference: str,
    state: Any = "succeeded",
    *,
    gateway: GatewayName = "midtrans",
    amount: int = 299_000,
    currency: str = "IDR",
    fraud_status: str | None = "accept",
    gateway_status: str = "settlement",
) -> PaymentStatus:
    return PaymentStatus(
        gateway=gateway,
        reference=reference,
        state=state,
        amount=amount,
        currency=currency,
        gateway_status=gateway_status,
        fraud_status=fraud_status,
        gateway_charge_id=f"charge-{reference}",
    )
