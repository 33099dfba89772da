"""In-memory payment gateways for the billing-account and payment-method services.

``FakeGateway`` attaches methods the way the real adapters answer (Stripe ``pm_…`` ids; Midtrans
saved tokens, ``va:<bank>`` and ``ewallet:<provider>``), never keeps a raw token in what it returns,
declines a token containing ``decline`` (as the local Midtrans fake and localstripe's declined card
do), and records every customer and attach so tests can count calls at the "gateway".
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field

from tagih.domain.errors import PaymentDeclined
from tagih.domain.gateway import (
    AttachedMethod,
    AttachRequest,
    ChargeRequest,
    ChargeResult,
    Customer,
    GatewayNotification,
    PaymentGateway,
    PaymentStatus,
)
from tagih.domain.gateway_names import GatewayName

DECLINED_REASON = "Card declined by the issuer"
# Stripe's test payment-method ids name the card: pm_card_visa, pm_card_mastercard, …
STRIPE_TEST_CARDS = {"visa": "4242", "mastercard": "4444", "amex": "8431"}
MIDTRANS_CARD_TOKEN = re.compile(r"^(\d)\d{5}-(\d{4})-")  # "481111-1114-<uuid>": BIN and last4


@dataclass
class FakeGateway:
    name: GatewayName
    customer_prefix: str = "cus_fake"
    customers: dict[str, str] = field(default_factory=dict)  # account id → customer id
    attached: list[AttachRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ensure_customer(self, customer: Customer) -> str | None:
        if self.name == "midtrans":
            return None
        with self._lock:
            # Like Stripe with an idempotency key per account: one customer per account here.
            return self.customers.setdefault(
                customer.account_id, f"{self.customer_prefix}_{len(self.customers) + 1}"
            )

    def attach_method(self, request: AttachRequest) -> AttachedMethod:
        with self._lock:
            self.attached.append(request)
        token = request.token or ""
        if "decline" in token:
            raise PaymentDeclined(DECLINED_REASON, gateway=self.name, decline_code="card_declined")
        if self.name == "stripe":
            if not token.startswith("pm_") or request.customer_id is None:
                raise ValueError("Stripe attaches a pm_… to a customer")
            brand = token.removeprefix("pm_card_") if token.startswith("pm_card_") else "visa"
            return AttachedMethod(
                gateway="stripe",
                gateway_payment_method_id=token,
                type="credit_card",
                brand=brand,
                last4=STRIPE_TEST_CARDS.get(brand, "4242"),
            )
        if request.type == "bank_transfer":
            return AttachedMethod(
                gateway="midtrans",
                gateway_payment_method_id=f"va:{request.bank}",
                type="bank_transfer",
                bank=request.bank,
            )
        if request.type == "e_wallet":
            return AttachedMethod(
                gateway="midtrans",
                gateway_payment_method_id=f"ewallet:{request.provider}",
                type="e_wallet",
                provider=request.provider,
            )
        card = MIDTRANS_CARD_TOKEN.match(token)
        first_digit, last4 = (card.group(1), card.group(2)) if card else ("4", "1111")
        return AttachedMethod(
            gateway="midtrans",
            # Midtrans' saved_token_id is its own reference, not the one-time token sent.
            gateway_payment_method_id="saved-" + hashlib.sha256(token.encode()).hexdigest()[:16],
            type="credit_card",
            brand={"4": "visa", "5": "mastercard"}.get(first_digit, "card"),
            last4=last4,
        )

    def charge(self, request: ChargeRequest) -> ChargeResult:
        raise NotImplementedError("payment methods never charge")

    def fetch_status(self, reference: str, gateway_charge_id: str | None = None) -> PaymentStatus:
        raise NotImplementedError("payment methods never fetch a charge")

    def verify_notification(self, headers: dict[str, str], raw_body: bytes) -> GatewayNotification:
        raise NotImplementedError("payment methods receive no notifications")

    def cancel(self, reference: str) -> bool:
        raise NotImplementedError("payment methods never cancel an order")


@dataclass
class FakeGatewayDirectory:
    """A ``GatewayDirectory`` of two fakes."""

    midtrans: FakeGateway = field(default_factory=lambda: FakeGateway("midtrans"))
    stripe: FakeGateway = field(default_factory=lambda: FakeGateway("stripe"))

    def get(self, name: GatewayName) -> PaymentGateway:
        return self.midtrans if name == "midtrans" else self.stripe
