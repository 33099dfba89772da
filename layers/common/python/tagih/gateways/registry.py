"""One adapter per gateway per process (which gateway a method belongs to is ``domain.payment_methods``).

The adapter modules (and their SDKs, stripe and midtransclient) are imported inside ``get``, on the
first charge or attach: a handler that only lists plans never loads a payment SDK.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from tagih.domain.gateway_names import GatewayName

if TYPE_CHECKING:
    from tagih.domain.gateway import PaymentGateway


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
