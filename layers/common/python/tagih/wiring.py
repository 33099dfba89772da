"""The billing services' ports as a deployed function gets them: the single table, the gateway
registry (SDKs loaded on first charge), the EventBridge publisher, the Step Functions timers, timer
lengths from settings."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from tagih import clock
from tagih.clock import parse_duration
from tagih.config import Settings, get_settings
from tagih.domain.billing import Billing
from tagih.domain.subscriptions import DEFAULT_GRACE_PERIOD
from tagih.events.publisher import default_publisher
from tagih.gateways.registry import default_gateways
from tagih.store.accounts import default_account_items
from tagih.store.catalog import CatalogItems
from tagih.store.invoices import default_invoice_items
from tagih.store.payment_methods import default_payment_method_items
from tagih.store.payments import default_payment_items
from tagih.store.subscriptions import default_subscription_items
from tagih.timers.port import NoTimers, Timers

if TYPE_CHECKING:
    from tagih.domain.wallet import Wallet, WalletChange, WalletStore, WalletTransaction


def retry_schedule(settings: Settings) -> tuple[timedelta, ...]:
    return tuple(parse_duration(part) for part in settings.dunning_schedule.split(",") if part.strip())


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


class LazyUsageTotals:
    """``billing.UsageTotals`` over the usage items, loaded on a renewal's first read: a request
    path never needs them, and the usage store is not part of its cold start."""

    def counted_between(self, organization_id: str, start: datetime, end: datetime) -> dict[str, int]:
        from tagih.store.usage import default_usage_items

        return default_usage_items().counted_between(organization_id, start, end)


class LazyWalletStore:
    """``wallet.WalletStore`` over the wallet items, loaded when an invoice is charged or a wallet
    read: the wallet's models are not part of every billing function's cold start."""

    @cached_property
    def _items(self) -> WalletStore:
        from tagih.store.wallet import default_wallet_items

        return default_wallet_items()

    def get(self, organization_id: str) -> Wallet | None:
        return self._items.get(organization_id)

    def find_transaction(self, organization_id: str, transaction_id: str) -> WalletTransaction | None:
        return self._items.find_transaction(organization_id, transaction_id)

    def list_transactions(self, organization_id: str) -> list[WalletTransaction]:
        return self._items.list_transactions(organization_id)

    def commit(self, change: WalletChange) -> None:
        self._items.commit(change)


def default_billing() -> Billing:
    settings = get_settings()
    return Billing(
        subscriptions=default_subscription_items(),
        invoices=default_invoice_items(),
        payment_methods=default_payment_method_items(),
        accounts=default_account_items(),
        payments=default_payment_items(),
        catalog=CatalogItems(),
        gateways=default_gateways(),
        publisher=default_publisher(),
        trial_length=parse_duration(settings.trial_duration) if settings.trial_duration else None,
        grace_period=parse_duration(settings.grace_duration)
        if settings.grace_duration
        else DEFAULT_GRACE_PERIOD,
        retry_schedule=retry_schedule(settings),
        timers=default_timers(settings),
        usage=LazyUsageTotals(),
        wallets=LazyWalletStore(),
    )
