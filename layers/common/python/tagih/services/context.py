"""The ports container every billing service receives, and how services publish.

``Billing`` is built once per request (or per timer firing) by the composition root
(``tagih.wiring``): stores, gateways, the event publisher and the timers behind the Protocols of
``tagih.domain``, plus the durations configured for this stack. Tests build it from in-memory fakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tagih.domain.subscriptions import DEFAULT_GRACE_PERIOD, DEFAULT_RETRY_SCHEDULE
from tagih.events.models import EventType, billing_event
from tagih.timers.port import NoTimers, Timers

if TYPE_CHECKING:
    from tagih.domain.accounts import AccountStore
    from tagih.domain.catalog import CatalogReader
    from tagih.domain.gateway import GatewayDirectory
    from tagih.domain.invoices import InvoiceStore
    from tagih.domain.payment_methods import PaymentMethodStore
    from tagih.domain.payments import PaymentStore
    from tagih.domain.subscriptions import SubscriptionStore
    from tagih.domain.usage import UsageTotals
    from tagih.domain.wallet import WalletStore
    from tagih.events.models import EventPublisher

Event = tuple[EventType, dict[str, Any]]


@dataclass(frozen=True)
class Billing:
    """Everything the billing services need, built once per request (or per timer firing)."""

    subscriptions: SubscriptionStore
    invoices: InvoiceStore
    payment_methods: PaymentMethodStore
    accounts: AccountStore
    payments: PaymentStore
    catalog: CatalogReader
    gateways: GatewayDirectory
    publisher: EventPublisher
    trial_length: timedelta | None = None  # TRIAL_DURATION; None: the plan's trial_days
    grace_period: timedelta = DEFAULT_GRACE_PERIOD
    retry_schedule: tuple[timedelta, ...] = DEFAULT_RETRY_SCHEDULE  # DUNNING_SCHEDULE
    timers: Timers = field(default_factory=NoTimers)
    wallets: WalletStore | None = None  # None: no wallet pays invoices (tests of other services)
    usage: UsageTotals | None = None  # None: renewals bill no overage (tests of other services)

    def publish(self, organization_id: str, at: datetime, *events: Event) -> None:
        """Publish ``events`` (type, data) of ``organization_id`` at ``at``; call after the commit."""
        self.publisher.publish([billing_event(kind, organization_id, data, at) for kind, data in events])
