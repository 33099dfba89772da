"""Charging an invoice attempt: one charge per reference however often it is asked, nothing
recorded when the gateway refused, the claim kept when its answer was lost, a declined charge
recorded and reported."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tagih.domain.errors import ChargeInDoubt, GatewayUnavailable, PaymentDeclined
from tagih.domain.gateway import AttachedMethod, ChargeRequest, ChargeResult, Customer
from tagih.domain.gateway_names import charge_reference
from tagih.domain.payments import ChargeReferenceConflict, Payment
from tagih.services.charging import charge_attempt
from tests.fakes.payments import InMemoryPayments, ScriptedGateway

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ORG = "org_1"
INVOICE = "inv_Abc123"


def clock() -> datetime:
    return NOW


def request(attempt: int = 1, amount: int = 299_000) -> ChargeRequest:
    return ChargeRequest(
        organization_id=ORG,
        invoice_id=INVOICE,
        attempt=attempt,
        amount=amount,
        currency="IDR",
        method=AttachedMethod(gateway="midtrans", gateway_payment_method_id="va:bca", type="bank_transfer"),
        customer=Customer(account_id="acct_1", organization_id=ORG, name="Acme", email="billing@acme.test"),
    )


def charge(gateway: ScriptedGateway, store: InMemoryPayments, req: ChargeRequest | None = None) -> Payment:
    return charge_attempt(gateway, store, req or request(), "invoice", payment_method_id="pm_1", now=clock)


def test_a_successful_charge_is_recorded_under_the_attempt_reference() -> None:
    gateway, store = ScriptedGateway(), InMemoryPayments()
    payment = charge(gateway, store)
    assert payment.reference == charge_reference(INVOICE, 1) == f"{INVOICE}-a1"
    assert (payment.status, payment.amount, payment.currency) == ("succeeded", 299_000, "IDR")
    assert (payment.purpose, payment.subject_id, payment.payment_method_id) == ("invoice", INVOICE, "pm_1")
    assert payment.gateway_charge_id == f"charge-{INVOICE}-a1"
    assert store.get(ORG, payment.reference) == payment


def test_charging_the_same_attempt_twice_calls_the_gateway_once() -> None:
    gateway, store = ScriptedGateway(), InMemoryPayments()
    first = charge(gateway, store)
    second = charge(gateway, store)
    assert second == first
    assert gateway.calls["charge"] == 1


def test_a_pending_attempt_is_returned_again_without_a_second_charge() -> None:
    gateway, store = ScriptedGateway(outcome="pending"), InMemoryPayments()
    first = charge(gateway, store)
    assert first.status == "pending"
    assert first.payment_url == f"https://pay.example/{INVOICE}-a1"
    assert charge(gateway, store) == first
    assert gateway.calls["charge"] == 1


def test_the_next_attempt_is_a_new_charge() -> None:
    gateway, store = ScriptedGateway(), InMemoryPayments()
    charge(gateway, store, request(attempt=1))
    second = charge(gateway, store, request(attempt=2))
    assert second.reference == f"{INVOICE}-a2"
    assert gateway.calls["charge"] == 2
    assert set(gateway.charges) == {f"{INVOICE}-a1", f"{INVOICE}-a2"}


def test_an_attempt_left_processing_by_a_crash_is_retried_with_the_same_reference() -> None:
    gateway, store = ScriptedGateway(), InMemoryPayments()
    # What a Lambda that died between the claim and the gateway's answer leaves behind.
    crashed = Payment(
        organization_id=ORG,
        reference=f"{INVOICE}-a1",
        purpose="invoice",
        subject_id=INVOICE,
        attempt=1,
        gateway="midtrans",
        payment_method_id="pm_1",
        amount=299_000,
        currency="IDR",
        status="processing",
        created_at=NOW,
        updated_at=NOW,
    )
    assert store.claim(crashed) is None

    payment = charge(gateway, store)
    assert gateway.calls["charge"] == 1
    assert list(gateway.charges) == [crashed.reference]
    assert payment.status == "succeeded"
    assert payment.version == crashed.version + 1


def test_a_gateway_that_refused_before_charging_records_nothing() -> None:
    gateway, store = ScriptedGateway(outcome="unavailable"), InMemoryPayments()
    with pytest.raises(GatewayUnavailable) as refused:
        charge(gateway, store)
    assert not isinstance(refused.value, ChargeInDoubt)
    assert store.payments == {}

    gateway.outcome = "transient"  # the adapter may also report it as an outcome
    with pytest.raises(GatewayUnavailable):
        charge(gateway, store)
    assert store.payments == {}

    gateway.outcome = "succeeded"  # a later retry charges normally
    assert charge(gateway, store).status == "succeeded"


def test_a_charge_whose_answer_was_lost_stays_claimed_and_its_retry_charges_nothing_more() -> None:
    gateway, store = ScriptedGateway(outcome="lost_answer"), InMemoryPayments()
    with pytest.raises(ChargeInDoubt):
        charge(gateway, store)
    claimed = store.get(ORG, f"{INVOICE}-a1")
    assert claimed is not None
    assert claimed.status == "processing"

    gateway.outcome = "succeeded"  # the retry asks again under the same reference
    payment = charge(gateway, store)
    assert (payment.reference, payment.status) == (f"{INVOICE}-a1", "succeeded")
    assert list(gateway.charges) == [f"{INVOICE}-a1"]  # one charge at the gateway


def test_a_declined_charge_is_recorded_failed_and_raised_with_the_reason() -> None:
    gateway, store = ScriptedGateway(outcome="declined"), InMemoryPayments()
    with pytest.raises(PaymentDeclined) as declined:
        charge(gateway, store)
    assert declined.value.reason == "Card declined by the issuer"
    assert declined.value.gateway == "midtrans"
    recorded = store.get(ORG, f"{INVOICE}-a1")
    assert recorded is not None
    assert (recorded.status, recorded.decline_reason) == ("failed", "Card declined by the issuer")

    # The retry of the same attempt gets the same answer, and the gateway is not asked again.
    with pytest.raises(PaymentDeclined):
        charge(gateway, store)
    assert gateway.calls["charge"] == 1


class WebhookFirstGateway(ScriptedGateway):
    """Stripe may deliver payment_intent.succeeded before its API call returns."""

    store: InMemoryPayments | None = None

    def charge(self, request: ChargeRequest) -> ChargeResult:
        result = super().charge(request)
        assert self.store is not None
        claimed = self.store.payments[request.reference]
        self.store.payments[request.reference] = replace(
            claimed, status="succeeded", version=claimed.version + 1
        )
        return result


def test_a_notification_that_settled_the_claim_first_wins() -> None:
    store = InMemoryPayments()
    gateway = WebhookFirstGateway(outcome="pending")
    gateway.store = store
    payment = charge(gateway, store)
    assert payment.status == "succeeded"


def test_the_same_reference_for_another_amount_is_refused() -> None:
    gateway, store = ScriptedGateway(), InMemoryPayments()
    charge(gateway, store)
    with pytest.raises(ChargeReferenceConflict):
        charge(gateway, store, request(amount=1))
    assert gateway.calls["charge"] == 1
