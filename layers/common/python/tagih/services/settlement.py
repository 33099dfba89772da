"""Settlement: what a payment that settles later (a gateway notification, a pay-now that went
through) does to invoices and subscriptions.

A settled payment pays its invoice and moves the subscription on in one write: a first invoice
activates it, the invoice after a trial converts it, a dunned one recovers it, a paid change's
invoice applies the change it records (``plan_changes.ordered_plan_change``,
``addons.ordered_addon_change``). Every listener is idempotent: a paid invoice is left as it is,
so a redelivered notification changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from tagih.domain import invoices as inv
from tagih.domain.errors import GatewayUnavailable, InvoiceNotFound
from tagih.domain.invoices import Invoice, invoice_data
from tagih.domain.subscriptions import Subscription
from tagih.domain.transitions import activate_after_first_payment, payment_recovered, trial_converted
from tagih.services.plan_changes import ordered_plan_change

if TYPE_CHECKING:
    from tagih.domain.payments import PaymentFailed, PaymentListener, PaymentSettled
    from tagih.services.context import Billing

logger = Logger()
metrics = Metrics()  # the handler's (POWERTOOLS_METRICS_NAMESPACE); flushed by its log_metrics

UnappliedReason = Literal["invoice_already_paid", "invoice_void"]


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
        reason = unapplied_reason(self.billing, invoice, settled)
        if reason is not None:
            record_unapplied_payment(self.billing, settled, reason)
            return
        record_invoice_paid(self.billing, invoice, settled.amount, settled.settled_at)
        cancel_superseded_order(self.billing, invoice, settled)

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
            from tagih.services.wallet import WalletPaymentListener  # top-up notifications only (cold start)

            return WalletPaymentListener(self.billing)
        return InvoicePaymentListener(self.billing)

    def on_payment_settled(self, settled: PaymentSettled) -> None:
        self._routed(settled.purpose).on_payment_settled(settled)

    def on_payment_failed(self, failed: PaymentFailed) -> None:
        self._routed(failed.purpose).on_payment_failed(failed)


def unapplied_reason(billing: Billing, invoice: Invoice, settled: PaymentSettled) -> UnappliedReason | None:
    """Why ``settled`` pays nothing of ``invoice``, or None when it pays it (or did: a redelivery).
    A paid invoice was paid by the first of its payments to succeed, or by the wallet when no
    gateway payment counts in it; a later one (a superseded virtual-account order paid late) pays
    nothing. A void invoice takes nothing."""
    if invoice.status == "void":
        return "invoice_void"
    if invoice.status != "paid":
        return None
    if invoice.amount_paid == 0:
        return "invoice_already_paid"
    from tagih.services.charging import recorded_attempts  # paid invoices' late payments only

    succeeded = [p for p in recorded_attempts(billing.payments, invoice) if p.status == "succeeded"]
    first = min(succeeded, key=lambda p: (p.updated_at, p.attempt), default=None)
    return None if first is None or first.reference == settled.reference else "invoice_already_paid"


def cancel_superseded_order(billing: Billing, invoice: Invoice, settled: PaymentSettled) -> None:
    """The virtual account or e-wallet order an invoice showed its payer, when the invoice was paid
    another way, is cancelled at Midtrans so nobody pays it too. Best effort: one that is paid
    anyway (cancel refused, the gateway down) is credited to the wallet by
    ``record_unapplied_payment``; the janitor records the cancelled order as failed."""
    order = invoice.gateway_invoice_id
    if order is None or order == settled.reference:
        return
    try:
        cancelled = billing.gateways.get("midtrans").cancel(order)
    except GatewayUnavailable:
        cancelled = False
    logger.info("superseded order", extra={"reference": order, "cancelled": cancelled})


def record_unapplied_payment(billing: Billing, settled: PaymentSettled, reason: UnappliedReason) -> None:
    """Money the gateway took for nothing is never dropped: credited to the wallet (an
    ``adjustment``), published as ``billing.payment.unapplied`` and counted (``Payment_unapplied``,
    an alarm); a wallet in another currency leaves it ``needs_review`` for a person to refund."""
    from tagih.services.wallet import credit_unapplied_payment  # late payments only (cold start)

    entry, first_time = credit_unapplied_payment(billing, settled, settled.settled_at)
    if not first_time:
        return  # a redelivery: credited and announced before
    resolution = "credited_to_wallet" if entry is not None else "needs_review"
    logger.warning(
        "payment applied to nothing",
        extra={"reference": settled.reference, "reason": reason, "resolution": resolution},
    )
    metrics.add_metric(name="Payment_unapplied", unit=MetricUnit.Count, value=1)
    billing.publish(
        settled.organization_id,
        settled.settled_at,
        (
            "billing.payment.unapplied",
            {
                "reference": settled.reference,
                "gateway": settled.gateway,
                "amount": settled.amount,
                "currency": settled.currency.upper(),
                "invoice_id": settled.subject_id,
                "reason": reason,
                "resolution": resolution,
                "transaction_id": entry.id if entry is not None else None,
            },
        ),
    )


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
        return ordered_plan_change(billing, subscription, invoice, invoice.plan_change, at)
    if invoice.addon_change is not None:
        from tagih.services.addons import ordered_addon_change  # add-on invoices only (cold start)

        return ordered_addon_change(billing, subscription, invoice, invoice.addon_change, at)
    return (
        activate_after_first_payment(subscription, at)
        or trial_converted(subscription, at)
        or payment_recovered(subscription, at)
    )
