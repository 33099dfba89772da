"""Applying a verified notification: the gateway's status is the truth, a payment settles once,
and mismatched, fraudulent, duplicate or out-of-order news changes nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from tagih.domain.gateway import GatewayNotification, PaymentStatus
from tagih.domain.gateway_names import GatewayName
from tagih.domain.payments import NotificationOutcome, Payment
from tagih.services.notifications import record_verified_payment
from tests.fakes.payments import InMemoryPayments, RecordingListener, status

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ORG = "org_1"
REF = "inv_Abc123-a1"


def pending_payment(
    gateway: GatewayName = "midtrans", state: Any = "pending", purpose: Any = "invoice"
) -> InMemoryPayments:
    store = InMemoryPayments()
    store.claim(
        Payment(
            organization_id=ORG,
            reference=REF,
            purpose=purpose,
            subject_id="inv_Abc123",
            attempt=1,
            gateway=gateway,
            payment_method_id="pm_1",
            amount=299_000,
            currency="IDR",
            status=state,
            created_at=NOW,
            updated_at=NOW,
        )
    )
    return store


def notification(event_id: str = "tx-1:settlement", gateway: GatewayName = "midtrans") -> GatewayNotification:
    return GatewayNotification(
        gateway=gateway,
        event_id=event_id,
        reference=REF,
        claimed_state="succeeded",
        event_type="settlement",
    )


def apply(
    store: InMemoryPayments,
    truth: PaymentStatus,
    note: GatewayNotification | None = None,
    listener: RecordingListener | None = None,
) -> NotificationOutcome:
    return record_verified_payment(
        store,
        store,
        note or notification(gateway=truth.gateway),
        truth,
        listener=listener or RecordingListener(),
        now=lambda: NOW,
    )


def test_a_confirmed_payment_settles_once_and_tells_the_listener() -> None:
    store, listener = pending_payment(purpose="wallet_top_up"), RecordingListener()
    outcome = apply(store, status(REF), listener=listener)
    assert outcome.kind == "settled"
    assert store.payments[REF].status == "succeeded"
    assert outcome.settled is not None
    assert (outcome.settled.purpose, outcome.settled.subject_id) == ("wallet_top_up", "inv_Abc123")
    assert (outcome.settled.amount, outcome.settled.currency) == (299_000, "IDR")
    assert listener.settled == [outcome.settled]
    assert store.is_processed("midtrans", "tx-1:settlement")


def test_a_duplicate_delivery_changes_nothing() -> None:
    store, listener = pending_payment(), RecordingListener()
    apply(store, status(REF), listener=listener)
    again = apply(store, status(REF), listener=listener)
    assert again.kind == "duplicate"
    assert store.writes == 1
    assert store.payments[REF].version == 2
    # The listener may hear it again (it must be idempotent): the first run may have crashed.
    assert {s.reference for s in listener.settled} == {REF}


def test_another_event_saying_the_same_success_is_a_duplicate() -> None:
    store = pending_payment()
    apply(store, status(REF), notification("tx-1:capture"))
    later = apply(store, status(REF), notification("tx-1:settlement"))
    assert later.kind == "duplicate"
    assert store.writes == 1


def test_concurrent_duplicates_make_one_state_change() -> None:
    store = pending_payment()
    outcomes: list[NotificationOutcome] = []
    start = threading.Barrier(8)

    def deliver() -> None:
        start.wait()
        outcomes.append(apply(store, status(REF)))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.kind for o in outcomes) == ["duplicate"] * 7 + ["settled"]
    assert store.writes == 1


def test_still_pending_at_the_gateway_changes_nothing() -> None:
    store = pending_payment()
    outcome = apply(store, status(REF, "pending", gateway_status="pending"))
    assert (outcome.kind, outcome.reason, outcome.needs_review) == (
        "ignored",
        "gateway status pending",
        False,
    )
    assert store.payments[REF].status == "pending"
    assert not store.is_processed("midtrans", "tx-1:settlement")  # a redelivery may still settle it


@pytest.mark.parametrize(
    ("truth", "reason"),
    [
        (status(REF, amount=1), "amount or currency mismatch"),
        (status(REF, currency="USD"), "amount or currency mismatch"),
        (status(REF, fraud_status="challenge"), "fraud_status challenge"),
        (status(REF, fraud_status=None), "fraud_status None"),
    ],
)
def test_a_mismatched_or_unaccepted_payment_is_ignored_for_review(truth: PaymentStatus, reason: str) -> None:
    store, listener = pending_payment(), RecordingListener()
    outcome = apply(store, truth, listener=listener)
    assert (outcome.kind, outcome.reason, outcome.needs_review) == ("ignored", reason, True)
    assert store.payments[REF].status == "pending"
    assert listener.settled == []


def test_stripe_needs_no_fraud_status() -> None:
    store = pending_payment(gateway="stripe")
    truth = status(REF, gateway="stripe", fraud_status=None, gateway_status="succeeded")
    assert apply(store, truth).kind == "settled"


def test_a_failure_fails_an_open_payment() -> None:
    store, listener = pending_payment(), RecordingListener()
    outcome = apply(store, status(REF, "failed", gateway_status="expire"), listener=listener)
    assert outcome.kind == "failed"
    assert (store.payments[REF].status, store.payments[REF].decline_reason) == ("failed", "expire")
    assert [f.reason for f in listener.failed] == ["expire"]


def test_out_of_order_deliveries_change_nothing() -> None:
    store = pending_payment()
    apply(store, status(REF), notification("tx-1:settlement"))
    late_pending = apply(store, status(REF, "pending"), notification("tx-1:pending"))
    late_failure = apply(store, status(REF, "failed", gateway_status="expire"), notification("tx-1:expire"))
    assert late_pending.kind == "ignored"
    assert (late_failure.kind, late_failure.reason) == ("ignored", "failure after success")
    assert store.payments[REF].status == "succeeded"
    assert store.writes == 1


def test_a_payment_still_processing_can_be_settled_by_the_gateway() -> None:
    store = pending_payment(state="processing")
    assert apply(store, status(REF)).kind == "settled"
    assert store.payments[REF].status == "succeeded"


def test_an_unknown_reference_is_ignored() -> None:
    store = InMemoryPayments()
    outcome = apply(store, status("inv_Nope-a1"))
    assert (outcome.kind, outcome.reason) == ("ignored", "unknown reference")
    assert store.processed_events == {}


def test_another_gateways_status_is_ignored() -> None:
    store = pending_payment(gateway="midtrans")
    outcome = apply(store, status(REF, gateway="stripe"))
    assert outcome.kind == "ignored"
    assert store.payments[REF].status == "pending"
