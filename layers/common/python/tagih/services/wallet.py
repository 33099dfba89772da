"""The prepaid wallet's services (API.md "Wallet"): reads, top-ups, auto-recharge, paying invoices.

The ledger's invariants and the pure decisions are ``domain.wallet``'s; this module writes them,
one DynamoDB transaction per change (``WalletStore.commit``), re-reading and deciding again when a
race is lost (``StaleWallet``). A top-up is charged through ``services.charging`` like any charge:
its entry is written ``pending`` before the gateway is asked, and credited exactly once. The
wallet pays invoices before any card (``pay_from_wallet_first``) and gives back what it paid on
one that is not kept (``return_wallet_credit``).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from tagih.domain import invoices as inv
from tagih.domain.errors import (
    ChargeInDoubt,
    GatewayUnavailable,
    PaymentDeclined,
    PaymentMethodNotFound,
    VersionConflict,
)
from tagih.domain.gateway_names import FIRST_ATTEMPT, charge_reference, check_gateway_currency
from tagih.domain.invoices import Invoice
from tagih.domain.money import DEFAULT_CURRENCY, Currency
from tagih.domain.wallet import (
    AutoRecharge,
    PaymentInstructionsData,
    StaleWallet,
    Wallet,
    WalletChange,
    WalletStore,
    WalletTransaction,
    changed_wallet,
    check_amount,
    check_auto_recharge,
    credited_entry,
    decide_credit,
    decide_debit,
    new_wallet,
    next_entry_moment,
    payable_from_wallet,
    recharge_abandoned,
    top_up_entry,
)
from tagih.ids import derived_id, new_id
from tagih.services.accounts import default_billing_account
from tagih.services.charging import NO_PAYMENT_METHOD, charge_top_up, paying_method, top_up_claim

if TYPE_CHECKING:
    from tagih.domain.accounts import AccountStore
    from tagih.domain.payment_methods import PaymentMethod
    from tagih.domain.payments import Payment, PaymentFailed, PaymentSettled
    from tagih.services.context import Billing

logger = Logger()


# Each lost race means another change of the wallet committed, so progress is guaranteed; the bound
# only stops a pathological pile-up from holding a request for long.
MAX_WRITE_TRIES = 40


RETRY_PAUSE_SECONDS = 0.01


BUSY = "The wallet is changing too often right now; retry."


# -- reads ---------------------------------------------------------------------------------------------
def wallet_currency(accounts: AccountStore, organization_id: str) -> Currency:
    """A new wallet's currency: the default billing account's, else IDR."""
    account = default_billing_account(accounts, organization_id)
    return account.currency if account is not None else DEFAULT_CURRENCY


def get_wallet(wallets: WalletStore, accounts: AccountStore, organization_id: str, now: datetime) -> Wallet:
    """The stored wallet (one read), or an empty one in the currency it would get (nothing written)."""
    stored = wallets.get(organization_id)
    if stored is not None:
        return stored
    return new_wallet(organization_id, wallet_currency(accounts, organization_id), now)


def list_transactions(wallets: WalletStore, organization_id: str) -> list[WalletTransaction]:
    return wallets.list_transactions(organization_id)


# -- configuring auto-recharge ---------------------------------------------------------------------------
def configure_auto_recharge(
    billing: Billing,
    organization_id: str,
    *,
    enabled: bool,
    threshold: int,
    amount: int,
    payment_method_id: str | None,
    monthly_limit: int | None,
    now: datetime,
) -> Wallet:
    """``PUT /billing/wallet/auto-recharge``: the settings replace the previous ones (a recharge in
    flight finishes as it was claimed). The method must be the organization's (404 otherwise);
    omitted, the default method (422 ``payment_method_required`` when enabling without any)."""
    store = _store(billing)
    method = paying_method(
        billing, organization_id, named=payment_method_id, required=NO_PAYMENT_METHOD if enabled else None
    )
    settings = AutoRecharge(
        enabled=enabled,
        threshold=threshold,
        amount=amount,
        payment_method_id=method.id if method else None,
        monthly_limit=monthly_limit,
        gateway=method.gateway if method else None,
    )
    for attempt in range(MAX_WRITE_TRIES):
        current = store.get(organization_id)
        wallet = current or new_wallet(
            organization_id, wallet_currency(billing.accounts, organization_id), now
        )
        check_auto_recharge(settings, wallet.currency)
        if method is not None and enabled:
            check_gateway_currency(method.gateway, wallet.currency, "wallet")
        configured = changed_wallet(wallet, now, auto_recharge=settings)
        try:
            store.commit(WalletChange(organization_id, wallet=configured, expected_version=wallet.version))
        except StaleWallet:
            _pause(attempt)
            continue
        return configured
    raise VersionConflict(BUSY)


# -- topping up ----------------------------------------------------------------------------------------
def top_up(
    billing: Billing,
    organization_id: str,
    *,
    amount: int,
    payment_method_id: str | None,
    now: datetime,
    request_key: str | None = None,
) -> WalletTransaction:
    """``POST /billing/wallet/top-up``: charge ``amount`` (the wallet's currency) to the method, or
    the default one. A card that pays credits at once (``succeeded``); a virtual account or
    e-wallet answers ``pending`` with how to pay, credited by the notification; a decline raises
    ``PaymentDeclined`` (402) with the entry kept ``failed``; a gateway that refused raises
    ``GatewayUnavailable`` (503) with nothing kept; one that did not answer raises
    ``ChargeInDoubt`` (503) with the entry kept ``pending`` and its charge claimed.

    With ``request_key`` (the request's ``Idempotency-Key``) the entry's id derives from the
    organization, the key and the request, so a retry after a crash or a 503 resumes the same
    entry and charge reference (``_resume_top_up``) instead of charging a second time."""
    store = _store(billing)
    transaction_id = (
        derived_id("txn", organization_id, "wallet.top_up", request_key, str(amount), payment_method_id or "")
        if request_key is not None
        else None
    )
    if transaction_id is not None:
        earlier = store.find_transaction(organization_id, transaction_id)
        if earlier is not None:
            return _resume_top_up(billing, earlier, now)
    method = paying_method(billing, organization_id, named=payment_method_id, required=NO_PAYMENT_METHOD)
    wallet = store.get(organization_id) or new_wallet(
        organization_id, wallet_currency(billing.accounts, organization_id), now
    )
    check_amount("amount", amount, wallet.currency)
    check_gateway_currency(method.gateway, wallet.currency, "wallet")
    entry = top_up_entry(wallet, amount, method, now, transaction_id)
    try:
        _open_top_up(store, wallet, entry, top_up_claim(entry, method.gateway, now))
    except StaleWallet:
        earlier = store.find_transaction(organization_id, entry.id) if transaction_id else None
        if earlier is None:
            raise VersionConflict(BUSY) from None
        return _resume_top_up(billing, earlier, now)  # the same key's other try wrote it meanwhile
    return _charge_entry(billing, entry, method, now)


def _resume_top_up(billing: Billing, entry: WalletTransaction, now: datetime) -> WalletTransaction:
    """An earlier try of the same request wrote ``entry``: answer its outcome, or carry its charge
    on under the same reference (the gateway's idempotency makes asking again safe)."""
    if entry.status == "succeeded":
        return entry
    if entry.status == "failed":
        raise PaymentDeclined(entry.failure_reason or "declined", gateway=_entry_gateway(billing, entry))
    method = billing.payment_methods.get(entry.organization_id, entry.payment_method_id or "")
    logger.info("resuming a wallet top-up", extra={"transaction_id": entry.id})
    return _charge_entry(billing, entry, method, now)


def _entry_gateway(billing: Billing, entry: WalletTransaction) -> str:
    payment = billing.payments.get(entry.organization_id, charge_reference(entry.id, FIRST_ATTEMPT))
    return payment.gateway if payment is not None else "unknown"


def _charge_entry(
    billing: Billing, entry: WalletTransaction, method: PaymentMethod, now: datetime
) -> WalletTransaction:
    try:
        payment = charge_top_up(billing, entry, method, now)
    except PaymentDeclined as declined:
        _fail(billing, entry.organization_id, entry.id, declined.reason, now)
        logger.info("wallet top-up declined", extra={"transaction_id": entry.id})
        raise
    except ChargeInDoubt:
        # The gateway may have taken the money: the entry stays pending, claimed, for the retry of
        # the same key or the janitor to finish (credited once, or failed).
        logger.warning("wallet top-up in doubt; kept pending", extra={"transaction_id": entry.id})
        raise
    except GatewayUnavailable:
        _discard(_store(billing), entry)
        raise
    return _after_charge(billing, entry, payment, now)


def _open_top_up(store: WalletStore, wallet: Wallet, entry: WalletTransaction, claim: Payment) -> None:
    """Write the pending entry with its charge's claim (and the wallet, for an organization's first
    top-up), in one transaction: a crash after it leaves a claim the retry or the janitor finishes."""
    org = entry.organization_id
    if wallet.stored:
        store.commit(WalletChange(org, added=[entry], claim=claim))
        return
    try:
        store.commit(
            WalletChange(org, wallet=changed_wallet(wallet, entry.created_at), added=[entry], claim=claim)
        )
    except StaleWallet:  # created meanwhile by another request: the entry alone
        store.commit(WalletChange(org, added=[entry], claim=claim))


def _after_charge(
    billing: Billing, entry: WalletTransaction, payment: Payment, now: datetime
) -> WalletTransaction:
    if payment.status == "succeeded":
        return _credit(billing, entry, now) or entry
    return _await_payment(_store(billing), entry, payment, now)


def _await_payment(
    store: WalletStore, entry: WalletTransaction, payment: Payment, now: datetime
) -> WalletTransaction:
    """Keep how the payer completes the pending top-up on its entry."""
    instructions = (
        PaymentInstructionsData(**asdict(payment.instructions)) if payment.instructions is not None else None
    )
    if (entry.payment_url, entry.payment_instructions) == (payment.payment_url, instructions):
        return entry
    awaiting = entry.model_copy(
        update={"payment_url": payment.payment_url, "payment_instructions": instructions, "updated_at": now}
    )
    try:
        store.commit(WalletChange(entry.organization_id, updated=[(awaiting, "pending")]))
    except StaleWallet:  # credited (or failed) meanwhile: the notification beat us
        return store.find_transaction(entry.organization_id, entry.id) or entry
    return awaiting


def _credit(billing: Billing, entry: WalletTransaction, at: datetime) -> WalletTransaction | None:
    """Credit the top-up ``entry`` exactly once (pending or failed → succeeded), publishing
    ``billing.wallet.topped_up`` when this call is the one that committed it."""
    store = _store(billing)
    org = entry.organization_id
    current: WalletTransaction | None = entry
    for attempt in range(MAX_WRITE_TRIES):
        if current is None or current.type != "top_up" or current.status == "succeeded":
            return current
        wallet = store.get(org)
        if wallet is None:  # never: a top-up entry is written with (or after) its wallet
            logger.error("wallet top-up without a wallet", extra={"transaction_id": current.id})
            return current
        credited_wallet, credited = decide_credit(wallet, current, at)
        try:
            store.commit(
                WalletChange(
                    org,
                    wallet=credited_wallet,
                    expected_version=wallet.version,
                    updated=[(credited, current.status)],
                )
            )
        except StaleWallet:
            _pause(attempt)
            current = store.find_transaction(org, entry.id)
            continue
        logger.info("wallet topped up", extra={"transaction_id": credited.id, "amount": credited.amount})
        billing.publish(org, at, ("billing.wallet.topped_up", credited.event_data()))
        return credited
    raise VersionConflict(BUSY)


def _fail(
    billing: Billing, organization_id: str, transaction_id: str, reason: str, at: datetime
) -> WalletTransaction | None:
    """A pending top-up that will not be paid: ``failed`` with the gateway's reason, and its
    recharge claim released. A succeeded (or already failed) entry is left as it is."""
    store = _store(billing)
    for attempt in range(MAX_WRITE_TRIES):
        entry = store.find_transaction(organization_id, transaction_id)
        if entry is None or entry.status != "pending":
            return entry
        failed = entry.model_copy(update={"status": "failed", "failure_reason": reason, "updated_at": at})
        wallet = store.get(organization_id)
        change = WalletChange(organization_id, updated=[(failed, "pending")])
        if wallet is not None and wallet.recharge_in_flight == entry.id:
            released = changed_wallet(wallet, at, recharge_in_flight=None, recharge_claimed_at=None)
            change = WalletChange(
                organization_id,
                wallet=released,
                expected_version=wallet.version,
                updated=[(failed, "pending")],
            )
        try:
            store.commit(change)
        except StaleWallet:
            _pause(attempt)
            continue
        return failed
    raise VersionConflict(BUSY)


def _discard(store: WalletStore, entry: WalletTransaction) -> None:
    """The gateway did not answer and charged nothing: the pending entry goes (503, nothing kept)."""
    try:
        store.commit(WalletChange(entry.organization_id, removed=[entry]))
    except StaleWallet:  # a notification moved it meanwhile: then it stays, as that notification left it
        logger.info("pending top-up moved before it was discarded", extra={"transaction_id": entry.id})


# -- paying invoices -----------------------------------------------------------------------------------
def pay_from_wallet_first(billing: Billing, invoice: Invoice, now: datetime) -> Invoice:
    """The wallet pays invoices before any card (API.md). Apply the wallet's balance to ``invoice``
    (stored, ``draft``/``open``/``overdue``, something due, no asynchronous payment in flight, in
    the wallet's currency): ``min(balance, amount_due)``
    leaves the wallet and lands in ``credits_applied``, with an ``invoice_payment`` entry, in ONE
    transaction conditioned on the wallet's and the invoice's versions. Returns the invoice as
    written (``version + 1``), or ``invoice`` unchanged when the wallet has nothing to give.

    The caller settles what is left: a draft covered in full is ``paid`` when finalized; an open
    invoice covered in full comes back ``open`` with ``amount_due`` 0, for the caller to
    ``mark_paid(invoice, 0, now)`` with its own events. ``VersionConflict`` when the stored invoice
    is not at ``invoice.version`` (so applying a stale copy twice never pays twice).

    When the debit takes the balance under the auto-recharge threshold, ``billing.wallet.low_balance``
    is published and one recharge is charged; its failure is logged, never raised (the invoice is
    paid already)."""
    store = billing.wallets
    if store is None or not payable_from_wallet(invoice):
        return invoice
    org = invoice.organization_id
    for attempt in range(MAX_WRITE_TRIES):
        wallet = store.get(org)
        if wallet is None or wallet.currency != invoice.currency:
            return invoice
        debit = decide_debit(wallet, invoice, now)
        if debit is None:
            _resume_abandoned_recharge(billing, wallet, now)
            return invoice
        paid = invoice.model_copy(
            update={
                "credits_applied": invoice.credits_applied + debit.amount,
                "version": invoice.version + 1,
                "updated_at": now,
            }
        )
        added = [debit.entry] if debit.recharge is None else [debit.entry, debit.recharge]
        gateway = debit.wallet.auto_recharge.gateway
        # The recharge is claimed with the debit that starts it: a crash after leaves it to the janitor.
        claim = top_up_claim(debit.recharge, gateway, now) if debit.recharge and gateway else None
        try:
            store.commit(
                WalletChange(
                    org,
                    wallet=debit.wallet,
                    expected_version=wallet.version,
                    added=added,
                    invoice=(paid, invoice.version),
                    claim=claim,
                )
            )
        except StaleWallet:
            _pause(attempt)
            continue
        logger.info(
            "invoice paid from the wallet",
            extra={"invoice_id": invoice.id, "amount": debit.amount, "transaction_id": debit.entry.id},
        )
        if debit.crossed:
            settings = debit.wallet.auto_recharge
            billing.publish(
                org,
                now,
                (
                    "billing.wallet.low_balance",
                    {
                        "balance": debit.wallet.balance,
                        "currency": debit.wallet.currency,
                        "threshold": settings.threshold,
                        "recharge_transaction_id": debit.recharge.id if debit.recharge else None,
                    },
                ),
            )
        if debit.recharge is not None:
            _run_recharge(billing, debit.recharge, now)
        else:
            _resume_abandoned_recharge(billing, wallet, now)
        return paid
    raise VersionConflict(BUSY)


def return_wallet_credit(billing: Billing, invoice: Invoice, now: datetime) -> Invoice:
    """Undo what ``pay_from_wallet_first`` applied to an invoice that will not be kept (a declined
    first charge, an expired first invoice): its
    ``credits_applied`` back to the balance with a ``refund`` entry, and the invoice written with
    ``credits_applied`` 0 (``version + 1``, conditioned on ``invoice.version``), in ONE transaction.
    Returns the invoice as written; ``invoice`` itself when nothing was applied."""
    if billing.wallets is None or invoice.credits_applied == 0:
        return invoice
    store = _store(billing)
    org, amount = invoice.organization_id, invoice.credits_applied
    for attempt in range(MAX_WRITE_TRIES):
        wallet = store.get(org)
        if wallet is None:
            raise ValueError(f"invoice {invoice.id} has credits applied but the organization has no wallet")
        at = next_entry_moment(wallet, now)
        refunded, entry = credited_entry(
            wallet, new_id("txn"), "refund", amount, invoice_id=invoice.id, at=at
        )
        returned = invoice.model_copy(
            update={"credits_applied": 0, "version": invoice.version + 1, "updated_at": now}
        )
        try:
            store.commit(
                WalletChange(
                    org,
                    wallet=refunded,
                    expected_version=wallet.version,
                    added=[entry],
                    invoice=(returned, invoice.version),
                )
            )
        except StaleWallet:
            _pause(attempt)
            continue
        logger.info("wallet credit returned", extra={"invoice_id": invoice.id, "amount": amount})
        return returned
    raise VersionConflict(BUSY)


# -- auto-recharge ----------------------------------------------------------------------------------------
def _resume_abandoned_recharge(billing: Billing, wallet: Wallet, now: datetime) -> None:
    if not recharge_abandoned(wallet, now) or wallet.recharge_in_flight is None:
        return
    org, transaction_id = wallet.organization_id, wallet.recharge_in_flight
    payment = billing.payments.get(org, charge_reference(transaction_id, FIRST_ATTEMPT))
    if payment is not None and payment.status == "pending":
        return  # charged, awaiting the payer (virtual account, e-wallet): the notification finishes it
    entry = _store(billing).find_transaction(org, transaction_id)
    if entry is not None:
        logger.info("resuming an abandoned auto-recharge", extra={"transaction_id": entry.id})
        _run_recharge(billing, entry, now)


def _run_recharge(billing: Billing, entry: WalletTransaction, now: datetime) -> None:
    """Charge the claimed recharge; whatever happens, the caller's invoice payment stands."""
    org = entry.organization_id
    try:
        if entry.status != "pending":
            return
        try:
            method = billing.payment_methods.get(org, entry.payment_method_id or "")
        except PaymentMethodNotFound:
            _fail(billing, org, entry.id, "the auto-recharge payment method was removed", now)
            return
        try:
            payment = charge_top_up(billing, entry, method, now)
        except PaymentDeclined as declined:
            _fail(billing, org, entry.id, declined.reason, now)
            logger.warning("wallet auto-recharge declined", extra={"transaction_id": entry.id})
            return
        except GatewayUnavailable:
            # Nothing was charged; the claim stays and a later debit resumes it.
            logger.warning("wallet auto-recharge: gateway unavailable", extra={"transaction_id": entry.id})
            return
        _after_charge(billing, entry, payment, now)
    except Exception:  # the invoice payment is committed; the claim stays for a later debit
        logger.exception("wallet auto-recharge failed", extra={"transaction_id": entry.id})


# -- money that pays nothing ----------------------------------------------------------------------------
def credit_unapplied_payment(
    billing: Billing, settled: PaymentSettled, at: datetime
) -> tuple[WalletTransaction | None, bool]:
    """Credit ``settled`` (a payment of an invoice that no longer takes it) to the organization's
    wallet as an ``adjustment`` entry of the whole amount, once however often it is called (the
    entry's id derives from the payment's reference): the entry, and whether this call wrote it.
    No entry when the wallet is in another currency: the money stays for a person to refund."""
    store = _store(billing)
    org = settled.organization_id
    entry_id = derived_id("txn", org, "unapplied", settled.reference)
    currency = settled.currency.upper()
    for attempt in range(MAX_WRITE_TRIES):
        already = store.find_transaction(org, entry_id)
        if already is not None:
            return already, False
        wallet = store.get(org) or new_wallet(org, wallet_currency(billing.accounts, org), at)
        if wallet.currency != currency:
            return None, True
        moment = next_entry_moment(wallet, at)
        credited, entry = credited_entry(
            wallet, entry_id, "adjustment", settled.amount, invoice_id=settled.subject_id, at=moment
        )
        try:
            store.commit(WalletChange(org, wallet=credited, expected_version=wallet.version, added=[entry]))
        except StaleWallet:
            _pause(attempt)
            continue
        return entry, True
    raise VersionConflict(BUSY)


# -- notifications -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WalletPaymentListener:
    """How a gateway notification reaches the wallet (``domain.payments.PaymentListener``): a settled
    top-up is credited exactly once (a redelivery finds the entry succeeded and changes nothing); a
    failed one is marked failed and releases its recharge claim. Payments of invoices are ignored."""

    billing: Billing

    def on_payment_settled(self, settled: PaymentSettled) -> None:
        if settled.purpose != "wallet_top_up":
            return
        store = _store(self.billing)
        entry = store.find_transaction(settled.organization_id, settled.subject_id)
        if entry is None:
            # The payment is recorded; failing the notification would only make the gateway retry.
            logger.error(
                "settled payment of an unknown wallet top-up", extra={"reference": settled.reference}
            )
            return
        if (settled.amount, settled.currency.upper()) != (entry.amount, entry.currency):
            logger.error(
                "settled wallet top-up of another amount; review it", extra={"reference": settled.reference}
            )
            return
        _credit(self.billing, entry, settled.settled_at)

    def on_payment_failed(self, failed: PaymentFailed) -> None:
        if failed.purpose != "wallet_top_up":
            return
        _fail(self.billing, failed.organization_id, failed.subject_id, failed.reason, failed.failed_at)


def void_returning_wallet_credit(billing: Billing, invoice: Invoice, now: datetime) -> tuple[Invoice, int]:
    """``invoice`` voided (nothing is owed on it), what the wallet paid of it given back first (a
    ``refund`` entry): the void invoice and the stored version it is written over."""
    returned = return_wallet_credit(billing, invoice, now)
    return inv.void(returned, now), returned.version


def _store(billing: Billing) -> WalletStore:
    if billing.wallets is None:
        raise ValueError("this Billing has no wallet store (Billing.wallets)")
    return billing.wallets


def _pause(attempt: int) -> None:
    """A short jittered pause after a lost race, so the losers do not collide again in lockstep."""
    time.sleep(RETRY_PAUSE_SECONDS * random.random() * (1 + min(attempt, 5)))  # noqa: S311 — jitter
