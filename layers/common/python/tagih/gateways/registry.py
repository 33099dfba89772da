"""Which gateway handles a payment, and one adapter per gateway per process.

The adapter modules (and their SDKs, stripe and midtransclient) are imported inside ``get``, on the
first charge or attach: a handler that only lists plans never loads a payment SDK.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from tagih.gateways.names import GatewayName, MethodType

if TYPE_CHECKING:
    from tagih.gateways.port import PaymentGateway

STRIPE_METHOD_PREFIX = "pm_"
MIDTRANS_CURRENCY = "IDR"
MIDTRANS_ONLY_TYPES: frozenset[MethodType] = frozenset({"bank_transfer", "e_wallet"})


def _midtrans() -> PaymentGateway:
    from tagih.gateways.midtrans_gateway import MidtransGateway

    return MidtransGateway()


def _stripe() -> PaymentGateway:
    from tagih.gateways.stripe_gateway import StripeGateway

    gateway: PaymentGateway = StripeGateway()
    return gateway


_FACTORIES: dict[GatewayName, Callable[[], PaymentGateway]] = {"midtrans": _midtrans, "stripe": _stripe}


class Gateways:
    """A ``GatewayDirectory`` building each adapter on first use and keeping it (warm Lambdas reuse it)."""

    def __init__(self, factories: dict[GatewayName, Callable[[], PaymentGateway]] | None = None) -> None:
        self._factories = dict(factories or _FACTORIES)
        self._adapters: dict[GatewayName, PaymentGateway] = {}
        self._lock = threading.Lock()

    def get(self, name: GatewayName) -> PaymentGateway:
        adapter = self._adapters.get(name)
        if adapter is not None:
            return adapter
        if name not in self._factories:
            raise KeyError(f"no payment gateway named {name!r}")
        with self._lock:
            adapter = self._adapters.get(name)
            if adapter is None:
                adapter = self._factories[name]()
                self._adapters[name] = adapter
        return adapter


_DEFAULT: Gateways | None = None
_DEFAULT_LOCK = threading.Lock()


def default_gateways() -> Gateways:
    """The process-wide directory: Midtrans and Stripe adapters configured from settings and secrets."""
    global _DEFAULT  # noqa: PLW0603 — one directory per process, like the boto3 clients
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Gateways()
        return _DEFAULT


def reset_default_gateways() -> None:
    """Forget the adapters (tests that change settings or secrets between cases)."""
    global _DEFAULT  # noqa: PLW0603
    with _DEFAULT_LOCK:
        _DEFAULT = None


def choose_gateway(
    token: str | None, currency: str = MIDTRANS_CURRENCY, method_type: MethodType | None = None
) -> GatewayName:
    """API.md: the gateway follows from the token (``pm_…`` Stripe, any other Midtrans).

    Without a token, virtual accounts and e-wallets exist only on Midtrans; otherwise IDR goes to
    Midtrans and every other currency to Stripe (DESIGN.md, Payment gateways).
    """
    if token:
        return "stripe" if token.startswith(STRIPE_METHOD_PREFIX) else "midtrans"
    if method_type in MIDTRANS_ONLY_TYPES:
        return "midtrans"
    return "midtrans" if currency.upper() == MIDTRANS_CURRENCY else "stripe"
