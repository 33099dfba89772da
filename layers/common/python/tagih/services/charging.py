"""Charging: the one place that picks the paying method, builds a charge and carries it out.

- ``paying_method`` answers "which payment method pays" for every caller (a request naming one,
  a subscription's own, the organization's default), with the callers' differences as arguments.
- ``charge_invoice`` and ``charge_top_up`` build the gateway's ``ChargeRequest`` in one place
  (``_charge``) for what is due on an invoice or a wallet top-up.
- ``charge_attempt`` claims the attempt's reference with a conditional write *before* calling the
  gateway, so a retried Lambda or a double click finds the claim and makes no second charge. A
  claim left in ``processing`` (a crash between claim and outcome, a gateway that did not answer:
  ``ChargeInDoubt``) is retried with the same reference, which the gateway's own idempotency makes
  safe; ``services.janitor`` does so for claims nobody retries. Only a fault the gateway refused
  before doing anything (``GatewayUnavailable.nothing_charged``) removes the claim.
- ``recorded_attempts`` reads what was charged for an invoice so far, for the attempt decisions of
  ``domain.payments`` (``next_attempt``, ``settled_attempt``).

The payment records and the gateway port's dataclasses are imported on the charging path only, so
a request that never charges does not build them (cold start).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal, overload

from aws_lambda_powertools import Logger

from tagih import clock
from tagih.domain.errors import (
    ChargeInDoubt,
    GatewayUnavailable,
    PaymentDeclined,
    PaymentMethodNotFound,
    PaymentMethodRequired,
)
from tagih.domain.gateway_names import FIRST_ATTEMPT, GatewayName, charge_reference

if TYPE_CHECKING:
    from tagih.domain.gateway import ChargeRequest, Customer, PaymentGateway
    from tagih.domain.invoices import Invoice
    from tagih.domain.payment_methods import PaymentMethod
    from tagih.domain.payments import AttemptPlan, Payment, PaymentPurpose, PaymentStore
    from tagih.domain.subscriptions import Subscription
    from tagih.domain.wallet import WalletTransaction
    from tagih.services.context import Billing

logger = Logger()  # same service and formatter as the handler's (POWERTOOLS_SERVICE_NAME)

NO_PAYMENT_METHOD = (
    "The organization has no payment method: add one (POST /billing/payment-methods) "
    "or name one in payment_method_id."
)


# -- which payment method pays --------------------------------------------------------------------------
@overload
def paying_method(
    billing: Billing,
    organization_id: str,
    *,
    named: str | None = None,
    subscription: Subscription | None = None,
    required: str,
    vanished_default: Literal["raise", "none"] = "raise",
) -> PaymentMethod: ...


@overload
def paying_method(
    billing: Billing,
    organization_id: str,
    *,
    named: str | None = None,
    subscription: Subscription | None = None,
    required: str | None = None,
    vanished_default: Literal["raise", "none"] = "raise",
) -> PaymentMethod | None: ...


def paying_method(
    billing: Billing,
    organization_id: str,
    *,
    named: str | None = None,
    subscription: Subscription | None = None,
    required: str | None = None,
    vanished_default: Literal["raise", "none"] = "raise",
) -> PaymentMethod | None:
    """The payment method that pays, in this order:

    1. ``named``, the method a request names (404 ``payment_method_not_found`` for another
       organization's, or a removed one);
    2. ``subscription``'s own method; removed since, the default pays instead;
    3. the organization's default.

    With none: ``PaymentMethodRequired`` (422) with the message ``required`` when it is given, else
    None. A default whose method is gone between reading its pointer and the method (a removal
    racing this read) is a 404, or None with ``vanished_default="none"`` (a timer, which records a
    failed charge rather than failing)."""
    methods = billing.payment_methods
    if named is not None:
        return methods.get(organization_id, named)
    if subscription is not None and subscription.payment_method_id is not None:
        try:
            return methods.get(organization_id, subscription.payment_method_id)
        except PaymentMethodNotFound:
            pass  # removed since: the default pays
    pointer = methods.default_pointer(organization_id)
    if pointer is None:
        if required is not None:
            raise PaymentMethodRequired(required)
        return None
    try:
        return methods.get(organization_id, pointer.payment_method_id)
    except PaymentMethodNotFound:
        if vanished_default == "none":
            return None
        raise


# -- building and making a charge -------------------------------------------------------------------
def gateway_customer(
    billing: Billing, gateway: PaymentGateway, organization_id: str, now: datetime
) -> tuple[Customer, str | None]:
    """Who a charge is for: the organization's default billing account, with its customer id at
    ``gateway`` (created there on first use); with no account yet, the organization by name."""
    # accounts and the port's dataclasses load only on the charging path (cold start)
    from tagih.domain.gateway import Customer
    from tagih.services.accounts import default_billing_account, ensure_gateway_customer

    account = default_billing_account(billing.accounts, organization_id)
    if account is None:
        return Customer(account_id="", organization_id=organization_id, name=organization_id, email=""), None
    return account.as_customer(), ensure_gateway_customer(billing.accounts, gateway, account, now)


def charge_invoice(
    billing: Billing, invoice: Invoice, method: PaymentMethod, attempt: int, now: datetime
) -> Payment:
    """Charge what ``invoice`` has due to ``method``, once per attempt however often this is called."""
    return _charge(
        billing,
        method,
        subject_id=invoice.id,
        organization_id=invoice.organization_id,
        attempt=attempt,
        amount=invoice.amount_due,
        currency=invoice.currency,
        description=", ".join(line.description for line in invoice.lines)[:200],
        purpose="invoice",
        now=now,
    )


def top_up_claim(entry: WalletTransaction, gateway: GatewayName, now: datetime) -> Payment:
    """The claim on charging top-up ``entry`` (reference ``<txn>-a1``, to ``entry``'s method at
    ``gateway``), written with the entry in one transaction, so that no top-up (or auto-recharge)
    is ever pending without the charge that will settle it."""
    from tagih.domain.payments import processing_claim  # the charging path only (cold start)

    return processing_claim(
        organization_id=entry.organization_id,
        subject_id=entry.id,
        attempt=FIRST_ATTEMPT,
        purpose="wallet_top_up",
        gateway=gateway,
        payment_method_id=entry.payment_method_id,
        amount=entry.amount,
        currency=entry.currency,
        at=now,
    )


def charge_top_up(
    billing: Billing, entry: WalletTransaction, method: PaymentMethod, now: datetime
) -> Payment:
    """Charge the wallet top-up ``entry`` once, however often this is called (reference ``<txn>-a1``)."""
    return _charge(
        billing,
        method,
        subject_id=entry.id,
        organization_id=entry.organization_id,
        attempt=FIRST_ATTEMPT,
        amount=entry.amount,
        currency=entry.currency,
        description="Wallet auto-recharge" if entry.auto_recharge else "Wallet top-up",
        purpose="wallet_top_up",
        now=now,
    )


def _charge(
    billing: Billing,
    method: PaymentMethod,
    *,
    subject_id: str,
    organization_id: str,
    attempt: int,
    amount: int,
    currency: str,
    description: str,
    purpose: PaymentPurpose,
    now: datetime,
) -> Payment:
    from tagih.domain.gateway import ChargeRequest  # the charging path only (cold start)

    gateway = billing.gateways.get(method.gateway)
    customer, customer_id = gateway_customer(billing, gateway, organization_id, now)
    request = ChargeRequest(
        organization_id=organization_id,
        invoice_id=subject_id,
        attempt=attempt,
        amount=amount,
        currency=currency,
        method=method.as_attached(),
        customer=customer,
        description=description,
        customer_id=customer_id,
    )
    return charge_attempt(
        gateway, billing.payments, request, purpose, payment_method_id=method.id, now=lambda: now
    )


def charge_attempt(
    gateway: PaymentGateway,
    payments: PaymentStore,
    request: ChargeRequest,
    purpose: PaymentPurpose,
    *,
    payment_method_id: str | None = None,
    now: Callable[[], datetime] = clock.now,
) -> Payment:
    """Charge ``request`` once per reference, however often this is called.

    Returns the ``succeeded`` or ``pending`` payment; raises ``PaymentDeclined`` (recorded as
    ``failed``), ``ChargeInDoubt`` (the claim stays ``processing``) or ``GatewayUnavailable`` (the
    gateway charged nothing; the claim is gone)."""
    from tagih.domain.gateway import ChargeResult
    from tagih.domain.payments import (
        charged_or_declined,
        check_same_charge,
        processing_claim,
        with_charge_result,
    )

    claim = processing_claim(
        organization_id=request.organization_id,
        subject_id=request.invoice_id,
        attempt=request.attempt,
        purpose=purpose,
        gateway=gateway.name,
        payment_method_id=payment_method_id,
        amount=request.amount,
        currency=request.currency,
        at=now(),
    )
    existing = payments.claim(claim)
    if existing is not None:
        check_same_charge(existing, claim)
        if existing.status != "processing":
            logger.info("charge attempt already made", extra=_log_fields(existing))
            return charged_or_declined(existing)
        # A crashed earlier try: the gateway may or may not have the charge; its idempotency on the
        # same reference makes asking again safe.
        logger.info("resuming a charge attempt left processing", extra=_log_fields(existing))
        claim = existing

    try:
        result = gateway.charge(request)
    except GatewayUnavailable as fault:
        if not fault.nothing_charged:
            # The charge may have been made (a read timeout after capture): the claim stays, and
            # whoever retries (the client's same key, the timer, the janitor) asks again under it.
            logger.warning("charge attempt in doubt; its claim stays", extra=_log_fields(claim))
            raise ChargeInDoubt(gateway=gateway.name) from None
        payments.release_claim(claim.organization_id, claim.reference, claim.version)
        raise
    except PaymentDeclined as declined:  # an adapter may raise rather than return "declined"
        result = ChargeResult(
            outcome="declined",
            gateway=gateway.name,
            reference=claim.reference,
            decline_reason=declined.reason,
        )
    if result.outcome == "transient":
        payments.release_claim(claim.organization_id, claim.reference, claim.version)
        raise GatewayUnavailable(gateway=gateway.name)

    recorded = with_charge_result(claim, result, now())
    if not payments.save_outcome(recorded, claim.version):
        # A notification (Stripe's webhook may beat the API response) moved it first: its state wins.
        current = payments.get(claim.organization_id, claim.reference)
        if current is None:
            raise GatewayUnavailable("The charge attempt was lost; retry.", gateway=gateway.name)
        recorded = current
    logger.info("charge attempt recorded", extra=_log_fields(recorded))
    return charged_or_declined(recorded)


def _log_fields(payment: Payment) -> dict[str, object]:
    """Identifiers and states only: never a token, a card field or a gateway body."""
    return {
        "reference": payment.reference,
        "gateway": payment.gateway,
        "status": payment.status,
        "attempt": payment.attempt,
    }


# -- what was charged so far ------------------------------------------------------------------------
def recorded_attempts(payments: PaymentStore, invoice: Invoice) -> list[Payment]:
    """The invoice's charge attempts as stored, attempt 1 first, up to the first one never made
    (one GetItem per earlier attempt: a handful at most)."""
    from tagih.domain.payments import MAX_ATTEMPTS

    found: list[Payment] = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        payment = payments.get(invoice.organization_id, charge_reference(invoice.id, attempt))
        if payment is None:
            break
        found.append(payment)
    return found


def attempt_to_charge(billing: Billing, invoice: Invoice, method: PaymentMethod) -> AttemptPlan:
    """Which attempt of ``invoice`` to charge to ``method`` now (``domain.payments.next_attempt``)."""
    from tagih.domain.payments import next_attempt

    return next_attempt(recorded_attempts(billing.payments, invoice), invoice, method)
