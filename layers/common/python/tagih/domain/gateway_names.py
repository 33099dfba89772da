"""The gateways' vocabulary: names, what each charges, and the charge reference.

Models and stores that only name a gateway (a pydantic field ``gateway: GatewayName``) import from
here, so a request that never charges does not build the port's request and result types
(``domain.gateway``).
"""

from __future__ import annotations

from typing import Literal

from tagih.domain.errors import InvalidField

GatewayName = Literal["midtrans", "stripe"]
MethodType = Literal["credit_card", "bank_transfer", "e_wallet"]
Bank = Literal["bca", "bni", "bri", "mandiri"]
WalletProvider = Literal["gopay", "shopeepay", "ovo"]
ChargeOutcome = Literal["succeeded", "pending", "declined", "transient"]
# "absent": the gateway has no transaction under the reference (Midtrans looks one up by order_id; a
# Snap page the payer has not used yet is absent too); "unknown": it cannot tell.
PaymentState = Literal["succeeded", "pending", "failed", "unknown", "absent"]

MAX_ORDER_ID = 50  # Midtrans' limit for order_id
MIDTRANS_CURRENCY = "IDR"  # the only currency Midtrans charges
FIRST_ATTEMPT = 1  # attempts count from 1: a first charge's reference is ``<subject>-a1``


def charge_reference(invoice_id: str, attempt: int) -> str:
    """The deterministic key of one charge attempt: Midtrans ``order_id``, Stripe idempotency key.

    Retrying the same attempt (a Lambda retry, a timer firing twice, a client resending) reuses it,
    so the gateway itself refuses to charge twice; the next dunning attempt gets a new one.
    """
    if attempt < FIRST_ATTEMPT:
        raise ValueError("attempts count from 1")
    reference = f"{invoice_id}-a{attempt}"
    if len(reference) > MAX_ORDER_ID:
        raise ValueError(f"charge reference {reference!r} is longer than {MAX_ORDER_ID} characters")
    return reference


def check_gateway_currency(gateway: GatewayName, currency: str, charged: str) -> None:
    """422 on ``payment_method_id`` when ``gateway`` cannot charge ``currency`` (Midtrans charges IDR
    only); ``charged`` names what would be charged ("invoice", "wallet")."""
    if gateway == "midtrans" and currency != MIDTRANS_CURRENCY:
        raise InvalidField(
            "payment_method_id", f"Midtrans charges IDR only; this {charged} is in {currency}."
        )
