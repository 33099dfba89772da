"""The billing services' ports as a deployed function gets them: the single table, the gateway
registry (SDKs loaded on first charge), the EventBridge publisher, the Step Functions timers, timer
lengths from settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from tagih import clock
from tagih.clock import parse_duration
from tagih.config import Settings, get_settings
from tagih.domain.subscriptions import DEFAULT_GRACE_PERIOD
from tagih.events.publisher import default_publisher
from tagih.gateways.registry import default_gateways
from tagih.services.context import Billing
from tagih.store.catalog import CatalogItems
from tagih.store.invoices import default_invoice_items
from tagih.store.payments import default_payment_items
from tagih.store.subscriptions import default_subscription_items
from tagih.timers.port import NoTimers, Timers

if TYPE_CHECKING:
    from tagih.domain.accounts import AccountStore
    from tagih.domain.payment_methods import PaymentMethodStore
    from tagih.domain.usage import UsageTotals
    from tagih.domain.wallet import WalletStore


def default_timers(settings: Settings) -> Timers:
    """Step Functions timers, unless the request runs under a test clock (advancing the clock runs
    what falls due) or no state machine is configured (tests of the services alone)."""
    arns = (
        settings.trial_state_machine_arn,
        settings.grace_state_machine_arn,
        settings.incomplete_state_machine_arn,
        settings.dunning_state_machine_arn,
    )
    if not any(arns) or clock.is_frozen():
        return NoTimers()
    if not all(arns):
        raise ValueError("configure all four timer state machines, or none")
    from tagih.timers.step_functions import TimerMachines, step_functions_timers

    return step_functions_timers(TimerMachines(*arns))


class Deferred:
    """A port built on its first use: its store module, and the domain models that module loads,
    stay out of the cold start of a request that never needs it (a GET of the subscription reads
    no payment method, account, usage or wallet)."""

    def __init__(self, build: Callable[[], object]) -> None:
        self._build = build
        self._built: object | None = None

    def __getattr__(self, name: str) -> Any:
        if self._built is None:
            self._built = self._build()
        return getattr(self._built, name)


def _payment_method_items() -> object:
    from tagih.store.payment_methods import default_payment_method_items

    return default_payment_method_items()


def _account_items() -> object:
    from tagih.store.accounts import default_account_items

    return default_account_items()


def _usage_items() -> object:
    from tagih.store.usage import default_usage_items

    return default_usage_items()


def _wallet_items() -> object:
    from tagih.store.wallet import default_wallet_items

    return default_wallet_items()


def default_billing() -> Billing:
    settings = get_settings()
    return Billing(
        subscriptions=default_subscription_items(),
        invoices=default_invoice_items(),
        payment_methods=cast("PaymentMethodStore", Deferred(_payment_method_items)),
        accounts=cast("AccountStore", Deferred(_account_items)),
        payments=default_payment_items(),
        catalog=CatalogItems(),
        gateways=default_gateways(),
        publisher=default_publisher(),
        trial_length=parse_duration(settings.trial_duration) if settings.trial_duration else None,
        grace_period=parse_duration(settings.grace_duration)
        if settings.grace_duration
        else DEFAULT_GRACE_PERIOD,
        retry_schedule=settings.retry_delays,
        timers=default_timers(settings),
        usage=cast("UsageTotals", Deferred(_usage_items)),
        wallets=cast("WalletStore", Deferred(_wallet_items)),
    )
