"""Subscribing and paying: the services behind the subscription routes, over the pure domain.

``subscriptions`` decides what a subscription becomes, ``invoices`` what is owed, ``payments``
charges once per invoice attempt; this module puts them together with the stores, the gateways and
the event publisher, all passed in (ports), so a request, a timer and a gateway notification run the
same code.

The first invoice of a subscription is charged while it is still a draft: a declined card removes
the subscription and its draft in one transaction ("402 and nothing kept", API.md), and the draft
never took an invoice number, so numbers stay gapless. Only an invoice that was paid or is awaiting
an asynchronous payment is finalized and numbered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from tagih.domain import invoices as inv
from tagih.domain import subscriptions as subs
from tagih.domain.accounts import AccountStore, default_billing_account, ensure_gateway_customer
from tagih.domain.catalog import Plan, TaxRate
from tagih.domain.errors import GatewayUnavailable, InvoiceNotFound, PaymentDeclined, PlanNotFound
from tagih.domain.invoices import Invoice, InvoiceStore
from tagih.domain.payment_methods import PaymentMethod, PaymentMethodStore
from tagih.domain.payments import Payment, PaymentFailed, PaymentSettled, PaymentStore, charge_invoice_attempt
from tagih.domain.subscriptions import BillingCycle, Subscription
from tagih.events.models import EventType, billing_event
from tagih.events.publisher import EventPublisher
from tagih.gateways.port import ChargeRequest, Customer, GatewayDirectory

logger = Logger()

FREE_PLAN = "free"
FIRST_ATTEMPT = 1


class CatalogReader(Protocol):
    def plan(self, slug: str) -> Plan:
        """``PlanNotFound`` for an unknown slug."""
        ...

    def plans(self) -> list[Plan]:
        """Active plans, cheapest first."""
        ...

    def tax_rate(self, currency: str) -> TaxRate: ...


class SubscriptionStore(Protocol):
    def current(self, organization_id: str) -> Subscription | None: ...

    def get(self, organization_id: str, subscription_id: str) -> Subscription: ...

    def has_trialled(self, organization_id: str) -> bool: ...

    def create(
        self,
        subscription: Subscription,
        *,
        replacing: Subscription | None = None,
        trial_started: bool = False,
        invoices: Sequence[Invoice] = (),
    ) -> None: ...

    def save(
        self,
        subscription: Subscription,
        expected_version: int,
        *,
        invoices: Sequence[tuple[Invoice, int | None]] = (),
    ) -> None: ...

    def delete(self, subscription: Subscription, *, invoices: Sequence[Invoice] = ()) -> None: ...


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
    grace_period: timedelta = subs.DEFAULT_GRACE_PERIOD

    def publish(self, organization_id: str, at: datetime, *events: tuple[EventType, dict[str, Any]]) -> None:
        self.publisher.publish([billing_event(kind, organization_id, data, at) for kind, data in events])


@dataclass(frozen=True)
class Subscribed:
    subscription: Subscription
    invoice: Invoice | None  # the first invoice (None for a trial)


# -- reads ----------------------------------------------------------------------------------------------
def current_subscription(billing: Billing, organization_id: str, now: datetime) -> Subscription:
    """The organization's subscription, or Free when it has none (API.md)."""
    stored = billing.subscriptions.current(organization_id)
    return subs.current_or_free(organization_id, stored, billing.catalog.plan(FREE_PLAN), now)


def get_subscription(billing: Billing, organization_id: str, subscription_id: str) -> Subscription:
    return billing.subscriptions.get(organization_id, subscription_id)


# -- subscribing --------------------------------------------------------------------------------------
def default_plan(billing: Billing) -> Plan:
    """API.md: the cheapest paid active plan that can be subscribed to."""
    paid = [
        p
        for p in billing.catalog.plans()
        if p.is_active and not p.is_custom and (p.base_price_monthly or 0) > 0
    ]
    if not paid:
        raise PlanNotFound("The catalog has no paid plan to subscribe to.")
    return min(paid, key=lambda p: (p.base_price_monthly or 0, p.sort_order))


def _payment_method(billing: Billing, organization_id: str, method_id: str | None) -> PaymentMethod | None:
    if method_id is not None:
        return billing.payment_methods.get(organization_id, method_id)  # 404 for another org's
    pointer = billing.payment_methods.default_pointer(organization_id)
    return billing.payment_methods.get(organization_id, pointer.payment_method_id) if pointer else None


def subscribe(
    billing: Billing,
    *,
    organization_id: str,
    plan_slug: str | None,
    cycle: BillingCycle,
    payment_method_id: str | None,
    now: datetime,
) -> Subscribed:
    plan = billing.catalog.plan(plan_slug) if plan_slug else default_plan(billing)
    existing = billing.subscriptions.current(organization_id)
    method = _payment_method(billing, organization_id, payment_method_id)
    trial_available = not billing.subscriptions.has_trialled(organization_id)
    decision = subs.start_subscription(
        organization_id,
        plan,
        cycle,
        now,
        trial_available=trial_available,
        payment_method_id=method.id if method else None,
        gateway=method.gateway if method else None,
        currency=plan.currency,
        existing=existing,
        trial_length=billing.trial_length,
    )
    subscription = decision.subscription
    replacing = existing if existing is not None and existing.id is not None else None
    if decision.first_invoice_lines is None:
        billing.subscriptions.create(subscription, replacing=replacing, trial_started=True)
        billing.publish(organization_id, now, ("billing.subscription.created", subscription.public_data()))
        return Subscribed(subscription, None)

    assert method is not None  # start_subscription refuses a paid start without one
    draft = inv.draft_invoice(
        organization_id=organization_id,
        subscription_id=subscription.id,
        billing_reason=decision.billing_reason,
        currency=plan.currency,
        lines=decision.first_invoice_lines,
        tax=billing.catalog.tax_rate(plan.currency),
        period_start=_required(subscription.current_period_start),
        period_end=_required(subscription.current_period_end),
        due_date=now,
        now=now,
    )
    billing.subscriptions.create(subscription, replacing=replacing, invoices=[draft])
    try:
        payment = charge_invoice(billing, draft, method, FIRST_ATTEMPT, now)
    except (PaymentDeclined, GatewayUnavailable):
        billing.subscriptions.delete(subscription, invoices=[draft])
        raise
    return _first_invoice_charged(billing, subscription, draft, payment, now)


def _first_invoice_charged(
    billing: Billing, subscription: Subscription, draft: Invoice, payment: Payment, now: datetime
) -> Subscribed:
    finalized = billing.invoices.finalize(draft, now)
    events: list[tuple[EventType, dict[str, Any]]] = []
    if payment.status == "succeeded":
        paid = inv.mark_paid(finalized, payment.amount, now)
        active = subs.activate_after_first_payment(subscription, now) or subscription
        billing.subscriptions.save(active, subscription.version, invoices=[(paid, finalized.version)])
        events += [
            ("billing.subscription.created", active.public_data()),
            ("billing.invoice.created", invoice_data(finalized)),
            ("billing.invoice.paid", invoice_data(paid)),
        ]
        result = Subscribed(active, paid)
    else:  # pending: a virtual account or e-wallet the payer completes later
        awaiting = finalized.model_copy(
            update={
                "payment_url": payment.payment_url,
                "gateway_invoice_id": payment.reference if payment.gateway == "midtrans" else None,
                "version": finalized.version + 1,
                "updated_at": now,
            }
        )
        billing.invoices.replace(awaiting, finalized.version)
        events += [
            ("billing.subscription.created", subscription.public_data()),
            ("billing.invoice.created", invoice_data(awaiting)),
        ]
        result = Subscribed(subscription, awaiting)
    billing.publish(subscription.organization_id, now, *events)
    return result


# -- charging -----------------------------------------------------------------------------------------
def _customer(billing: Billing, organization_id: str) -> tuple[Customer, Any]:
    account = default_billing_account(billing.accounts, organization_id)
    if account is None:
        # No billing account yet: the gateway gets the organization as the customer's name.
        return Customer(account_id="", organization_id=organization_id, name=organization_id, email=""), None
    return account.as_customer(), account


def charge_invoice(
    billing: Billing, invoice: Invoice, method: PaymentMethod, attempt: int, now: datetime
) -> Payment:
    """Charge what ``invoice`` has due to ``method``, once per attempt however often this is called."""
    gateway = billing.gateways.get(method.gateway)
    customer, account = _customer(billing, invoice.organization_id)
    customer_id = ensure_gateway_customer(billing.accounts, gateway, account, now) if account else None
    request = ChargeRequest(
        organization_id=invoice.organization_id,
        invoice_id=invoice.id,
        attempt=attempt,
        amount=invoice.amount_due,
        currency=invoice.currency,
        method=method.as_attached(),
        customer=customer,
        description=", ".join(line.description for line in invoice.lines)[:200],
        customer_id=customer_id,
    )
    return charge_invoice_attempt(
        gateway, billing.payments, request, "invoice", payment_method_id=method.id, now=lambda: now
    )


# -- cancelling -------------------------------------------------------------------------------------
def cancel_subscription(
    billing: Billing, organization_id: str, subscription_id: str, now: datetime
) -> Subscription:
    current = billing.subscriptions.get(organization_id, subscription_id)
    cancelled = subs.cancel(current, now, billing.grace_period)
    billing.subscriptions.save(cancelled, current.version)
    kind: EventType = (
        "billing.subscription.cancelled"
        if cancelled.status == "cancelled"
        else "billing.subscription.updated"
    )
    billing.publish(organization_id, now, (kind, cancelled.public_data()))
    return cancelled


def reactivate_subscription(
    billing: Billing, organization_id: str, subscription_id: str, now: datetime
) -> Subscription:
    current = billing.subscriptions.get(organization_id, subscription_id)
    reactivated = subs.reactivate(current, now)
    billing.subscriptions.save(reactivated, current.version)
    billing.publish(organization_id, now, ("billing.subscription.updated", reactivated.public_data()))
    return reactivated


# -- payments that settle later ---------------------------------------------------------------------
@dataclass(frozen=True)
class InvoicePaymentListener:
    """How a gateway notification reaches invoices (``domain.payments.PaymentListener``): a settled
    payment pays its invoice and, for a first invoice, activates the subscription, in one write.
    Idempotent: a paid invoice is left as it is, so a redelivered notification changes nothing."""

    billing: Billing

    def on_payment_settled(self, settled: PaymentSettled) -> None:
        if settled.purpose != "invoice":
            return
        billing, org, at = self.billing, settled.organization_id, settled.settled_at
        try:
            invoice = billing.invoices.get(org, settled.subject_id)
        except InvoiceNotFound:
            # The payment is recorded; failing the notification would only make the gateway retry
            # a payment that has nothing to pay. A person reconciles it.
            logger.error("settled payment of an unknown invoice", extra={"reference": settled.reference})
            return
        if invoice.status == "paid":
            return
        paid = inv.mark_paid(invoice, settled.amount, at)
        subscription = billing.subscriptions.current(org)
        activated = (
            subs.activate_after_first_payment(subscription, at)
            if subscription is not None and subscription.id == invoice.subscription_id
            else None
        )
        if subscription is not None and activated is not None:
            billing.subscriptions.save(activated, subscription.version, invoices=[(paid, invoice.version)])
            billing.publish(
                org,
                at,
                ("billing.invoice.paid", invoice_data(paid)),
                ("billing.subscription.updated", activated.public_data()),
            )
            return
        billing.invoices.replace(paid, invoice.version)
        billing.publish(org, at, ("billing.invoice.paid", invoice_data(paid)))

    def on_payment_failed(self, failed: PaymentFailed) -> None:
        # An asynchronous payment that expired leaves the invoice open: the payer may pay it again
        # (POST /billing/invoices/{id}/pay), and an incomplete subscription expires on its timer.
        logger.info(
            "invoice payment failed", extra={"invoice_id": failed.subject_id, "reason": failed.reason}
        )


def invoice_data(invoice: Invoice) -> dict[str, Any]:
    return invoice.model_dump(mode="json", exclude=set(inv.INTERNAL_FIELDS))


def _required(moment: datetime | None) -> datetime:
    if moment is None:
        raise ValueError("a paid subscription has a current period")
    return moment
