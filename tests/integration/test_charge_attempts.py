"""One invoice attempt, charged through the payments service with the real store (moto) and the real
adapters over HTTP (the Midtrans fake, localstripe): however often it is retried, the gateway sees
one charge; a gateway that does not answer is 503 with the attempt kept claimed (its retry asks
again under the same reference and finds a capture whose answer was lost); one that refused before
charging is 503 with nothing kept."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from local.midtrans_fake import MidtransFake
from tagih.config import Settings
from tagih.domain.errors import ChargeInDoubt, GatewayUnavailable, PaymentDeclined
from tagih.domain.gateway import AttachedMethod, AttachRequest, ChargeRequest, ChargeResult, Customer
from tagih.domain.gateway_names import GatewayName
from tagih.domain.payments import Payment
from tagih.gateways.midtrans_gateway import MidtransGateway
from tagih.gateways.stripe_gateway import StripeGateway
from tagih.services.charging import charge_attempt
from tagih.store.payments import default_payment_items
from tests.fakes.localstripe_server import KEYS as STRIPE_KEYS
from tests.fakes.localstripe_server import HangingServer, LocalStripe, running_localstripe
from tests.fakes.localstripe_server import settings_for as stripe_settings
from tests.fakes.midtrans_server import KEYS as MIDTRANS_KEYS
from tests.fakes.midtrans_server import running_midtrans_fake
from tests.fakes.midtrans_server import settings_for as midtrans_settings

ORG = "org_charges"
CUSTOMER = Customer(account_id="acct_c", organization_id=ORG, name="PT Contoh", email="finance@contoh.co.id")
SAVED_CARD = AttachedMethod(
    gateway="midtrans",
    gateway_payment_method_id="481111abcdefabcdefabcdef1114",
    type="credit_card",
    brand="visa",
    last4="1114",
)


@pytest.fixture
def midtrans() -> Iterator[MidtransFake]:
    with running_midtrans_fake() as fake:
        yield fake


@pytest.fixture
def localstripe() -> Iterator[LocalStripe]:
    with running_localstripe() as server:
        yield server


def request(
    method: AttachedMethod, *, invoice: str = "inv_c1", customer_id: str | None = None
) -> ChargeRequest:
    amount, currency = (299_000, "IDR") if method.gateway == "midtrans" else (2_500, "USD")
    return ChargeRequest(
        organization_id=ORG,
        invoice_id=invoice,
        attempt=1,
        amount=amount,
        currency=currency,
        method=method,
        customer=CUSTOMER,
        customer_id=customer_id,
    )


def charge_many_times(
    gateway: MidtransGateway | StripeGateway, charge: ChargeRequest, times: int
) -> list[Payment]:
    """The same attempt from a Lambda retry, a duplicate timer and a double click, all at once."""
    payments = default_payment_items()
    with ThreadPoolExecutor(max_workers=times) as pool:
        futures = [pool.submit(charge_attempt, gateway, payments, charge, "invoice") for _ in range(times)]
        return [future.result() for future in futures]


def test_a_midtrans_attempt_charged_five_times_is_one_charge_at_midtrans(
    aws: None, midtrans: MidtransFake
) -> None:
    gateway = MidtransGateway(midtrans_settings(midtrans, timeout=5.0), MIDTRANS_KEYS)
    charge = request(SAVED_CARD)

    results = charge_many_times(gateway, charge, 5)

    assert {p.status for p in results} == {"succeeded"}
    assert midtrans.charge_count(charge.reference) == 1
    stored = default_payment_items().get(ORG, charge.reference)
    assert stored is not None
    assert (stored.status, stored.amount, stored.gateway_charge_id) == (
        "succeeded",
        299_000,
        results[0].gateway_charge_id,
    )


def test_a_stripe_attempt_charged_five_times_is_one_payment_intent(
    aws: None, localstripe: LocalStripe
) -> None:
    gateway = StripeGateway(stripe_settings(localstripe.url, timeout=6.0), STRIPE_KEYS)
    customer_id = gateway.ensure_customer(CUSTOMER)
    assert customer_id is not None
    card = gateway.attach_method(
        AttachRequest(
            organization_id=ORG,
            type="credit_card",
            token=localstripe.create_card("4242424242424242"),
            customer_id=customer_id,
        )
    )
    charge = request(card, customer_id=customer_id)

    results = charge_many_times(gateway, charge, 5)

    assert {p.status for p in results} == {"succeeded"}
    intents = localstripe.list("payment_intents")
    assert len(intents) == 1
    assert len(localstripe.list("charges")) == 1
    assert intents[0]["amount"] == 2_500


def test_a_declined_attempt_is_recorded_once_and_every_retry_gets_the_same_402(
    aws: None, midtrans: MidtransFake
) -> None:
    gateway = MidtransGateway(midtrans_settings(midtrans, timeout=5.0), MIDTRANS_KEYS)
    declined_card = AttachedMethod(
        gateway="midtrans", gateway_payment_method_id="481111-decline-1114", type="credit_card"
    )
    charge = request(declined_card, invoice="inv_c2")
    payments = default_payment_items()

    reasons = []
    for _ in range(3):
        with pytest.raises(PaymentDeclined) as declined:
            charge_attempt(gateway, payments, charge, "invoice")
        reasons.append(declined.value.reason)

    assert len(set(reasons)) == 1
    assert midtrans.charge_count(charge.reference) == 1
    stored = payments.get(ORG, charge.reference)
    assert stored is not None
    assert stored.status == "failed"


@pytest.mark.timeout(60)
def test_a_gateway_that_does_not_answer_leaves_the_attempt_claimed_for_its_retry(
    aws: None, midtrans: MidtransFake
) -> None:
    payments = default_payment_items()
    hanging_card = AttachedMethod(
        gateway="midtrans", gateway_payment_method_id="481111hangsavedtoken1114", type="credit_card"
    )
    midtrans_charge = request(hanging_card, invoice="inv_c3")
    gateway = MidtransGateway(midtrans_settings(midtrans, timeout=1.0), MIDTRANS_KEYS)
    for _ in range(2):  # the retry finds the same claim and asks under the same order_id
        with pytest.raises(ChargeInDoubt):
            charge_attempt(gateway, payments, midtrans_charge, "invoice")
    claimed = payments.get(ORG, midtrans_charge.reference)
    assert claimed is not None
    assert (claimed.status, claimed.version) == ("processing", 1)
    assert midtrans.charge_count(midtrans_charge.reference) == 0

    with HangingServer() as hanging:
        stripe_card = AttachedMethod(
            gateway="stripe", gateway_payment_method_id="pm_hang", type="credit_card"
        )
        stripe_charge = request(stripe_card, invoice="inv_c4", customer_id="cus_hang")
        with pytest.raises(ChargeInDoubt):
            charge_attempt(
                StripeGateway(stripe_settings(hanging.url, timeout=1.0), STRIPE_KEYS),
                payments,
                stripe_charge,
                "invoice",
            )
    stripe_claim = payments.get(ORG, stripe_charge.reference)
    assert stripe_claim is not None
    assert stripe_claim.status == "processing"


def test_a_gateway_nobody_listens_on_charged_nothing_and_keeps_no_claim(aws: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]  # closed again when the block ends: nobody listens
    unreachable = MidtransGateway(
        Settings(
            table_name="unused",
            midtrans_api_base=f"http://127.0.0.1:{closed_port}",
            midtrans_snap_base=f"http://127.0.0.1:{closed_port}/snap",
            gateway_timeout_seconds=1.0,
        ),
        MIDTRANS_KEYS,
    )
    charge = request(SAVED_CARD, invoice="inv_c5")
    payments = default_payment_items()
    with pytest.raises(GatewayUnavailable) as refused:
        charge_attempt(unreachable, payments, charge, "invoice")
    assert not isinstance(refused.value, ChargeInDoubt)
    assert payments.get(ORG, charge.reference) is None


@dataclass
class AnswerLostAfterCapture:
    """The real adapter, whose answer to the first charge is lost after Midtrans captured it (a read
    timeout, the Lambda killed while reading): the fault sits at the gateway port."""

    gateway: MidtransGateway
    name: GatewayName = "midtrans"
    lost: int = 0

    def charge(self, charge: ChargeRequest) -> ChargeResult:
        result = self.gateway.charge(charge)
        if self.lost == 0:
            self.lost += 1
            raise GatewayUnavailable(gateway=self.name)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gateway, name)


def test_a_capture_whose_answer_was_lost_is_found_by_the_retry_and_recorded_once(
    aws: None, midtrans: MidtransFake
) -> None:
    gateway = AnswerLostAfterCapture(MidtransGateway(midtrans_settings(midtrans, timeout=5.0), MIDTRANS_KEYS))
    charge = request(SAVED_CARD, invoice="inv_c6")
    payments = default_payment_items()
    with pytest.raises(ChargeInDoubt):
        charge_attempt(gateway, payments, charge, "invoice")
    assert midtrans.charge_count(charge.reference) == 1  # the money was taken

    payment = charge_attempt(gateway, payments, charge, "invoice")

    assert (payment.status, payment.amount) == ("succeeded", 299_000)
    assert midtrans.charge_count(charge.reference) == 1
    stored = payments.get(ORG, charge.reference)
    assert stored is not None
    assert stored.status == "succeeded"
