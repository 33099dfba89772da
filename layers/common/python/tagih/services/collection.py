"""Collecting an invoice now: ``POST /billing/invoices/{id}/pay`` ("pay now").

An open, overdue or uncollectible invoice is charged at once to the method the caller names, or the
organization's default. Uncollectible is payable on purpose, as ``invoices.mark_paid`` allows: money
offered after dunning gave up is taken, not refused. Paid, void and draft invoices are refused with
409 ``invoice_not_payable`` (the message says which).

The wallet pays first (``wallet.pay_from_wallet_first``): what its balance covers is applied to
the invoice, and only what is left due is charged. Outcomes, through the same code as every other
charge (``charging.charge_invoice`` → one payment record per attempt, charged at most once):

- succeeded → the invoice is paid through ``settlement.InvoicePaymentListener``, the very path a gateway
  notification takes: ``mark_paid`` + ``replace`` (conditioned on ``version``), ``billing.invoice.paid``,
  and an ``incomplete`` subscription whose first invoice this is becomes active;
- pending (virtual account, e-wallet, Snap, 3-D Secure) → the invoice stays open and carries the
  payment's ``payment_url`` and, for Midtrans, its order id as ``gateway_invoice_id``; the
  notification pays it later;
- declined → ``PaymentDeclined`` (402 ``payment_failed``): the invoice is unchanged; the failed
  attempt is recorded by ``charging``, and no event is published (the caller is told now).

Attempt numbers (``domain.payments.next_attempt``). A charge's reference is
``<invoice id>-a<attempt>`` (the Midtrans order id, the Stripe idempotency key), and ``charging``
never charges one reference twice. So the attempt is chosen from what is recorded, not from a
counter: the lowest attempt with no payment yet, except that

- an attempt already succeeded (the money was taken, the invoice never heard: a crash, a lost
  response) settles the invoice with that payment and charges nothing;
- an attempt still open (``processing`` after a crash, ``pending`` transfer or pay page) with the same
  method and amount is asked again: the payer gets the same virtual account or pay link rather than a
  second one that could be paid twice, and two concurrent pay-now calls share one reference (the
  second finds the first's claim), so they never charge twice.

``retry_count + 2`` would not do: it ignores earlier pay-now attempts (a second pay-now after a
decline would replay the decline without asking the gateway) and collides with a dunning retry's
reference. Dunning picks its attempt with ``next_attempt`` as well. Reading the attempts costs one
GetItem per earlier attempt of the invoice: a handful at most.

Idempotency-Key is the kernel's (the whole response is replayed); without one, a repeated call of a
paid invoice is 409 ``invoice_not_payable``, never a second charge.
"""

from __future__ import annotations

from datetime import datetime

from tagih.domain.errors import VersionConflict
from tagih.domain.gateway_names import check_gateway_currency
from tagih.domain.invoices import PAYABLE_STATUSES, Invoice, refuse_unless_payable
from tagih.domain.payments import Payment, PaymentSettled, awaiting_payment
from tagih.services.charging import NO_PAYMENT_METHOD, attempt_to_charge, charge_invoice, paying_method
from tagih.services.context import Billing
from tagih.services.settlement import InvoicePaymentListener, record_invoice_paid

WRITE_TRIES = 3  # a notification or timer may move the invoice between our read and write


def pay_invoice(
    billing: Billing,
    *,
    organization_id: str,
    invoice_id: str,
    payment_method_id: str | None,
    now: datetime,
) -> Invoice:
    """Charge what ``invoice_id`` has due now; the invoice as it stands afterwards."""
    # the wallet's models load on the charging path only (cold start)
    from tagih.services.wallet import pay_from_wallet_first

    invoice = billing.invoices.get(organization_id, invoice_id)
    refuse_unless_payable(invoice)
    method = paying_method(billing, organization_id, named=payment_method_id, required=NO_PAYMENT_METHOD)
    check_gateway_currency(method.gateway, invoice.currency, "invoice")
    plan = attempt_to_charge(billing, invoice, method)
    if plan.settled is not None:
        return _settle(billing, invoice, plan.settled)
    covered = pay_from_wallet_first(billing, invoice, now)
    if covered.amount_due == 0:  # the wallet paid it all
        record_invoice_paid(billing, covered, 0, now)
        return billing.invoices.get(invoice.organization_id, invoice.id)
    if covered is not invoice:  # less is due now: an attempt open for the old amount is not reused
        invoice, plan = covered, attempt_to_charge(billing, covered, method)
    payment = charge_invoice(billing, invoice, method, plan.attempt, now)  # PaymentDeclined: 402
    if payment.status == "succeeded":
        return _settle(billing, invoice, payment)
    return _await_payment(billing, invoice, payment, now)


def _settle(billing: Billing, invoice: Invoice, payment: Payment) -> Invoice:
    """Pay ``invoice`` with ``payment`` exactly as a gateway notification would (idempotent)."""
    settled = PaymentSettled(
        organization_id=payment.organization_id,
        reference=payment.reference,
        purpose=payment.purpose,
        subject_id=invoice.id,
        gateway=payment.gateway,
        amount=payment.amount,
        currency=payment.currency,
        gateway_charge_id=payment.gateway_charge_id,
        settled_at=payment.updated_at,
    )
    listener = InvoicePaymentListener(billing)
    for _ in range(WRITE_TRIES):
        try:
            listener.on_payment_settled(settled)  # re-reads the invoice; a paid one is left alone
        except VersionConflict:
            continue  # moved meanwhile (a notification of this very payment, a timer): again
        return billing.invoices.get(invoice.organization_id, invoice.id)
    raise VersionConflict(f"Invoice {invoice.id} kept changing while its payment was recorded; retry.")


def _await_payment(billing: Billing, invoice: Invoice, payment: Payment, now: datetime) -> Invoice:
    """Keep where and how the payer completes ``payment`` on the invoice (still open)."""
    current = invoice
    for _ in range(WRITE_TRIES):
        if current.status not in PAYABLE_STATUSES:
            return current  # paid meanwhile (the transfer's notification beat us)
        awaiting = awaiting_payment(current, payment, now)
        if (awaiting.payment_url, awaiting.gateway_invoice_id) == (
            current.payment_url,
            current.gateway_invoice_id,
        ):
            return current
        try:
            billing.invoices.replace(awaiting, current.version)
        except VersionConflict:
            current = billing.invoices.get(invoice.organization_id, invoice.id)
            continue
        return awaiting
    raise VersionConflict(f"Invoice {invoice.id} kept changing while its payment was recorded; retry.")
