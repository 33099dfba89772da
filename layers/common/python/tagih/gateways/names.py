"""The gateways' vocabulary: names and the charge reference, without the port's dataclasses.

Models and stores that only name a gateway (a pydantic field ``gateway: GatewayName``) import from
here, so a request that never charges does not build ``port.py``'s request and result types.
``port.py`` re-exports all of it.
"""

from __future__ import annotations

from typing import Literal

GatewayName = Literal["midtrans", "stripe"]
MethodType = Literal["credit_card", "bank_transfer", "e_wallet"]
Bank = Literal["bca", "bni", "bri", "mandiri"]
WalletProvider = Literal["gopay", "shopeepay", "ovo"]
ChargeOutcome = Literal["succeeded", "pending", "declined", "transient"]
PaymentState = Literal["succeeded", "pending", "failed", "unknown"]

MAX_ORDER_ID = 50  # Midtrans' limit for order_id


def charge_reference(invoice_id: str, attempt: int) -> str:
    """The deterministic key of one charge attempt: Midtrans ``order_id``, Stripe idempotency key.

    Retrying the same attempt (a Lambda retry, a timer firing twice, a client resending) reuses it,
    so the gateway itself refuses to charge twice; the next dunning attempt gets a new one.
    """
    if attempt < 1:
        raise ValueError("attempts count from 1")
    reference = f"{invoice_id}-a{attempt}"
    if len(reference) > MAX_ORDER_ID:
        raise ValueError(f"charge reference {reference!r} is longer than {MAX_ORDER_ID} characters")
    return reference
