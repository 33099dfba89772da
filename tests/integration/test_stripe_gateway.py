"""The Stripe adapter with the real stripe SDK, over HTTP, against localstripe.

Nothing of the SDK is patched: the adapter is pointed at localstripe through settings (API base, a 1 s
timeout) exactly as the local stack points it; cards are created the way Stripe.js creates them, and
customers, PaymentIntents and charges are counted at localstripe. Each test gets a fresh localstripe.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tagih.domain.errors import (
    GatewayReferenceNotFound,
    GatewayUnavailable,
    InvalidSignature,
    PaymentDeclined,
)
from tagih.domain.gateway import AttachedMethod, AttachRequest, ChargeRequest, Customer
from tagih.gateways.registry import Gateways
from tagih.gateways.secrets import StripeKeys
from tagih.gateways.stripe_gateway import StripeGateway
from tests.fakes.localstripe_server import (
    KEYS,
    WEBHOOK_SECRET,
    HangingServer,
    LocalStripe,
    WebhookInbox,
    running_localstripe,
    settings_for,
)

ORG = "org_stripe"
VISA = "4242424242424242"
DECLINED_ON_ATTACH = "4000000000000002"  # Stripe declines it when it is verified (attached)
DECLINED_ON_CHARGE = "4000000000000341"  # attaches, then every charge is declined
NEEDS_AUTHENTICATION = "4000002760003184"  # 3-D Secure on every payment
RUPIAH = 299_000
CUSTOMER = Customer(
    account_id="acct_1", organization_id=ORG, name="PT Contoh", email="billing@contoh.co.id", phone="+6281234"
)


@pytest.fixture
def inbox() -> Iterator[WebhookInbox]:
    with WebhookInbox() as receiver:
        yield receiver


@pytest.fixture
def localstripe(inbox: WebhookInbox) -> Iterator[LocalStripe]:
    with running_localstripe(webhook_url=inbox.url) as server:
        yield server


# Generous: on a busy two-core CI machine localstripe may take a second; the hang test has its own.
@pytest.fixture
def gateway(localstripe: LocalStripe) -> StripeGateway:
    return StripeGateway(settings_for(localstripe.url, timeout=6.0), KEYS)


@pytest.fixture
def offline() -> StripeGateway:
    """For what needs no Stripe call (webhook verification, argument checks): nothing listens there."""
    return StripeGateway(settings_for("http://127.0.0.1:9"), KEYS)


@pytest.fixture
def customer_id(gateway: StripeGateway) -> str:
    created = gateway.ensure_customer(CUSTOMER)
    assert created is not None
    return created


def attach(gateway: StripeGateway, localstripe: LocalStripe, customer_id: str, number: str) -> AttachedMethod:
    token = localstripe.create_card(number)
    return gateway.attach_method(
        AttachRequest(organization_id=ORG, type="credit_card", token=token, customer_id=customer_id)
    )


def charge_request(
    method: AttachedMethod,
    customer_id: str,
    *,
    invoice_id: str = "inv_01",
    attempt: int = 1,
    amount: int = RUPIAH,
    currency: str = "IDR",
) -> ChargeRequest:
    return ChargeRequest(
        organization_id=ORG,
        invoice_id=invoice_id,
        attempt=attempt,
        amount=amount,
        currency=currency,
        method=method,
        customer=CUSTOMER,
        description="Pro, February 2026",
        customer_id=customer_id,
    )


# -- customers ---------------------------------------------------------------------------------------
def test_ensure_customer_creates_one_customer_per_account(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    first = gateway.ensure_customer(CUSTOMER)
    again = gateway.ensure_customer(CUSTOMER)

    assert first is not None
    assert first.startswith("cus_")
    assert again == first
    [stored] = localstripe.list("customers")
    assert stored["id"] == first
    assert (stored["name"], stored["email"], stored["phone"]) == (
        "PT Contoh",
        "billing@contoh.co.id",
        "+6281234",
    )
    assert stored["metadata"] == {"organization_id": ORG, "account_id": "acct_1"}

    other = gateway.ensure_customer(
        Customer(account_id="acct_2", organization_id=ORG, name="B", email="b@b.id")
    )
    assert other not in (None, first)
    assert len(localstripe.list("customers")) == 2


def test_a_known_customer_is_not_created_again(gateway: StripeGateway, localstripe: LocalStripe) -> None:
    known = Customer(**{**CUSTOMER.__dict__, "existing_customer_id": "cus_known"})

    assert gateway.ensure_customer(known) == "cus_known"
    assert localstripe.list("customers") == []


def test_an_account_renamed_before_its_customer_id_was_kept_gets_a_customer_with_the_new_name(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    # The first customer's id was lost (a crash before it was stored); within 24 h Stripe would
    # refuse the account's idempotency key with other details, so the adapter uses one naming them.
    first = gateway.ensure_customer(CUSTOMER)
    renamed = gateway.ensure_customer(Customer(**{**CUSTOMER.__dict__, "name": "PT Contoh Baru"}))

    assert renamed not in (None, first)
    assert sorted(c["name"] for c in localstripe.list("customers")) == ["PT Contoh", "PT Contoh Baru"]
    assert gateway.ensure_customer(Customer(**{**CUSTOMER.__dict__, "name": "PT Contoh Baru"})) == renamed


# -- attaching ---------------------------------------------------------------------------------------
def test_attaching_a_card_keeps_its_id_brand_and_last4_never_the_number(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tagih")
    token = localstripe.create_card(VISA)

    method = gateway.attach_method(
        AttachRequest(organization_id=ORG, type="credit_card", token=token, customer_id=customer_id)
    )

    assert method == AttachedMethod(
        gateway="stripe", gateway_payment_method_id=token, type="credit_card", brand="visa", last4="4242"
    )
    assert VISA not in repr(method)
    assert localstripe.get("payment_methods", token)["customer"] == customer_id
    assert VISA not in caplog.text
    assert token not in caplog.text


def test_attaching_the_same_card_twice_is_one_attachment(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    token = localstripe.create_card(VISA)
    request = AttachRequest(organization_id=ORG, type="credit_card", token=token, customer_id=customer_id)

    assert gateway.attach_method(request) == gateway.attach_method(request)
    assert [m["id"] for m in localstripe.list("payment_methods", customer=customer_id, type="card")] == [
        token
    ]


def test_a_card_declined_when_attached_is_payment_declined_with_stripes_reason(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    token = localstripe.create_card(DECLINED_ON_ATTACH)
    with pytest.raises(PaymentDeclined) as declined:
        gateway.attach_method(
            AttachRequest(organization_id=ORG, type="credit_card", token=token, customer_id=customer_id)
        )

    assert declined.value.reason == "Your card was declined."
    assert declined.value.decline_code == "generic_decline"
    assert declined.value.gateway == "stripe"
    assert token not in str(declined.value)
    assert token not in json.dumps(declined.value.details)
    assert localstripe.get("payment_methods", token)["customer"] is None


def test_an_unknown_payment_method_is_not_found_without_naming_it(
    gateway: StripeGateway, customer_id: str
) -> None:
    token = "pm_1NotAtStripe0000000"
    with pytest.raises(GatewayReferenceNotFound) as refused:
        gateway.attach_method(
            AttachRequest(organization_id=ORG, type="credit_card", token=token, customer_id=customer_id)
        )

    assert token not in str(refused.value)


def test_another_customers_card_is_not_found_and_stays_theirs(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    # One Stripe account serves every organization: a pm_… of organization A's customer, offered
    # by organization B, must not move to B's customer (localstripe would let it, as a bug would).
    other = Customer(account_id="acct_2", organization_id="org_b", name="PT Lain", email="ar@lain.co.id")
    other_customer = gateway.ensure_customer(other)
    assert other_customer is not None
    theirs = attach(gateway, localstripe, customer_id, VISA)

    with pytest.raises(GatewayReferenceNotFound):
        gateway.attach_method(
            AttachRequest(
                organization_id="org_b",
                type="credit_card",
                token=theirs.gateway_payment_method_id,
                customer_id=other_customer,
            )
        )

    assert localstripe.get("payment_methods", theirs.gateway_payment_method_id)["customer"] == customer_id


@pytest.mark.parametrize(
    "request_",
    [
        AttachRequest(organization_id=ORG, type="bank_transfer", bank="bca", customer_id="cus_1"),
        AttachRequest(
            organization_id=ORG, type="credit_card", token="481111-1114-midtrans", customer_id="cus_1"
        ),
        AttachRequest(organization_id=ORG, type="credit_card", token="pm_card_visa"),
    ],
    ids=["bank-transfer", "midtrans-token", "no-customer"],
)
def test_only_a_pm_token_for_a_customer_is_attached(offline: StripeGateway, request_: AttachRequest) -> None:
    with pytest.raises(ValueError, match="Stripe") as refused:
        offline.attach_method(request_)
    assert "481111" not in str(refused.value)


# -- charging ----------------------------------------------------------------------------------------
def test_rupiah_go_to_stripe_in_hundredths_and_come_back_whole(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    method = attach(gateway, localstripe, customer_id, VISA)

    result = gateway.charge(charge_request(method, customer_id))

    assert result.outcome == "succeeded"
    assert (result.amount, result.currency, result.reference) == (RUPIAH, "IDR", "inv_01-a1")
    assert result.decline_reason is None
    assert result.gateway_charge_id is not None
    intent = localstripe.get("payment_intents", result.gateway_charge_id)
    assert (intent["amount"], intent["currency"], intent["status"]) == (29_900_000, "idr", "succeeded")
    assert (intent["customer"], intent["payment_method"]) == (customer_id, method.gateway_payment_method_id)
    assert intent["description"] == "Pro, February 2026"
    assert intent["metadata"] == {
        "organization_id": ORG,
        "invoice_id": "inv_01",
        "attempt": "1",
        "reference": "inv_01-a1",
    }
    status = gateway.fetch_status("inv_01-a1", result.gateway_charge_id)
    assert (status.amount, status.currency) == (RUPIAH, "IDR")


def test_a_usd_amount_is_already_in_cents(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    method = attach(gateway, localstripe, customer_id, VISA)

    result = gateway.charge(charge_request(method, customer_id, amount=1_999, currency="USD"))

    assert (result.outcome, result.amount, result.currency) == ("succeeded", 1_999, "USD")
    assert result.gateway_charge_id is not None
    intent = localstripe.get("payment_intents", result.gateway_charge_id)
    assert (intent["amount"], intent["currency"]) == (1_999, "usd")


def test_a_card_declined_on_charge_is_a_declined_outcome_with_stripes_reason(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    method = attach(gateway, localstripe, customer_id, DECLINED_ON_CHARGE)

    result = gateway.charge(charge_request(method, customer_id))

    assert result.outcome == "declined"
    assert result.decline_reason == "Your card was declined."
    assert (result.amount, result.currency) == (RUPIAH, "IDR")
    # The PaymentIntent the failed confirm left, so a later notification finds the payment.
    assert result.gateway_charge_id is not None
    assert result.gateway_charge_id.startswith("pi_")
    status = gateway.fetch_status("inv_01-a1", result.gateway_charge_id)
    assert (status.state, status.gateway_status) == ("failed", "requires_payment_method")


def test_a_card_needing_authentication_is_declined_off_session(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    method = attach(gateway, localstripe, customer_id, NEEDS_AUTHENTICATION)

    result = gateway.charge(charge_request(method, customer_id))

    assert result.outcome == "declined"
    assert result.decline_reason is not None
    assert "requires authentication" in result.decline_reason
    assert result.payment_url is None
    assert result.gateway_charge_id is not None


@pytest.mark.parametrize(
    ("card", "outcome"), [(VISA, "succeeded"), (DECLINED_ON_CHARGE, "declined")], ids=["visa", "declined"]
)
def test_charging_the_same_attempt_twice_makes_one_payment_intent(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str, card: str, outcome: str
) -> None:
    method = attach(gateway, localstripe, customer_id, card)

    first = gateway.charge(charge_request(method, customer_id))
    second = gateway.charge(charge_request(method, customer_id))

    assert first == second
    assert first.outcome == outcome
    assert len(localstripe.list("payment_intents")) == 1
    assert len(localstripe.list("charges")) == 1


def test_the_next_attempt_is_a_new_payment_intent(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    method = attach(gateway, localstripe, customer_id, VISA)

    first = gateway.charge(charge_request(method, customer_id, attempt=1))
    second = gateway.charge(charge_request(method, customer_id, attempt=2))

    assert first.gateway_charge_id != second.gateway_charge_id
    references = sorted(pi["metadata"]["reference"] for pi in localstripe.list("payment_intents"))
    assert references == ["inv_01-a1", "inv_01-a2"]
    assert len(localstripe.list("charges")) == 2


def test_a_wrong_secret_key_is_our_fault_not_the_payers(
    localstripe: LocalStripe, gateway: StripeGateway
) -> None:
    customer_id = gateway.ensure_customer(CUSTOMER)
    assert customer_id is not None
    method = attach(gateway, localstripe, customer_id, VISA)
    wrong = StripeGateway(
        settings_for(localstripe.url), StripeKeys(secret_key="rk_wrong", webhook_secret="x")
    )

    with pytest.raises(GatewayUnavailable) as unavailable:
        wrong.charge(charge_request(method, customer_id))
    assert unavailable.value.gateway == "stripe"
    assert localstripe.list("payment_intents") == []


@pytest.mark.timeout(30)
def test_a_hanging_stripe_is_unavailable() -> None:
    method = AttachedMethod(gateway="stripe", gateway_payment_method_id="pm_1", type="credit_card")
    with HangingServer() as hanging:
        gateway = StripeGateway(settings_for(hanging.url, timeout=1.0), KEYS)
        with pytest.raises(GatewayUnavailable) as unavailable:
            gateway.charge(charge_request(method, "cus_1"))
    assert unavailable.value.gateway == "stripe"


# -- status ------------------------------------------------------------------------------------------
def test_fetch_status_of_a_succeeded_charge(
    gateway: StripeGateway, localstripe: LocalStripe, customer_id: str
) -> None:
    method = attach(gateway, localstripe, customer_id, VISA)
    result = gateway.charge(charge_request(method, customer_id, invoice_id="inv_status", attempt=3))

    status = gateway.fetch_status("ignored-when-stripe-knows", result.gateway_charge_id)

    assert status.gateway == "stripe"
    assert (status.state, status.gateway_status) == ("succeeded", "succeeded")
    assert status.reference == "inv_status-a3"  # from the PaymentIntent's metadata
    assert (status.amount, status.currency) == (RUPIAH, "IDR")
    assert status.gateway_charge_id == result.gateway_charge_id
    assert status.fraud_status is None


def test_fetch_status_without_a_known_payment_intent_is_unknown(gateway: StripeGateway) -> None:
    without_id = gateway.fetch_status("inv_01-a1")
    missing = gateway.fetch_status("inv_01-a1", "pi_1NotAtStripe")

    for status in (without_id, missing):
        assert (status.state, status.amount, status.reference) == ("unknown", 0, "inv_01-a1")


# -- notifications -----------------------------------------------------------------------------------
def sign(body: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A Stripe-Signature header, computed as Stripe documents it."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def intent_event(event_type: str = "payment_intent.succeeded", **intent: Any) -> bytes:
    obj = {
        "id": "pi_3Webhook",
        "object": "payment_intent",
        "amount": 29_900_000,
        "currency": "idr",
        "status": "succeeded",
        "customer": "cus_1",
        "payment_method": "pm_1",
        "metadata": {"reference": "inv_01-a1", "organization_id": ORG},
        **intent,
    }
    event = {"id": "evt_1Webhook", "object": "event", "type": event_type, "data": {"object": obj}}
    return json.dumps(event).encode()


def test_a_correctly_signed_event_verifies(offline: StripeGateway) -> None:
    body = intent_event()

    notification = offline.verify_notification({"stripe-signature": sign(body)}, body)

    assert notification.gateway == "stripe"
    assert notification.event_id == "evt_1Webhook"
    assert notification.reference == "inv_01-a1"
    assert (notification.claimed_state, notification.event_type) == ("succeeded", "payment_intent.succeeded")
    assert (notification.amount, notification.currency) == (RUPIAH, "IDR")
    assert notification.raw_fields == {
        "event_type": "payment_intent.succeeded",
        "payment_intent": "pi_3Webhook",
        "status": "succeeded",
    }


def test_the_header_is_found_whatever_its_case_and_a_small_clock_skew_is_tolerated(
    offline: StripeGateway,
) -> None:
    body = intent_event("payment_intent.payment_failed", status="requires_payment_method")

    notification = offline.verify_notification(
        {"Stripe-Signature": sign(body, at=int(time.time()) + 10)}, body
    )

    assert notification.claimed_state == "failed"


def test_an_event_about_something_else_has_no_reference(offline: StripeGateway) -> None:
    body = json.dumps(
        {"id": "evt_2", "type": "customer.created", "data": {"object": {"id": "cus_1", "object": "customer"}}}
    ).encode()

    notification = offline.verify_notification({"stripe-signature": sign(body)}, body)

    assert (notification.reference, notification.claimed_state, notification.amount) == (
        None,
        "unknown",
        None,
    )
    assert notification.raw_fields == {"event_type": "customer.created"}


def forgeries() -> dict[str, tuple[dict[str, str], bytes]]:
    """Headers and bodies of notifications that must not verify (timestamps taken when a test runs)."""
    body, now = intent_event(), int(time.time())
    form, binary, array = b"event=payment_intent.succeeded", b"\xff\xfe", b'["evt_1"]'
    return {
        "bad-signature": ({"stripe-signature": sign(body).replace("v1=", "v1=0")}, body),
        "another-secret": ({"stripe-signature": sign(body, secret="whsec_another")}, body),
        "tampered-body": ({"stripe-signature": sign(body)}, intent_event(amount=100)),
        "301s-old": ({"stripe-signature": sign(body, at=now - 301)}, body),
        "120s-in-the-future": ({"stripe-signature": sign(body, at=now + 120)}, body),
        "missing-header": ({"content-type": "application/json"}, body),
        "empty-header": ({"stripe-signature": ""}, body),
        "no-timestamp": ({"stripe-signature": sign(body).split(",", 1)[1]}, body),
        "two-timestamps": ({"stripe-signature": f"t={now + 3600},{sign(body)}"}, body),
        "not-json": ({"stripe-signature": sign(form)}, form),
        "not-utf8": ({"stripe-signature": sign(binary)}, binary),
        "json-not-an-event": ({"stripe-signature": sign(array)}, array),
    }


@pytest.mark.parametrize(
    "case",
    [
        "bad-signature",
        "another-secret",
        "tampered-body",
        "301s-old",
        "120s-in-the-future",
        "missing-header",
        "empty-header",
        "no-timestamp",
        "two-timestamps",
        "not-json",
        "not-utf8",
        "json-not-an-event",
    ],
)
def test_forged_stale_or_malformed_notifications_are_refused(offline: StripeGateway, case: str) -> None:
    headers, body = forgeries()[case]

    with pytest.raises(InvalidSignature) as refused:
        offline.verify_notification(headers, body)
    assert str(refused.value) == "The notification signature is not valid."  # no detail of why


def test_a_real_localstripe_webhook_verifies(
    gateway: StripeGateway, localstripe: LocalStripe, inbox: WebhookInbox, customer_id: str
) -> None:
    method = attach(gateway, localstripe, customer_id, VISA)
    result = gateway.charge(charge_request(method, customer_id))

    def succeeded(delivery: Any) -> bool:
        return b'"payment_intent.succeeded"' in delivery.body

    delivery = inbox.wait_for(succeeded, timeout=10)
    notification = gateway.verify_notification(delivery.headers, delivery.body)

    assert notification.reference == "inv_01-a1"
    assert notification.claimed_state == "succeeded"
    assert notification.raw_fields["payment_intent"] == result.gateway_charge_id
    assert (notification.amount, notification.currency) == (RUPIAH, "IDR")
    assert notification.event_id.startswith("evt_")


def test_the_registry_builds_the_stripe_adapter() -> None:
    assert isinstance(Gateways().get("stripe"), StripeGateway)
