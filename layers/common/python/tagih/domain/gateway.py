"""The PaymentGateway port: what Tagih asks of Midtrans and Stripe, in billing terms.

Services receive a ``PaymentGateway`` (or a ``GatewayDirectory`` that picks one by name) as an
argument; the adapters live in ``tagih.gateways`` (``midtrans_gateway.py``, ``stripe_gateway.py``),
imported lazily by ``gateways.registry`` so that a handler that never charges never loads a
payment SDK.

Card data never passes through here: a card arrives as the gateway's token and leaves as the
gateway's reusable reference plus display data (brand, last4).

The names (``GatewayName``, ...) live in ``gateway_names``: modules that only name a gateway import
them from there, so building this module's dataclasses waits for the first charge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tagih.domain.gateway_names import (
    Bank,
    ChargeOutcome,
    GatewayName,
    MethodType,
    PaymentState,
    WalletProvider,
    charge_reference,
)


@dataclass(frozen=True)
class Customer:
    """The billing account as a gateway customer."""

    account_id: str
    organization_id: str
    name: str
    email: str
    phone: str | None = None
    existing_customer_id: str | None = None  # from the account's ``gateway_customer_ids``


@dataclass(frozen=True)
class AttachRequest:
    organization_id: str
    type: MethodType
    token: str | None = None  # Stripe ``pm_…`` or a Midtrans card token; never stored
    customer_id: str | None = None  # the gateway customer (Stripe) the method is attached to
    bank: Bank | None = None
    provider: WalletProvider | None = None


@dataclass(frozen=True)
class AttachedMethod:
    """What Tagih stores of a payment method: the gateway's reusable reference and display data."""

    gateway: GatewayName
    # Stripe ``pm_…``; Midtrans ``saved_token_id``, ``va:bca``, ``ewallet:gopay``
    gateway_payment_method_id: str
    type: MethodType
    brand: str | None = None
    last4: str | None = None
    bank: Bank | None = None
    provider: WalletProvider | None = None


@dataclass(frozen=True)
class ChargeRequest:
    organization_id: str
    invoice_id: str  # the invoice (or wallet transaction) this money is for
    attempt: int
    amount: int  # in Tagih's unit for the currency (IDR rupiah, others cents)
    currency: str  # upper-case ISO 4217
    method: AttachedMethod
    customer: Customer
    description: str = ""
    customer_id: str | None = None  # the gateway customer, when the gateway has one (Stripe)

    @property
    def reference(self) -> str:
        return charge_reference(self.invoice_id, self.attempt)


@dataclass(frozen=True)
class PaymentInstructions:
    """How the payer completes an asynchronous payment (virtual account or e-wallet)."""

    bank: Bank | None = None
    va_number: str | None = None
    provider: WalletProvider | None = None
    deeplink_url: str | None = None
    qr_code_url: str | None = None
    expires_at: str | None = None  # RFC 3339
    # Mandiri bill payment: the company code paid with the bill key (va_number)
    biller_code: str | None = None


@dataclass(frozen=True)
class ChargeResult:
    outcome: ChargeOutcome
    gateway: GatewayName
    reference: str  # the order_id / idempotency key the charge was made under
    gateway_charge_id: str | None = None  # Midtrans transaction_id, Stripe PaymentIntent id
    amount: int = 0
    currency: str = ""
    payment_url: str | None = None
    instructions: PaymentInstructions | None = None
    decline_reason: str | None = None  # the gateway's words, for 402 payment_failed
    reusable_method_id: str | None = None  # e.g. Midtrans saved_token_id learned on first use


@dataclass(frozen=True)
class PaymentStatus:
    """The gateway's own answer to "what happened to this charge?" — the truth for notifications."""

    gateway: GatewayName
    reference: str
    state: PaymentState
    amount: int  # in Tagih's unit
    currency: str
    gateway_status: str  # e.g. Midtrans transaction_status, Stripe PaymentIntent status
    fraud_status: str | None = None
    gateway_charge_id: str | None = None


@dataclass(frozen=True)
class GatewayNotification:
    """A notification whose signature checked out. Its claims are re-checked against the gateway."""

    gateway: GatewayName
    event_id: str  # what deduplicates it (Stripe event id; Midtrans transaction_id + status)
    reference: str | None  # the charge reference (order_id / PaymentIntent metadata), if any
    claimed_state: PaymentState
    event_type: str  # Stripe event type; Midtrans transaction_status
    amount: int | None = None
    currency: str | None = None
    raw_fields: dict[str, str] = field(default_factory=dict)  # safe, non-card fields for logs


class PaymentGateway(Protocol):
    """One payment gateway. Methods raise ``GatewayUnavailable`` for transient faults."""

    name: GatewayName

    def ensure_customer(self, customer: Customer) -> str | None:
        """The gateway's customer id for this account, created on first use (None if the gateway has none)."""
        ...

    def attach_method(self, request: AttachRequest) -> AttachedMethod:
        """Turn a token into a reusable method with display data; ``PaymentDeclined`` if refused."""
        ...

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge once per ``request.reference``, however often it is called."""
        ...

    def fetch_status(self, reference: str, gateway_charge_id: str | None = None) -> PaymentStatus:
        """The gateway's status of a charge: Midtrans by order_id, Stripe by PaymentIntent id."""
        ...

    def verify_notification(self, headers: dict[str, str], raw_body: bytes) -> GatewayNotification:
        """Check the signature on the raw body; ``InvalidSignature`` when it does not hold."""
        ...

    def cancel(self, reference: str) -> bool:
        """Cancel an order nobody paid yet (a superseded virtual account); False when it cannot be
        (paid meanwhile, unknown, or the gateway has nothing to cancel)."""
        ...


class GatewayDirectory(Protocol):
    def get(self, name: GatewayName) -> PaymentGateway: ...
