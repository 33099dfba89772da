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

import hashlib
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from aws_lambda_powertools import Logger

from tagih.domain import invoices as inv
from tagih.domain import subscriptions as subs
from tagih.domain.catalog import Addon, Features, Limits, Plan, TaxRate
from tagih.domain.errors import (
    BillingError,
    CurrencyMismatch,
    GatewayUnavailable,
    InvoiceNotFound,
    NotSuspended,
    PaymentDeclined,
    PaymentMethodNotFound,
    PaymentMethodRequired,
    PlanNotFound,
    VersionConflict,
)
from tagih.domain.invoices import Invoice, InvoiceStore
from tagih.domain.money import Currency
from tagih.domain.subscriptions import BillingCycle, ChangeDecision, Subscription
from tagih.events.models import EventType, billing_event
from tagih.events.publisher import EventPublisher
from tagih.gateways.names import charge_reference
from tagih.ids import new_id
from tagih.timers.port import NoTimers, Timers

if TYPE_CHECKING:
    from tagih.domain.accounts import AccountStore
    from tagih.domain.payment_methods import PaymentMethod, PaymentMethodStore
    from tagih.domain.payments import Payment, PaymentFailed, PaymentListener, PaymentSettled, PaymentStore
    from tagih.domain.wallet import WalletStore
    from tagih.gateways.port import Customer, GatewayDirectory, PaymentGateway

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

    def addon(self, slug: str) -> Addon:
        """``AddonNotFound`` for an unknown slug."""
        ...

    def tax_rate(self, currency: str) -> TaxRate: ...


class UsageTotals(Protocol):
    def counted_between(self, organization_id: str, start: datetime, end: datetime) -> dict[str, int]:
        """Counted metrics' totals over ``[start, end)`` (``store.usage.UsageItems``)."""
        ...


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
    retry_schedule: tuple[timedelta, ...] = subs.DEFAULT_RETRY_SCHEDULE  # DUNNING_SCHEDULE
    timers: Timers = field(default_factory=NoTimers)
    wallets: WalletStore | None = None  # None: no wallet pays invoices (tests of other services)
    usage: UsageTotals | None = None  # None: renewals bill no overage (tests of other services)

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
        billing.timers.start_trial_timer(subscription)  # armed before the commit: see timers.port
        billing.subscriptions.create(subscription, replacing=replacing, trial_started=True)
        billing.publish(organization_id, now, ("billing.subscription.created", subscription.public_data()))
        return Subscribed(subscription, None)

    assert method is not None  # start_subscription refuses a paid start without one
    draft = subscription_draft(
        billing,
        subscription,
        decision.billing_reason,
        decision.first_invoice_lines,
        period=_period_of(subscription),
        due_date=now,
        now=now,
    )
    billing.subscriptions.create(subscription, replacing=replacing, invoices=[draft])
    try:
        draft = pay_from_wallet_first(billing, draft, now)
        payment = charge_invoice(billing, draft, method, FIRST_ATTEMPT, now) if draft.amount_due else None
    except BillingError:
        # Nothing is kept: what the wallet paid goes back to it, then the draft goes with the subscription.
        billing.subscriptions.delete(subscription, invoices=[return_wallet_credit(billing, draft, now)])
        raise
    return _first_invoice_charged(billing, subscription, draft, payment, now)


def _first_invoice_charged(
    billing: Billing, subscription: Subscription, draft: Invoice, payment: Payment | None, now: datetime
) -> Subscribed:
    finalized = billing.invoices.finalize(draft, now)  # paid at once when the wallet covered it
    events: list[tuple[EventType, dict[str, Any]]] = []
    if payment is None or payment.status == "succeeded":
        # Covered by the wallet, it was paid as it was numbered: written again with the subscription.
        paid = inv.mark_paid(finalized, payment.amount, now) if payment else _rewritten(finalized, now)
        active = subs.activate_after_first_payment(subscription, now) or subscription
        billing.subscriptions.save(active, subscription.version, invoices=[(paid, finalized.version)])
        events += [
            ("billing.subscription.created", active.public_data()),
            ("billing.invoice.created", invoice_data(finalized)),
            ("billing.invoice.paid", invoice_data(paid)),
        ]
        result = Subscribed(active, paid)
    else:  # pending: a virtual account or e-wallet the payer completes later
        billing.timers.start_incomplete_timer(subscription)
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
def pay_from_wallet_first(billing: Billing, invoice: Invoice, now: datetime) -> Invoice:
    """The wallet pays invoices before any card (API.md): what its balance covers is applied to the
    stored ``invoice`` (``credits_applied``); the card is charged only what is left due."""
    if billing.wallets is None:
        return invoice
    from tagih.domain.wallet import pay_from_wallet  # the charging paths only

    return pay_from_wallet(billing, invoice, now)


def return_wallet_credit(billing: Billing, invoice: Invoice, now: datetime) -> Invoice:
    """Give back to the wallet what it paid on an invoice that is not kept (a declined first charge)."""
    if billing.wallets is None or invoice.credits_applied == 0:
        return invoice
    from tagih.domain.wallet import return_invoice_credit

    return return_invoice_credit(billing, invoice, now)


def void_returning_wallet_credit(billing: Billing, invoice: Invoice, now: datetime) -> tuple[Invoice, int]:
    """``invoice`` voided (nothing is owed on it), what the wallet paid of it given back first (a
    ``refund`` entry): the void invoice and the stored version it is written over."""
    returned = return_wallet_credit(billing, invoice, now)
    return inv.void(returned, now), returned.version


def gateway_customer(
    billing: Billing, gateway: PaymentGateway, organization_id: str, now: datetime
) -> tuple[Customer, str | None]:
    """Who a charge is for: the organization's default billing account, with its customer id at
    ``gateway`` (created there on first use); with no account yet, the organization by name."""
    # accounts and the port's dataclasses load only on the charging path
    from tagih.domain.accounts import default_billing_account, ensure_gateway_customer
    from tagih.gateways.port import Customer

    account = default_billing_account(billing.accounts, organization_id)
    if account is None:
        return Customer(account_id="", organization_id=organization_id, name=organization_id, email=""), None
    return account.as_customer(), ensure_gateway_customer(billing.accounts, gateway, account, now)


def charge_invoice(
    billing: Billing, invoice: Invoice, method: PaymentMethod, attempt: int, now: datetime
) -> Payment:
    """Charge what ``invoice`` has due to ``method``, once per attempt however often this is called."""
    # payments and the port's dataclasses load only on the charging path
    from tagih.domain.payments import charge_invoice_attempt
    from tagih.gateways.port import ChargeRequest

    gateway = billing.gateways.get(method.gateway)
    customer, customer_id = gateway_customer(billing, gateway, invoice.organization_id, now)
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
    if cancelled.status == "grace_period":
        billing.timers.start_grace_timer(cancelled)
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
    ends = reactivated.trial_ends_at
    if reactivated.status == "trialing" and ends is not None and ends <= now:
        # The trial's own timer fired while it was cancelled and stopped; a new one ends it now.
        billing.timers.start_trial_timer(reactivated)
    billing.subscriptions.save(reactivated, current.version)
    billing.timers.stop_grace_timer(current)
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
        try:
            invoice = self.billing.invoices.get(settled.organization_id, settled.subject_id)
        except InvoiceNotFound:
            # The payment is recorded; failing the notification would only make the gateway retry
            # a payment that has nothing to pay. A person reconciles it.
            logger.error("settled payment of an unknown invoice", extra={"reference": settled.reference})
            return
        record_invoice_paid(self.billing, invoice, settled.amount, settled.settled_at)

    def on_payment_failed(self, failed: PaymentFailed) -> None:
        # An asynchronous payment that expired leaves the invoice open: the payer may pay it again
        # (POST /billing/invoices/{id}/pay), and an incomplete subscription expires on its timer.
        logger.info(
            "invoice payment failed", extra={"invoice_id": failed.subject_id, "reason": failed.reason}
        )


@dataclass(frozen=True)
class BillingPaymentListener:
    """Every payment a gateway confirms, routed by what it pays for: invoices, or wallet top-ups."""

    billing: Billing

    def _routed(self, purpose: str) -> PaymentListener:
        if purpose == "wallet_top_up":
            from tagih.domain.wallet import WalletPaymentListener  # top-up notifications only

            return WalletPaymentListener(self.billing)
        return InvoicePaymentListener(self.billing)

    def on_payment_settled(self, settled: PaymentSettled) -> None:
        self._routed(settled.purpose).on_payment_settled(settled)

    def on_payment_failed(self, failed: PaymentFailed) -> None:
        self._routed(failed.purpose).on_payment_failed(failed)


def record_invoice_paid(billing: Billing, invoice: Invoice, amount: int, at: datetime) -> None:
    """Pay ``invoice`` with ``amount`` (all it has due; 0 when the wallet covered it) and, for a
    first, trial-end, dunned or change invoice, move its subscription on, in one write. Idempotent:
    a paid invoice is left as it is, so a redelivered notification changes nothing."""
    org = invoice.organization_id
    if invoice.status == "paid":
        return
    paid = inv.mark_paid(invoice, amount, at)
    subscription = billing.subscriptions.current(org)
    activated = (
        _paid_up(billing, subscription, invoice, at)
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


def _paid_up(
    billing: Billing, subscription: Subscription, invoice: Invoice, at: datetime
) -> Subscription | None:
    """What paying its open invoice makes of a subscription: a first invoice activates it, the
    invoice after a trial converts it, a dunned one recovers it, a plan change's invoice applies
    the change; anything else is unchanged."""
    if invoice.plan_change is not None:
        return _ordered_change(billing, subscription, invoice, invoice.plan_change, at)
    if invoice.addon_change is not None:
        from tagih.domain.addons import ordered_addon_change  # add-on invoices only

        return ordered_addon_change(billing, subscription, invoice, invoice.addon_change, at)
    return (
        subs.activate_after_first_payment(subscription, at)
        or subs.trial_converted(subscription, at)
        or subs.payment_recovered(subscription, at)
    )


def _ordered_change(
    billing: Billing, subscription: Subscription, invoice: Invoice, order: inv.PlanChangeOrder, at: datetime
) -> Subscription | None:
    """The change a settled ``subscription_update`` invoice paid for, applied as of when it was
    asked (an annual period starts then: that is what the lines billed). Only if the subscription
    would still invoice exactly those lines for it; otherwise None, logged for a refund."""
    try:
        plan = billing.catalog.plan(order.plan)
        decision = subs.preview_change(subscription, plan, order.billing_cycle, order.requested_at)
    except BillingError:
        decision = None
    if decision is None or not decision.immediate or decision.lines != invoice.lines:
        logger.error(
            "a paid plan change no longer applies; refund the payment",
            extra={"subscription_id": subscription.id, "invoice_id": invoice.id},
        )
        return None
    changed = subs.apply_change(subscription, decision, plan, order.requested_at)
    return changed.model_copy(update={"updated_at": at})


def invoice_data(invoice: Invoice) -> dict[str, Any]:
    return invoice.model_dump(mode="json", exclude=set(inv.INTERNAL_FIELDS))


def _required(moment: datetime | None) -> datetime:
    if moment is None:
        raise ValueError("a paid subscription has a current period")
    return moment


# -- changing plan ------------------------------------------------------------------------------------
# How a paid change is kept from charging twice (``change_plan``):
#
# The right to charge for changing version ``v`` of a subscription is the conditional write of the
# charge's payment record, keyed by a reference derived from (subscription, ``v``, try): the change's
# invoice id is deterministic (``change_invoice_id``), and so is its charge reference. Two requests
# that read the same version compete for that one write BEFORE any gateway call: the winner charges,
# the loser gets 409 ``version_conflict`` and never reaches the gateway. A request that reads the
# subscription after the winner committed sees the next version (409 with ``expected_version``, or a
# change from the new plan). Nothing else is written before the charge succeeds: a declined card
# leaves only its failed payment record (the next try of the same change takes the next try number),
# the subscription keeps its version and no invoice is kept.
#
# Rejected alternatives: bumping the subscription's version as a claim before charging does not stop
# a request that reads the bumped version during the charge (it would claim and charge again), and
# undoing it after a decline leaves a version change with nothing changed; writing the draft invoice
# as the claim needs a draft to be deleted after a decline, which the stores do not offer on its own.
MAX_CHANGE_TRIES = 10  # declined charges for one change of one version before refusing more
# A ``processing`` claim older than this was left by a crashed request (the functions time out after
# 15 s): charging it again with the same reference is what ``charge_invoice_attempt`` is built for.
ABANDONED_CHARGE = timedelta(minutes=2)
MAX_CHANGE_COMMITS = 3
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 20


class PlanChanged(NamedTuple):
    subscription: Subscription
    # The prorated invoice: paid; ``open`` with a ``payment_url`` while an asynchronous payment is
    # awaited (the plan is then unchanged); ``None`` when nothing is invoiced now.
    invoice: Invoice | None


@dataclass(frozen=True)
class PlanChangePreview:
    """What ``change_plan`` would do at the same moment, computed and not written."""

    decision: ChangeDecision
    subscription: Subscription  # as the change would leave it (an upgrade: once its invoice is paid)
    invoice: Invoice | None  # the draft the change would invoice and charge; None when nothing
    tax: TaxRate  # the subscription currency's, shown even when nothing is invoiced

    @property
    def scheduled_change(self) -> subs.ScheduledChange | None:
        return None if self.decision.immediate else self.subscription.scheduled_change


def change_invoice_id(subscription: Subscription, attempt: int) -> str:
    """The id of the invoice for try ``attempt`` of a change of ``subscription`` at its version: the
    same for every request that read that version, so their charges share one reference."""
    seed = f"plan-change:{subscription.id}:{subscription.version}:{attempt}".encode()
    number = int.from_bytes(hashlib.sha256(seed).digest(), "big")
    chars = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return "inv_" + "".join(chars)


def change_draft(
    billing: Billing,
    sub: Subscription,
    lines: list[inv.InvoiceLine],
    now: datetime,
    *,
    plan_change: inv.PlanChangeOrder | None = None,
    addon_change: inv.AddonChangeOrder | None = None,
) -> Invoice | None:
    """The draft invoicing a change's ``lines`` (None when there are none), due now, over the lines'
    span (``[now, period end)`` for an upgrade, the new year for a monthly→annual change), recording
    what it pays for, so a payment that settles later applies exactly that."""
    if not lines:
        return None
    starts = [line.period_start or now for line in lines]
    ends = [line.period_end or now for line in lines]
    draft = subscription_draft(
        billing, sub, "subscription_update", lines, period=(min(starts), max(ends)), due_date=now, now=now
    )
    return draft.model_copy(update={"plan_change": plan_change, "addon_change": addon_change})


def _period_of(sub: Subscription) -> tuple[datetime, datetime]:
    return _required(sub.current_period_start), _required(sub.current_period_end)


def subscription_draft(
    billing: Billing,
    sub: Subscription,
    reason: inv.BillingReason,
    lines: list[inv.InvoiceLine],
    *,
    period: tuple[datetime, datetime],
    due_date: datetime,
    now: datetime,
) -> Invoice:
    """A draft invoice of ``sub``'s, in its currency, taxed at the catalog's rate for it."""
    return inv.draft_invoice(
        organization_id=sub.organization_id,
        subscription_id=sub.id,
        billing_reason=reason,
        currency=sub.currency,
        lines=lines,
        tax=billing.catalog.tax_rate(sub.currency),
        period_start=period[0],
        period_end=period[1],
        due_date=due_date,
        now=now,
    )


def _plan_change_draft(
    billing: Billing, sub: Subscription, decision: ChangeDecision, now: datetime
) -> Invoice | None:
    order = inv.PlanChangeOrder(plan=decision.plan, billing_cycle=decision.billing_cycle, requested_at=now)
    return change_draft(billing, sub, decision.lines, now, plan_change=order)


def preview_plan_change(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    *,
    plan_slug: str,
    cycle: BillingCycle | None,
    now: datetime,
) -> PlanChangePreview:
    """``POST …/change/preview``: the same decision ``change_plan`` takes at ``now``, nothing written.
    The draft's id and hosted token are throwaway: only ``change_plan`` creates an invoice."""
    current = billing.subscriptions.get(organization_id, subscription_id)
    plan = billing.catalog.plan(plan_slug)
    decision = subs.preview_change(current, plan, cycle, now)
    return PlanChangePreview(
        decision=decision,
        subscription=subs.apply_change(current, decision, plan, now),
        invoice=_plan_change_draft(billing, current, decision, now),
        tax=billing.catalog.tax_rate(current.currency),
    )


def change_plan(
    billing: Billing,
    organization_id: str,
    subscription_id: str,
    *,
    plan_slug: str,
    cycle: BillingCycle | None,
    expected_version: int | None = None,
    now: datetime,
) -> PlanChanged:
    """``POST …/change`` and ``PATCH …/{id}``: move the subscription to ``plan_slug`` (and ``cycle``).

    - ``expected_version`` not the stored version → 409 ``version_conflict``, before anything else;
    - a positive net to invoice now (an upgrade's proration, monthly→annual) → a draft invoice
      (``subscription_update``, due now) charged to the subscription's payment method, else the
      organization's default (422 ``payment_method_required`` without one), while still a draft,
      like a first invoice. Paid → numbered, and the changed subscription and the paid invoice are
      written in ONE transaction. Declined → 402 and nothing changes. Asynchronous (virtual
      account, e-wallet) → the plan stays as it is and the invoice is kept ``open`` with its
      ``payment_url``; when that payment settles, ``InvoicePaymentListener`` applies the change the
      invoice records (``plan_change``) as of when it was asked;
    - nothing positive to invoice (a trial, a downgrade or an annual→monthly switch scheduled for
      the period end, a proration netting to zero or less) → written at once with no charge, with a
      (paid at once) invoice only when there are lines.

    How two concurrent changes are kept from both charging: see the comment above
    ``MAX_CHANGE_TRIES``. A write that lands on the subscription while the winner is charging (a
    cancel, an operator's suspension) is handled by ``_commit_paid_change``.
    """
    current = billing.subscriptions.get(organization_id, subscription_id)
    if expected_version is not None and expected_version != current.version:
        raise VersionConflict(
            f"Subscription {subscription_id!r} is at version {current.version}, not {expected_version}; "
            "read it again and retry."
        )
    plan = billing.catalog.plan(plan_slug)
    decision = subs.preview_change(current, plan, cycle, now)
    draft = _plan_change_draft(billing, current, decision, now)
    if draft is not None and draft.amount_due > 0:
        change = SubscriptionChange(
            billing,
            current,
            now,
            Decided(decision.lines, subs.apply_change(current, decision, plan, now)),
            redecide=_plan_change_decider(plan, decision.billing_cycle, now),
        )
        return charge_subscription_change(change, draft)

    changed = subs.apply_change(current, decision, plan, now)
    if changed is current:  # the same plan and cycle, nothing scheduled: nothing to write
        return PlanChanged(current, None)
    if draft is None:
        billing.subscriptions.save(changed, current.version)
        billing.publish(organization_id, now, ("billing.subscription.updated", changed.public_data()))
        return PlanChanged(changed, None)
    # Lines netting to nothing due: the record of the change, paid at once when numbered.
    billing.subscriptions.save(changed, current.version, invoices=[(draft, None)])
    finalized = billing.invoices.finalize(draft, now)
    events: list[tuple[EventType, dict[str, Any]]] = [
        ("billing.subscription.updated", changed.public_data()),
        ("billing.invoice.created", invoice_data(finalized)),
    ]
    if finalized.status == "paid":
        events.append(("billing.invoice.paid", invoice_data(finalized)))
    billing.publish(organization_id, now, *events)
    return PlanChanged(changed, finalized)


def _change_payment_method(billing: Billing, sub: Subscription) -> PaymentMethod | None:
    """The subscription's method, or the organization's default when it has none (or it was removed)."""
    if sub.payment_method_id is not None:
        try:
            return billing.payment_methods.get(sub.organization_id, sub.payment_method_id)
        except PaymentMethodNotFound:
            pass
    return _payment_method(billing, sub.organization_id, None)


@dataclass(frozen=True)
class Decided:
    """A change decided on one version: the lines it invoices now and the subscription it makes."""

    lines: list[inv.InvoiceLine]
    changed: Subscription


@dataclass(frozen=True)
class SubscriptionChange:
    """A paid change (a plan change, an add-on) being carried out: decided on ``base`` (the version
    read) at ``now``. ``redecide`` decides the same change on a newer version (None, or a
    ``BillingError``, when it no longer applies)."""

    billing: Billing
    base: Subscription
    now: datetime
    decided: Decided
    redecide: Callable[[Subscription], Decided | None]


def _plan_change_decider(
    plan: Plan, cycle: BillingCycle, at: datetime
) -> Callable[[Subscription], Decided | None]:
    def decide(sub: Subscription) -> Decided | None:
        decision = subs.preview_change(sub, plan, cycle, at)
        if not decision.immediate:
            return None
        return Decided(decision.lines, subs.apply_change(sub, decision, plan, at))

    return decide


def charge_subscription_change(change: SubscriptionChange, draft: Invoice) -> PlanChanged:
    """Charge a change's draft invoice, once per version of the subscription however many requests
    race (see the comment above ``MAX_CHANGE_TRIES``), and write the change with its paid invoice."""
    from tagih.domain.payments import Payment  # loads only on the charging path

    billing, current, now = change.billing, change.base, change.now
    method = _change_payment_method(billing, current)
    if method is None:
        raise PaymentMethodRequired("This change is charged at once; add a payment method first.")
    for attempt in range(1, MAX_CHANGE_TRIES + 1):
        candidate = draft.model_copy(update={"id": change_invoice_id(current, attempt)})
        claim = Payment(
            organization_id=candidate.organization_id,
            reference=charge_reference(candidate.id, FIRST_ATTEMPT),
            purpose="invoice",
            subject_id=candidate.id,
            attempt=FIRST_ATTEMPT,
            gateway=method.gateway,
            payment_method_id=method.id,
            amount=candidate.amount_due,
            currency=candidate.currency,
            status="processing",
            created_at=now,
            updated_at=now,
        )
        existing = billing.payments.claim(claim)
        if existing is None:  # ours: no other request may charge this change of this version
            return _charge_claimed_change(change, candidate, method, claim)
        if existing.status == "failed":  # a declined try: the next one gets its own reference
            _void_unpaid_change_invoice(billing, existing, now)
            continue
        # Another request holds this try. What it charges is its invoice if stored (a proration
        # computed a few seconds apart differs), else what we would charge.
        charged = _stored_invoice_or(billing, candidate)
        if charged.status == "paid":
            # An asynchronous payment of this change settled (and applied it, or was logged for a
            # refund): charging the same change again would make the customer pay twice.
            raise VersionConflict(
                f"This change was paid on invoice {charged.id}; read the subscription again."
            )
        if (existing.amount, existing.currency) != (charged.amount_due, charged.currency):
            raise VersionConflict(
                "Another change of this subscription is being paid; read the subscription again."
            )
        if existing.status == "processing":
            if now - existing.updated_at < ABANDONED_CHARGE:
                raise VersionConflict(
                    "This change is being charged by another request; read the subscription again shortly."
                )
            return _charge_claimed_change(change, charged, method, existing)
        # succeeded or pending: an earlier request charged this very change and did not finish
        # recording it (it crashed, or is finishing right now): finish it, never charge again.
        return _record_change_payment(change, charged, existing)
    raise PaymentDeclined(
        f"{MAX_CHANGE_TRIES} charges for this change were declined; use another payment method or "
        "contact support.",
        gateway=method.gateway,
    )


def _rewritten(invoice: Invoice, now: datetime) -> Invoice:
    """``invoice`` unchanged but for its version, to be written in a transaction with its subscription."""
    return invoice.model_copy(update={"version": invoice.version + 1, "updated_at": now})


def _charge_claimed_change(
    change: SubscriptionChange, candidate: Invoice, method: PaymentMethod, claim: Payment
) -> PlanChanged:
    billing = change.billing
    try:
        # ``charge_invoice_attempt`` finds our claim and carries it out (its "left processing" path).
        payment = charge_invoice(billing, candidate, method, FIRST_ATTEMPT, change.now)
    except (PaymentDeclined, GatewayUnavailable):
        # A decline is recorded as failed and a gateway fault released the claim already; a fault
        # before the gateway was asked (its customer record) leaves our claim: release it, so the
        # same change can be tried again at once. Nothing else was written.
        billing.payments.release_claim(claim.organization_id, claim.reference, claim.version)
        raise
    return _record_change_payment(change, candidate, payment)


def _void_unpaid_change_invoice(billing: Billing, failed: Payment, now: datetime) -> None:
    """An asynchronous try that expired left its invoice open: void it, so nobody pays for a change
    that was not made. A declined card never stored one."""
    try:
        invoice = billing.invoices.get(failed.organization_id, failed.subject_id)
    except InvoiceNotFound:
        return
    if invoice.status in inv.UNPAID_STATUSES:
        try:
            billing.invoices.replace(inv.void(invoice, now), invoice.version)
        except VersionConflict:
            logger.info("change invoice moved while voiding it", extra={"invoice_id": invoice.id})


def _stored_invoice_or(billing: Billing, candidate: Invoice) -> Invoice:
    try:
        return billing.invoices.get(candidate.organization_id, candidate.id)
    except InvoiceNotFound:
        return candidate


def _stored_change_invoice(billing: Billing, candidate: Invoice, now: datetime) -> Invoice:
    """The change's invoice, numbered: written and finalized now, or as an earlier request left it."""
    try:
        stored = billing.invoices.get(candidate.organization_id, candidate.id)
    except InvoiceNotFound:
        billing.invoices.save_draft(candidate)  # VersionConflict if a racing request just did
        stored = candidate
    return billing.invoices.finalize(stored, now) if stored.status == "draft" else stored


def _record_change_payment(change: SubscriptionChange, candidate: Invoice, payment: Payment) -> PlanChanged:
    billing, base, now = change.billing, change.base, change.now
    org = base.organization_id
    invoice = _stored_change_invoice(billing, candidate, now)
    if payment.status != "succeeded":  # pending: the plan stays until the payment settles
        if invoice.payment_url is not None or invoice.status not in inv.UNPAID_STATUSES:
            return PlanChanged(base, invoice)
        awaiting = invoice.model_copy(
            update={
                "payment_url": payment.payment_url,
                "gateway_invoice_id": payment.reference if payment.gateway == "midtrans" else None,
                "version": invoice.version + 1,
                "updated_at": now,
            }
        )
        billing.invoices.replace(awaiting, invoice.version)
        billing.publish(org, now, ("billing.invoice.created", invoice_data(awaiting)))
        return PlanChanged(base, awaiting)
    if invoice.status != "open":
        raise VersionConflict(f"Invoice {invoice.id} was already recorded; read the subscription again.")
    paid = inv.mark_paid(invoice, payment.amount, now)
    changed = _commit_paid_change(change, invoice, paid)
    billing.publish(
        org,
        now,
        ("billing.subscription.updated", changed.public_data()),
        ("billing.invoice.created", invoice_data(invoice)),
        ("billing.invoice.paid", invoice_data(paid)),
    )
    return PlanChanged(changed, paid)


def _commit_paid_change(change: SubscriptionChange, finalized: Invoice, paid: Invoice) -> Subscription:
    """Write the changed subscription with its paid invoice, in ONE transaction.

    The charge is made, so the change should land: if the subscription moved meanwhile (another
    write between our read and now), it is read again and the change applied to it, provided it
    would invoice exactly the lines that were paid (``expected_version`` was checked when the
    request began, before the charge; a write that kept the terms does not undo a paid change).
    Otherwise (cancelled, suspended, repriced) the paid invoice is recorded on its own, the payment
    flagged for a refund in the logs, and 409."""
    billing, base, decided, now = change.billing, change.base, change.decided, change.now
    org = base.organization_id
    for _ in range(MAX_CHANGE_COMMITS):
        try:
            billing.subscriptions.save(decided.changed, base.version, invoices=[(paid, finalized.version)])
            return decided.changed
        except VersionConflict:
            fresh = billing.subscriptions.current(org)
        if fresh is None or fresh.id != base.id or fresh.version == base.version:
            break  # gone, replaced, or the invoice (not the subscription) moved: another request recorded it
        try:
            again = change.redecide(fresh)
        except BillingError:
            break
        if again is None or again.lines != decided.lines:
            break
        base, decided = fresh, again
    billing.invoices.replace(paid, finalized.version)  # VersionConflict: another request recorded it
    logger.error(
        "a paid subscription change could not be applied; refund the payment",
        extra={"organization_id": org, "subscription_id": base.id, "invoice_id": paid.id},
    )
    billing.publish(
        org,
        now,
        ("billing.invoice.created", invoice_data(finalized)),
        ("billing.invoice.paid", invoice_data(paid)),
    )
    raise VersionConflict(
        f"The subscription changed while the change was being charged; the payment is recorded on "
        f"invoice {paid.id} and the plan was not changed. Contact support for a refund."
    )


# -- operators --------------------------------------------------------------------------------------
# Operator services act on the organization they are given (the path's), not on the caller's: the
# operator routes check the ``billing:operator`` scope before any of this runs.
class EnterpriseActivated(NamedTuple):
    subscription: Subscription
    invoice: Invoice  # the first period's invoice: open, due after the payment terms


def activate_enterprise_terms(
    billing: Billing,
    organization_id: str,
    *,
    price_monthly: int,
    currency: Currency,
    cycle: BillingCycle,
    limits: Limits,
    features: Features,
    payment_terms_days: int,
    now: datetime,
) -> EnterpriseActivated:
    """Put the organization on Enterprise custom terms, active from ``now`` (``subs.activate_enterprise``).

    Enterprise pays by invoice: the first period (less the unused paid time of a live subscription
    it converts) is invoiced at once, ``open`` and due ``payment_terms_days`` from now, and NOT
    charged to any card. The subscription and the draft are written in one transaction (a live
    subscription at the version read, else replacing a cancelled one or none), then the invoice is
    numbered. A converted subscription must already be billed in ``currency`` (422
    ``currency_mismatch``): its credit is in that currency. A suspended organization is refused
    (403 ``organization_suspended``): unsuspend it first.
    """
    existing = billing.subscriptions.current(organization_id)
    decision = subs.activate_enterprise(
        organization_id,
        existing,
        price_monthly=price_monthly,
        currency=currency,
        cycle=cycle,
        limits=limits,
        features=features,
        payment_terms_days=payment_terms_days,
        at=now,
    )
    subscription = decision.subscription
    converted = existing is not None and existing.id == subscription.id
    if existing is not None and converted and existing.currency != currency:
        raise CurrencyMismatch(
            f"The subscription is billed in {existing.currency}; Enterprise terms in {currency} "
            "would credit its unused time in another currency."
        )
    draft = subscription_draft(
        billing,
        subscription,
        decision.billing_reason,
        decision.first_invoice_lines or [],
        period=_period_of(subscription),
        due_date=now + timedelta(days=payment_terms_days),
        now=now,
    )
    if existing is not None and converted:
        billing.subscriptions.save(subscription, existing.version, invoices=[(draft, None)])
    else:
        billing.subscriptions.create(subscription, replacing=existing, invoices=[draft])
    invoice = billing.invoices.finalize(draft, now)  # nothing due (a price of 0): paid at once
    kind: EventType = "billing.subscription.updated" if converted else "billing.subscription.created"
    events: list[tuple[EventType, dict[str, Any]]] = [
        (kind, subscription.public_data()),
        ("billing.invoice.created", invoice_data(invoice)),
    ]
    if invoice.status == "paid":
        events.append(("billing.invoice.paid", invoice_data(invoice)))
    billing.publish(organization_id, now, *events)
    return EnterpriseActivated(subscription, invoice)


def _is_free_stand_in(sub: Subscription) -> bool:
    """A suspended organization on Free is stored as the Free stand-in with an id: no period, no price."""
    return sub.plan == FREE_PLAN and sub.price == 0 and sub.current_period_start is None


def suspend_organization(billing: Billing, organization_id: str, reason: str, now: datetime) -> Subscription:
    """Suspend: reads allowed, writes refused (403 ``organization_suspended``). An organization on
    Free (nothing stored, or a cancelled subscription) gets the Free stand-in stored, suspended, so
    that subscribing is refused too; ``unsuspend_organization`` removes it again. 409
    ``already_suspended`` when suspended."""
    existing = billing.subscriptions.current(organization_id)
    if existing is not None and existing.status != "cancelled":
        suspended = subs.suspend(existing, reason, now)
        billing.subscriptions.save(suspended, existing.version)
    else:
        free = subs.free_subscription(organization_id, billing.catalog.plan(FREE_PLAN), now)
        suspended = subs.suspend(free.model_copy(update={"id": new_id("sub")}), reason, now)
        billing.subscriptions.create(suspended, replacing=existing)
    billing.publish(organization_id, now, ("billing.subscription.updated", suspended.public_data()))
    return suspended


def unsuspend_organization(billing: Billing, organization_id: str, now: datetime) -> Subscription:
    """Lift a suspension: back to the status it interrupted (an organization on Free: back to Free,
    nothing stored). 409 ``not_suspended`` otherwise. Timers that found nothing to do while
    suspended are not re-armed here: the renewal sweep picks an overdue renewal up by itself."""
    existing = billing.subscriptions.current(organization_id)
    if existing is None:
        raise NotSuspended()
    restored = subs.unsuspend(existing, now)
    if _is_free_stand_in(restored):
        billing.subscriptions.delete(existing)
        restored = subs.free_subscription(organization_id, billing.catalog.plan(FREE_PLAN), now)
    else:
        billing.subscriptions.save(restored, existing.version)
    billing.publish(organization_id, now, ("billing.subscription.updated", restored.public_data()))
    return restored
