"""The Midtrans adapter with the real midtransclient, over HTTP, against the local Midtrans fake.

Nothing of the SDK is patched: the adapter is pointed at the fake through settings (base URLs, a
1 s timeout) exactly as the local stack points it, and charges are counted at the fake.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from local.midtrans_fake import MidtransFake
from tagih.domain.errors import GatewayUnavailable, InvalidSignature, PaymentDeclined
from tagih.domain.gateway import AttachedMethod, AttachRequest, ChargeRequest, Customer
from tagih.domain.gateway_names import Bank
from tagih.gateways.midtrans_gateway import MidtransGateway, verification_order_id
from tagih.gateways.secrets import MidtransKeys
from tests.fakes.midtrans_server import KEYS, NotificationInbox, running_midtrans_fake, settings_for

ORG = "org_midtrans"
CARD_TOKEN = "481111-1114-one-time-3f9a1c"  # what Midtrans.js would hand the browser
AMOUNT = 299_000
CUSTOMER = Customer(account_id="acct_1", organization_id=ORG, name="PT Contoh", email="billing@contoh.co.id")


@pytest.fixture
def inbox() -> Iterator[NotificationInbox]:
    with NotificationInbox() as receiver:
        yield receiver


@pytest.fixture
def fake(inbox: NotificationInbox) -> Iterator[MidtransFake]:
    with running_midtrans_fake(notification_url=inbox.url) as running:
        yield running


@pytest.fixture
def gateway(fake: MidtransFake) -> MidtransGateway:
    return MidtransGateway(settings_for(fake, timeout=1.0), KEYS)


SAVED_CARD = "481111abcdefabcdefabcdef1114"  # a Midtrans saved_token_id: BIN, random, last4


def card(saved_token: str = SAVED_CARD) -> AttachedMethod:
    return AttachedMethod(
        gateway="midtrans",
        gateway_payment_method_id=saved_token,
        type="credit_card",
        brand="visa",
        last4="1114",
    )


def va(bank: Bank) -> AttachedMethod:
    return AttachedMethod(
        gateway="midtrans", gateway_payment_method_id=f"va:{bank}", type="bank_transfer", bank=bank
    )


def wallet(provider: str) -> AttachedMethod:
    return AttachedMethod(
        gateway="midtrans",
        gateway_payment_method_id=f"ewallet:{provider}",
        type="e_wallet",
        provider=provider,  # type: ignore[arg-type]
    )


def charge_request(method: AttachedMethod, invoice_id: str = "inv_01", attempt: int = 1) -> ChargeRequest:
    return ChargeRequest(
        organization_id=ORG,
        invoice_id=invoice_id,
        attempt=attempt,
        amount=AMOUNT,
        currency="IDR",
        method=method,
        customer=CUSTOMER,
        description="Pro, February 2026",
    )


# -- attaching ----------------------------------------------------------------------------------------
def test_attaching_a_card_keeps_the_saved_token_and_display_data_never_the_token(
    gateway: MidtransGateway, fake: MidtransFake
) -> None:
    method = gateway.attach_method(AttachRequest(organization_id=ORG, type="credit_card", token=CARD_TOKEN))

    assert method.gateway == "midtrans"
    assert method.type == "credit_card"
    assert (method.brand, method.last4) == ("visa", "1114")
    assert method.gateway_payment_method_id.startswith("481111")
    assert method.gateway_payment_method_id != CARD_TOKEN
    assert CARD_TOKEN not in repr(method)
    # The verification authorisation was cancelled at once: nothing stays held on the card.
    verification = fake.transaction(verification_order_id(ORG, CARD_TOKEN))
    assert verification is not None
    assert verification["transaction_status"] == "cancel"


def test_the_saved_card_then_charges_off_session(gateway: MidtransGateway, fake: MidtransFake) -> None:
    method = gateway.attach_method(AttachRequest(organization_id=ORG, type="credit_card", token=CARD_TOKEN))

    result = gateway.charge(charge_request(method))

    assert result.outcome == "succeeded"
    assert (result.amount, result.currency, result.reference) == (AMOUNT, "IDR", "inv_01-a1")
    assert result.gateway_charge_id
    [charge] = [c for c in fake.charges if c["order_id"] == "inv_01-a1"]
    assert charge["initiated_by"] == "merchant"


def test_a_declined_card_is_payment_declined_with_the_gateways_reason(gateway: MidtransGateway) -> None:
    token = "481111-decline-token-77"
    with pytest.raises(PaymentDeclined) as declined:
        gateway.attach_method(AttachRequest(organization_id=ORG, type="credit_card", token=token))

    assert declined.value.reason == "Deny by Bank [BNI] with code [05] and message [Do not honour]"
    assert declined.value.gateway == "midtrans"
    assert token not in str(declined.value)
    assert token not in json.dumps(declined.value.details)


def test_a_card_needing_3ds_cannot_be_saved_and_its_verification_is_cancelled(
    gateway: MidtransGateway, fake: MidtransFake
) -> None:
    token = "481111-3ds-token"
    with pytest.raises(PaymentDeclined) as declined:
        gateway.attach_method(AttachRequest(organization_id=ORG, type="credit_card", token=token))

    assert declined.value.decline_code == "authentication_required"
    verification = fake.transaction(verification_order_id(ORG, token))
    assert verification is not None
    assert verification["transaction_status"] == "cancel"


def test_a_hanging_gateway_is_unavailable_and_records_no_charge(
    gateway: MidtransGateway, fake: MidtransFake
) -> None:
    with pytest.raises(GatewayUnavailable) as unavailable:
        gateway.attach_method(AttachRequest(organization_id=ORG, type="credit_card", token="481111-hang-1"))
    assert unavailable.value.gateway == "midtrans"

    with pytest.raises(GatewayUnavailable):
        gateway.charge(charge_request(card("481111hangsavedtoken1114")))

    assert fake.charges == []


@pytest.mark.parametrize("bank", ["bca", "bni", "bri", "mandiri"])
def test_virtual_accounts_attach_without_a_gateway_call(
    gateway: MidtransGateway, fake: MidtransFake, bank: str
) -> None:
    method = gateway.attach_method(AttachRequest(organization_id=ORG, type="bank_transfer", bank=bank))  # type: ignore[arg-type]

    assert (method.gateway_payment_method_id, method.bank, method.type) == (
        f"va:{bank}",
        bank,
        "bank_transfer",
    )
    assert fake.charges == []


@pytest.mark.parametrize("provider", ["gopay", "shopeepay", "ovo"])
def test_e_wallets_attach_without_a_gateway_call(
    gateway: MidtransGateway, fake: MidtransFake, provider: str
) -> None:
    method = gateway.attach_method(AttachRequest(organization_id=ORG, type="e_wallet", provider=provider))  # type: ignore[arg-type]

    assert (method.gateway_payment_method_id, method.provider) == (f"ewallet:{provider}", provider)
    assert fake.charges == []


# -- charging -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bank", ["bca", "bni", "bri"])
def test_a_virtual_account_charge_is_pending_with_the_va_number(gateway: MidtransGateway, bank: Bank) -> None:
    result = gateway.charge(charge_request(va(bank)))

    assert result.outcome == "pending"
    assert result.instructions is not None
    assert result.instructions.bank == bank
    assert result.instructions.va_number
    assert result.instructions.va_number.isdigit()
    assert result.instructions.expires_at
    assert result.instructions.expires_at.endswith("Z")
    assert result.payment_url is None


def test_a_mandiri_charge_is_a_bill_payment_with_biller_code_and_bill_key(gateway: MidtransGateway) -> None:
    result = gateway.charge(charge_request(va("mandiri")))

    assert result.outcome == "pending"
    assert result.instructions is not None
    assert result.instructions.bank == "mandiri"
    assert result.instructions.biller_code == "70012"
    assert result.instructions.va_number
    assert result.instructions.va_number.isdigit()


@pytest.mark.parametrize("provider", ["gopay", "shopeepay"])
def test_gopay_and_shopeepay_are_pending_with_a_deeplink(gateway: MidtransGateway, provider: str) -> None:
    result = gateway.charge(charge_request(wallet(provider)))

    assert result.outcome == "pending"
    assert result.instructions is not None
    assert result.instructions.provider == provider
    assert result.instructions.deeplink_url
    assert result.instructions.deeplink_url.startswith("http")
    if provider == "gopay":
        assert result.instructions.qr_code_url


def test_ovo_is_pending_with_a_snap_payment_url(gateway: MidtransGateway, fake: MidtransFake) -> None:
    result = gateway.charge(charge_request(wallet("ovo")))

    assert result.outcome == "pending"
    assert result.payment_url
    assert result.payment_url.startswith(f"{fake.url}/snap/")
    assert result.instructions is not None
    assert result.instructions.provider == "ovo"
    assert fake.charge_count("inv_01-a1") == 1


def test_a_payment_link_is_a_snap_page_that_settles(gateway: MidtransGateway, fake: MidtransFake) -> None:
    result = gateway.create_payment_link(charge_request(va("bca"), invoice_id="inv_link"))

    assert result.outcome == "pending"
    assert result.payment_url
    assert gateway.fetch_status("inv_link-a1").state == "absent"  # nothing chosen on the page yet
    fake.settle("inv_link-a1")
    assert gateway.fetch_status("inv_link-a1").state == "succeeded"


def test_a_declined_saved_card_charge_is_declined_with_the_reason(gateway: MidtransGateway) -> None:
    result = gateway.charge(charge_request(card("481111declinedsaved1114")))

    assert result.outcome == "declined"
    assert result.decline_reason == "Deny by Bank [BNI] with code [05] and message [Do not honour]"


def test_a_saved_card_asking_for_3ds_is_pending_with_its_redirect(gateway: MidtransGateway) -> None:
    result = gateway.charge(charge_request(card("4811113dsneededsaved1114")))

    assert result.outcome == "pending"
    assert result.payment_url
    assert "/_fake/3ds/" in result.payment_url


@pytest.mark.parametrize(
    ("method", "outcome"),
    [
        (card(), "succeeded"),
        (card("481111declinedsaved1114"), "declined"),
        (va("bca"), "pending"),
        (va("mandiri"), "pending"),
        (wallet("gopay"), "pending"),
    ],
    ids=["card", "declined-card", "bca", "mandiri", "gopay"],
)
def test_charging_the_same_attempt_twice_charges_once_with_the_same_outcome(
    gateway: MidtransGateway, fake: MidtransFake, method: AttachedMethod, outcome: str
) -> None:
    first = gateway.charge(charge_request(method))
    second = gateway.charge(charge_request(method))

    assert fake.charge_count("inv_01-a1") == 1
    assert first.outcome == second.outcome == outcome
    assert first.gateway_charge_id == second.gateway_charge_id
    assert first.reference == second.reference == "inv_01-a1"
    if outcome == "declined":
        assert first.decline_reason
        assert second.decline_reason
    if method.type == "bank_transfer":
        assert first.instructions is not None
        assert second.instructions is not None
        assert first.instructions.va_number == second.instructions.va_number


def test_the_next_attempt_is_a_new_charge(gateway: MidtransGateway, fake: MidtransFake) -> None:
    gateway.charge(charge_request(card("481111declinedsaved1114"), attempt=1))
    gateway.charge(charge_request(card(), attempt=2))

    assert [c["order_id"] for c in fake.charges] == ["inv_01-a1", "inv_01-a2"]


def test_charging_an_ovo_page_twice_makes_one_page(gateway: MidtransGateway, fake: MidtransFake) -> None:
    first = gateway.charge(charge_request(wallet("ovo")))
    second = gateway.charge(charge_request(wallet("ovo")))

    assert fake.charge_count("inv_01-a1") == 1
    assert first.outcome == second.outcome == "pending"


def test_wrong_server_key_is_our_fault_not_the_payers(fake: MidtransFake) -> None:
    wrong = MidtransGateway(settings_for(fake), MidtransKeys(server_key="SB-Mid-server-wrong", client_key=""))

    with pytest.raises(GatewayUnavailable):
        wrong.charge(charge_request(card()))
    assert fake.charges == []


def test_only_rupiah_goes_to_midtrans(gateway: MidtransGateway) -> None:
    request = charge_request(card())
    with pytest.raises(ValueError, match="IDR"):
        gateway.charge(ChargeRequest(**{**request.__dict__, "currency": "USD"}))


# -- status ---------------------------------------------------------------------------------------------
def test_fetch_status_follows_the_transaction(gateway: MidtransGateway, fake: MidtransFake) -> None:
    gateway.charge(charge_request(va("bni")))

    pending = gateway.fetch_status("inv_01-a1")
    assert (pending.state, pending.gateway_status, pending.amount, pending.currency) == (
        "pending",
        "pending",
        AMOUNT,
        "IDR",
    )
    fake.settle("inv_01-a1")
    settled = gateway.fetch_status("inv_01-a1")
    assert (settled.state, settled.gateway_status, settled.fraud_status) == (
        "succeeded",
        "settlement",
        "accept",
    )
    assert settled.gateway_charge_id == pending.gateway_charge_id


def test_fetch_status_of_cards_expiry_and_unknown_orders(
    gateway: MidtransGateway, fake: MidtransFake
) -> None:
    gateway.charge(charge_request(card(), invoice_id="inv_card"))
    gateway.charge(charge_request(card("481111declinedsaved1114"), invoice_id="inv_deny"))
    gateway.charge(charge_request(wallet("gopay"), invoice_id="inv_exp"))
    fake.expire("inv_exp-a1")

    assert gateway.fetch_status("inv_card-a1").state == "succeeded"
    assert gateway.fetch_status("inv_deny-a1").state == "failed"
    expired = gateway.fetch_status("inv_exp-a1")
    assert (expired.state, expired.gateway_status) == ("failed", "expire")
    unknown = gateway.fetch_status("inv_nothing-a1")
    assert (unknown.state, unknown.amount) == ("absent", 0)


# -- notifications ----------------------------------------------------------------------------------------
def test_a_settlement_notification_verifies(
    gateway: MidtransGateway, fake: MidtransFake, inbox: NotificationInbox
) -> None:
    gateway.charge(charge_request(va("bca")))
    sent = fake.settle("inv_01-a1")

    assert sent["delivery"]["status"] == 200
    [raw] = inbox.bodies
    notification = gateway.verify_notification({"content-type": "application/json"}, raw)
    body = json.loads(raw)
    assert notification.gateway == "midtrans"
    assert notification.reference == "inv_01-a1"
    assert notification.claimed_state == "succeeded"
    assert notification.event_type == "settlement"
    assert notification.event_id == f"{body['transaction_id']}:settlement"
    assert (notification.amount, notification.currency) == (AMOUNT, "IDR")


def test_a_forged_notification_is_refused(
    gateway: MidtransGateway, fake: MidtransFake, inbox: NotificationInbox
) -> None:
    gateway.charge(charge_request(va("bca")))
    fake.settle("inv_01-a1")
    body = json.loads(inbox.bodies[0])

    cheaper = {**body, "gross_amount": "1.00"}  # signed for 299000.00
    with pytest.raises(InvalidSignature):
        gateway.verify_notification({}, json.dumps(cheaper).encode())
    unsigned = {k: v for k, v in body.items() if k != "signature_key"}
    with pytest.raises(InvalidSignature):
        gateway.verify_notification({}, json.dumps(unsigned).encode())
    with pytest.raises(InvalidSignature):
        gateway.verify_notification({}, b"order_id=inv_01-a1")
    other_key = MidtransGateway(
        settings_for(fake), MidtransKeys(server_key="SB-Mid-server-other", client_key="")
    )
    with pytest.raises(InvalidSignature):
        other_key.verify_notification({}, inbox.bodies[0])


def test_a_redelivery_dedupes_but_a_later_status_does_not(
    gateway: MidtransGateway, fake: MidtransFake, inbox: NotificationInbox
) -> None:
    gateway.charge(charge_request(wallet("gopay")))
    fake.notify("inv_01-a1", "pending")
    fake.notify("inv_01-a1", "pending")
    fake.settle("inv_01-a1")

    first, again, settled = (gateway.verify_notification({}, raw) for raw in inbox.bodies)
    assert first.event_id == again.event_id
    assert settled.event_id != first.event_id
    assert (first.claimed_state, settled.claimed_state) == ("pending", "succeeded")


def test_a_notification_can_claim_what_the_status_api_denies(
    gateway: MidtransGateway, fake: MidtransFake, inbox: NotificationInbox
) -> None:
    gateway.charge(charge_request(va("bri")))
    fake.notify("inv_01-a1", "settlement")

    claimed = gateway.verify_notification({}, inbox.bodies[0])  # correctly signed
    assert claimed.claimed_state == "succeeded"
    assert gateway.fetch_status("inv_01-a1").state == "pending"  # the truth the webhook must follow


def test_card_notifications_keep_no_card_fields(
    gateway: MidtransGateway, fake: MidtransFake, inbox: NotificationInbox
) -> None:
    gateway.charge(charge_request(card()))
    fake.notify("inv_01-a1", "capture")

    body = json.loads(inbox.bodies[0])
    assert "masked_card" in body  # Midtrans sends it...
    notification = gateway.verify_notification({}, inbox.bodies[0])
    assert "masked_card" not in notification.raw_fields  # ...Tagih does not keep it
    assert "saved_token_id" not in notification.raw_fields
    assert notification.raw_fields["order_id"] == "inv_01-a1"
