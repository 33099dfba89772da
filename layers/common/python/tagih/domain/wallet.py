"""The prepaid wallet (API.md "Wallet"): a balance per organization that pays invoices before any
card, topped up by card, virtual account or e-wallet, and recharged automatically under a threshold.

Items (``store.wallet``): the wallet ``ORG#<org>`` / ``WALLET`` and one ledger entry per movement
``ORG#<org>`` / ``WALLET#<created>#<txn id>``. Invariants, each kept by ONE DynamoDB transaction per
change:

- ``balance >= 0`` and ``balance`` is the sum of the ``amount`` of the succeeded entries. Amounts are
  signed, as in Stripe's customer balance transactions: a credit (``top_up``, ``refund``) is
  positive, a debit (``invoice_payment``) negative, and ``balance_after`` is the balance once that
  entry landed;
- every write of the wallet is conditioned on its ``version`` (and bumps it), every write of an
  entry on its status as read, and an invoice the wallet pays on the invoice's ``version``: a lost
  race re-reads and decides again, so nothing is applied twice or lost;
- a top-up is an entry written ``pending`` before the gateway is asked, credited exactly once:
  ``pending → succeeded`` in the transaction that adds it to the balance, whoever gets there first
  (the request that charged, the gateway's notification, a redelivery of it). A declined charge
  leaves the entry ``failed`` (kept, like Stripe keeps a failed charge: the ledger shows the attempt
  and why); a gateway that did not answer charged nothing, so the entry is removed (503, nothing
  kept). The charge's reference is ``<txn id>-a1`` (``payments.charge_invoice_attempt``), so a
  repeated call never charges twice.

Auto-recharge: the debit that takes the balance from ``>= threshold`` to ``< threshold`` publishes
``billing.wallet.low_balance`` and, in its own transaction, claims ONE recharge: the wallet records
``recharge_in_flight = <txn id>`` (only if none is in flight and this calendar month's recharges
plus the amount stay within ``monthly_limit``) and a ``pending`` top-up entry is written. After the
commit it is charged like a top-up; its credit (or failure) clears the claim in the same
transaction. Concurrent debits serialize on the wallet's version, so exactly one of them crosses
the threshold. A claim whose charge never finished (a crash) is resumed with the same reference by
a later debit once ``RECHARGE_ABANDONED`` has passed. A failed recharge is not retried by itself:
the next one needs the balance back at or over the threshold and a debit crossing it again, so a
declining card is not charged over and over. Months are UTC calendar months, counted when a
recharge is credited.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field

from tagih.clock import to_rfc3339
from tagih.domain.accounts import AccountStore, default_billing_account
from tagih.domain.errors import (
    GatewayUnavailable,
    InvalidField,
    PaymentDeclined,
    PaymentMethodNotFound,
    PaymentMethodRequired,
    VersionConflict,
)
from tagih.domain.invoices import Invoice
from tagih.domain.money import Currency, format_money
from tagih.gateways.names import Bank, GatewayName, WalletProvider, charge_reference
from tagih.ids import new_id

if TYPE_CHECKING:
    from tagih.domain.billing import Billing
    from tagih.domain.payment_methods import PaymentMethod
    from tagih.domain.payments import Payment, PaymentFailed, PaymentSettled

logger = Logger()

TransactionType = Literal["top_up", "invoice_payment", "refund", "adjustment"]
TransactionStatus = Literal["pending", "succeeded", "failed"]

DEFAULT_CURRENCY: Currency = "IDR"
ENTRY_TICK = timedelta(microseconds=1)
MIDTRANS_CURRENCY = "IDR"
# Top-up bounds in the currency's unit: IDR rupiah, others cents.
IDR_TOP_UP = (10_000, 100_000_000)
CENTS_TOP_UP = (100, 10_000_000)
DEFAULT_MONTHLY_RECHARGES = 5  # monthly_limit when none is set: this many recharges of the amount
MAX_MONTHLY_LIMIT_FACTOR = 10  # monthly_limit is at most this many maximal top-ups
# A claimed recharge whose charge has not finished after this was left by a crashed request (the
# functions time out after 15 s): a later debit charges it again under the same reference.
RECHARGE_ABANDONED = timedelta(minutes=5)
FIRST_ATTEMPT = 1
# Each lost race means another change of the wallet committed, so progress is guaranteed; the bound
# only stops a pathological pile-up from holding a request for long.
MAX_WRITE_TRIES = 40
RETRY_PAUSE_SECONDS = 0.01
BUSY = "The wallet is changing too often right now; retry."


class StaleWallet(VersionConflict):
    """Something a wallet write was conditioned on moved (the wallet's version, an entry's status):
    read again and decide again. Escapes as 409 ``version_conflict`` only after ``MAX_WRITE_TRIES``."""


# -- models --------------------------------------------------------------------------------------------
class AutoRecharge(BaseModel):
    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    threshold: int = Field(default=0, ge=0)
    amount: int = Field(default=0, ge=0)
    payment_method_id: str | None = None
    monthly_limit: int | None = Field(default=None, ge=0)  # None: DEFAULT_MONTHLY_RECHARGES x amount
    gateway: GatewayName | None = None  # the method's (internal): a recharge's order id at its claim

    @property
    def effective_monthly_limit(self) -> int:
        return (
            self.monthly_limit if self.monthly_limit is not None else DEFAULT_MONTHLY_RECHARGES * self.amount
        )


class Wallet(BaseModel):
    """The organization's wallet. ``version`` 0: never written (a GET of a new organization)."""

    model_config = ConfigDict(frozen=True)

    organization_id: str
    currency: Currency
    balance: int = Field(default=0, ge=0)
    auto_recharge: AutoRecharge = Field(default_factory=AutoRecharge)
    recharge_in_flight: str | None = None  # the pending auto-recharge's transaction id
    recharge_claimed_at: datetime | None = None
    recharged_month: str | None = None  # "YYYY-MM" (UTC) that recharged_amount counts
    recharged_amount: int = Field(default=0, ge=0)
    version: int = Field(default=0, ge=0)
    created_at: datetime
    updated_at: datetime

    @property
    def stored(self) -> bool:
        return self.version > 0

    def recharged_in(self, moment: datetime) -> int:
        """What auto-recharge credited in ``moment``'s calendar month."""
        return self.recharged_amount if self.recharged_month == month_of(moment) else 0


class PaymentInstructionsData(BaseModel):
    """How the payer completes an asynchronous top-up (virtual account number, e-wallet link)."""

    model_config = ConfigDict(frozen=True)

    bank: Bank | None = None
    va_number: str | None = None
    provider: WalletProvider | None = None
    deeplink_url: str | None = None
    qr_code_url: str | None = None
    expires_at: str | None = None
    biller_code: str | None = None


class WalletTransaction(BaseModel):
    """One ledger entry. ``amount`` is signed: credits positive, debits negative."""

    model_config = ConfigDict(frozen=True)

    id: str
    organization_id: str
    type: TransactionType
    status: TransactionStatus
    amount: int
    currency: Currency
    balance_after: int | None = None  # set once the entry counts in the balance
    invoice_id: str | None = None
    payment_method_id: str | None = None
    payment_url: str | None = None
    gateway_order_id: str | None = None  # Midtrans order_id (the charge reference)
    payment_instructions: PaymentInstructionsData | None = None
    failure_reason: str | None = None
    auto_recharge: bool = False
    created_at: datetime
    updated_at: datetime

    def event_data(self) -> dict[str, Any]:
        """``billing.wallet.topped_up``'s data (``events.catalog.WalletTransactionData``)."""
        return {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "balance_after": self.balance_after,
            "invoice_id": self.invoice_id,
            "payment_method_id": self.payment_method_id,
            "payment_url": self.payment_url,
            "gateway_order_id": self.gateway_order_id,
            "auto_recharge": self.auto_recharge,
            "created_at": to_rfc3339(self.created_at),
        }


@dataclass(frozen=True)
class WalletChange:
    """What one transaction writes, all or nothing (``WalletStore.commit``)."""

    organization_id: str
    wallet: Wallet | None = None  # the wallet as it becomes; None: not written
    expected_version: int = 0  # the wallet's stored version; 0: it must not exist yet
    added: Sequence[WalletTransaction] = ()  # new entries
    updated: Sequence[tuple[WalletTransaction, TransactionStatus]] = ()  # written if still at that status
    removed: Sequence[WalletTransaction] = ()  # deleted if still pending
    invoice: tuple[Invoice, int] | None = None  # written if the stored invoice is at that version


class WalletStore(Protocol):
    def get(self, organization_id: str) -> Wallet | None:
        """Strongly consistent; None before the wallet's first write."""
        ...

    def find_transaction(self, organization_id: str, transaction_id: str) -> WalletTransaction | None:
        """Strongly consistent."""
        ...

    def list_transactions(self, organization_id: str) -> list[WalletTransaction]:
        """Newest first."""
        ...

    def commit(self, change: WalletChange) -> None:
        """One transaction. ``VersionConflict`` when the invoice moved; ``StaleWallet`` when the
        wallet or an entry did (read again and retry)."""
        ...


# -- pure decisions ------------------------------------------------------------------------------------
def month_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def top_up_bounds(currency: str) -> tuple[int, int]:
    """Smallest and largest top-up (and auto-recharge amount), in the currency's unit."""
    return IDR_TOP_UP if currency.upper() == "IDR" else CENTS_TOP_UP


def check_amount(field: str, amount: int, currency: str) -> None:
    low, high = top_up_bounds(currency)
    if not low <= amount <= high:
        raise InvalidField(
            field,
            f"Between {format_money(low, currency)} and {format_money(high, currency)} "
            f"({low}-{high} in the currency's unit).",
            "out_of_range",
        )


def check_auto_recharge(settings: AutoRecharge, currency: str) -> None:
    """What an enabled auto-recharge needs; a disabled one is kept as given."""
    if not settings.enabled:
        return
    check_amount("amount", settings.amount, currency)
    high = top_up_bounds(currency)[1]
    if not 0 < settings.threshold <= high:
        raise InvalidField(
            "threshold", f"Between 1 and {high}: the balance under which a recharge starts.", "out_of_range"
        )
    limit = settings.effective_monthly_limit
    if not settings.amount <= limit <= MAX_MONTHLY_LIMIT_FACTOR * high:
        raise InvalidField(
            "monthly_limit",
            f"At least the amount ({settings.amount}) and at most {MAX_MONTHLY_LIMIT_FACTOR * high}.",
            "out_of_range",
        )


def debit_amount(balance: int, amount_due: int) -> int:
    """What the wallet pays of ``amount_due``: all of it, or the whole balance when that is less."""
    return max(0, min(balance, amount_due))


def crosses_threshold(before: int, after: int, settings: AutoRecharge) -> bool:
    return settings.enabled and before >= settings.threshold > after


def may_claim_recharge(wallet: Wallet, now: datetime) -> bool:
    """One recharge at a time, and within this month's limit."""
    settings = wallet.auto_recharge
    return (
        settings.enabled
        and settings.amount > 0
        and settings.payment_method_id is not None
        and wallet.recharge_in_flight is None
        and wallet.recharged_in(now) + settings.amount <= settings.effective_monthly_limit
    )


def recharge_abandoned(wallet: Wallet, now: datetime) -> bool:
    claimed = wallet.recharge_claimed_at
    return (
        wallet.recharge_in_flight is not None and claimed is not None and now - claimed >= RECHARGE_ABANDONED
    )


def payable_from_wallet(invoice: Invoice) -> bool:
    """An invoice still owing, with no asynchronous payment in flight (paying it too would overpay)."""
    return (
        invoice.status in {"draft", "open", "overdue"}
        and invoice.amount_due > 0
        and invoice.payment_url is None
    )


def new_wallet(organization_id: str, currency: Currency, now: datetime) -> Wallet:
    return Wallet(organization_id=organization_id, currency=currency, created_at=now, updated_at=now)


def _changed(wallet: Wallet, now: datetime, **update: Any) -> Wallet:
    return wallet.model_copy(update={**update, "version": wallet.version + 1, "updated_at": now})


def _top_up_entry(wallet: Wallet, amount: int, method: PaymentMethod, now: datetime) -> WalletTransaction:
    transaction_id = new_id("txn")
    return WalletTransaction(
        id=transaction_id,
        organization_id=wallet.organization_id,
        type="top_up",
        status="pending",
        amount=amount,
        currency=wallet.currency,
        payment_method_id=method.id,
        gateway_order_id=charge_reference(transaction_id, FIRST_ATTEMPT)
        if method.gateway == "midtrans"
        else None,
        created_at=now,
        updated_at=now,
    )


@dataclass(frozen=True)
class Debit:
    amount: int
    wallet: Wallet  # as the debit leaves it
    entry: WalletTransaction  # the invoice_payment entry
    crossed: bool  # the balance fell under the auto-recharge threshold
    recharge: WalletTransaction | None  # the recharge this debit claimed (pending)


def next_entry_moment(wallet: Wallet, now: datetime) -> datetime:
    """When an entry changing ``wallet`` is stamped: ``now``, but after the wallet's last change,
    so that entries written by one request at one ``now`` (a debit, its recharge, a refund) list
    in the order they happened."""
    return max(now, wallet.updated_at + ENTRY_TICK)


def decide_debit(wallet: Wallet, invoice: Invoice, now: datetime) -> Debit | None:
    """What paying ``invoice`` from ``wallet`` writes; None when the wallet has nothing to give."""
    amount = debit_amount(wallet.balance, invoice.amount_due)
    if amount == 0:
        return None
    requested, now = now, next_entry_moment(wallet, now)
    after = wallet.balance - amount
    crossed = crosses_threshold(wallet.balance, after, wallet.auto_recharge)
    update: dict[str, Any] = {"balance": after}
    recharge = None
    if crossed and may_claim_recharge(wallet, now):
        settings = wallet.auto_recharge
        recharge_id = new_id("txn")
        recharge = WalletTransaction(
            id=recharge_id,
            organization_id=wallet.organization_id,
            type="top_up",
            status="pending",
            amount=settings.amount,
            currency=wallet.currency,
            payment_method_id=settings.payment_method_id,
            gateway_order_id=(
                charge_reference(recharge_id, FIRST_ATTEMPT) if settings.gateway == "midtrans" else None
            ),
            auto_recharge=True,
            created_at=now + ENTRY_TICK,  # listed after the debit that started it
            updated_at=now + ENTRY_TICK,
        )
        update |= {"recharge_in_flight": recharge.id, "recharge_claimed_at": requested}
    entry = WalletTransaction(
        id=new_id("txn"),
        organization_id=wallet.organization_id,
        type="invoice_payment",
        status="succeeded",
        amount=-amount,
        currency=wallet.currency,
        balance_after=after,
        invoice_id=invoice.id,
        created_at=now,
        updated_at=now,
    )
    return Debit(amount, _changed(wallet, now, **update), entry, crossed, recharge)


def decide_credit(
    wallet: Wallet, entry: WalletTransaction, now: datetime
) -> tuple[Wallet, WalletTransaction]:
    """A top-up landing: the wallet with its amount (and its recharge claim released), the entry
    succeeded."""
    balance = wallet.balance + entry.amount
    update: dict[str, Any] = {"balance": balance}
    if entry.auto_recharge:
        update |= {
            "recharged_month": month_of(now),
            "recharged_amount": wallet.recharged_in(now) + entry.amount,
        }
    if wallet.recharge_in_flight == entry.id:
        update |= {"recharge_in_flight": None, "recharge_claimed_at": None}
    credited = entry.model_copy(
        update={"status": "succeeded", "balance_after": balance, "failure_reason": None, "updated_at": now}
    )
    return _changed(wallet, now, **update), credited


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
    method = _payment_method(billing, organization_id, payment_method_id, required=enabled)
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
            _check_method_currency(method, wallet.currency)
        configured = _changed(wallet, now, auto_recharge=settings)
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
) -> WalletTransaction:
    """``POST /billing/wallet/top-up``: charge ``amount`` (the wallet's currency) to the method, or
    the default one. A card that pays credits at once (``succeeded``); a virtual account or
    e-wallet answers ``pending`` with how to pay, credited by the notification; a decline raises
    ``PaymentDeclined`` (402) with the entry kept ``failed``; no answer from the gateway raises
    ``GatewayUnavailable`` (503) with nothing kept."""
    store = _store(billing)
    method = _payment_method(billing, organization_id, payment_method_id, required=True)
    assert method is not None  # required=True raises instead
    wallet = store.get(organization_id) or new_wallet(
        organization_id, wallet_currency(billing.accounts, organization_id), now
    )
    check_amount("amount", amount, wallet.currency)
    _check_method_currency(method, wallet.currency)
    entry = _top_up_entry(wallet, amount, method, now)
    _open_top_up(store, wallet, entry)
    try:
        payment = _charge(billing, entry, method, now)
    except PaymentDeclined as declined:
        _fail(billing, entry.organization_id, entry.id, declined.reason, now)
        logger.info("wallet top-up declined", extra={"transaction_id": entry.id})
        raise
    except GatewayUnavailable:
        _discard(store, entry)
        raise
    return _after_charge(billing, entry, payment, now)


def _open_top_up(store: WalletStore, wallet: Wallet, entry: WalletTransaction) -> None:
    """Write the pending entry (with the wallet, for an organization's first top-up)."""
    if wallet.stored:
        store.commit(WalletChange(entry.organization_id, added=[entry]))
        return
    try:
        store.commit(
            WalletChange(entry.organization_id, wallet=_changed(wallet, entry.created_at), added=[entry])
        )
    except StaleWallet:  # created meanwhile by another request: the entry alone
        store.commit(WalletChange(entry.organization_id, added=[entry]))


def _charge(billing: Billing, entry: WalletTransaction, method: PaymentMethod, now: datetime) -> Payment:
    """Charge the top-up ``entry`` once, however often this is called (reference ``<txn>-a1``)."""
    # payments and the port's dataclasses load only on the charging path
    from tagih.domain.billing import gateway_customer
    from tagih.domain.payments import charge_invoice_attempt
    from tagih.gateways.port import ChargeRequest

    org = entry.organization_id
    gateway = billing.gateways.get(method.gateway)
    customer, customer_id = gateway_customer(billing, gateway, org, now)
    request = ChargeRequest(
        organization_id=org,
        invoice_id=entry.id,
        attempt=FIRST_ATTEMPT,
        amount=entry.amount,
        currency=entry.currency,
        method=method.as_attached(),
        customer=customer,
        description="Wallet auto-recharge" if entry.auto_recharge else "Wallet top-up",
        customer_id=customer_id,
    )
    return charge_invoice_attempt(
        gateway, billing.payments, request, "wallet_top_up", payment_method_id=method.id, now=lambda: now
    )


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
            released = _changed(wallet, at, recharge_in_flight=None, recharge_claimed_at=None)
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
def pay_from_wallet(billing: Billing, invoice: Invoice, now: datetime) -> Invoice:
    """Apply the wallet's balance to ``invoice`` (stored, ``draft``/``open``/``overdue``, something
    due, no asynchronous payment in flight, in the wallet's currency): ``min(balance, amount_due)``
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
        try:
            store.commit(
                WalletChange(
                    org,
                    wallet=debit.wallet,
                    expected_version=wallet.version,
                    added=added,
                    invoice=(paid, invoice.version),
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


def return_invoice_credit(billing: Billing, invoice: Invoice, now: datetime) -> Invoice:
    """Undo what ``pay_from_wallet`` applied to an invoice that will not be kept: its
    ``credits_applied`` back to the balance with a ``refund`` entry, and the invoice written with
    ``credits_applied`` 0 (``version + 1``, conditioned on ``invoice.version``), in ONE transaction.
    Returns the invoice as written; ``invoice`` itself when nothing was applied."""
    if invoice.credits_applied == 0:
        return invoice
    store = _store(billing)
    org, amount = invoice.organization_id, invoice.credits_applied
    for attempt in range(MAX_WRITE_TRIES):
        wallet = store.get(org)
        if wallet is None:
            raise ValueError(f"invoice {invoice.id} has credits applied but the organization has no wallet")
        at = next_entry_moment(wallet, now)
        refunded = _changed(wallet, at, balance=wallet.balance + amount)
        entry = WalletTransaction(
            id=new_id("txn"),
            organization_id=org,
            type="refund",
            status="succeeded",
            amount=amount,
            currency=wallet.currency,
            balance_after=refunded.balance,
            invoice_id=invoice.id,
            created_at=at,
            updated_at=at,
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
            payment = _charge(billing, entry, method, now)
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


# -- helpers -------------------------------------------------------------------------------------------
def _store(billing: Billing) -> WalletStore:
    if billing.wallets is None:
        raise ValueError("this Billing has no wallet store (Billing.wallets)")
    return billing.wallets


def _payment_method(
    billing: Billing, organization_id: str, payment_method_id: str | None, *, required: bool
) -> PaymentMethod | None:
    """The named method (404 for another organization's), else the default; 422 when required and
    there is none."""
    if payment_method_id is not None:
        return billing.payment_methods.get(organization_id, payment_method_id)
    pointer = billing.payment_methods.default_pointer(organization_id)
    if pointer is not None:
        return billing.payment_methods.get(organization_id, pointer.payment_method_id)
    if required:
        raise PaymentMethodRequired(
            "The organization has no payment method: add one (POST /billing/payment-methods) "
            "or name one in payment_method_id."
        )
    return None


def _check_method_currency(method: PaymentMethod, currency: str) -> None:
    if method.gateway == "midtrans" and currency != MIDTRANS_CURRENCY:
        raise InvalidField("payment_method_id", f"Midtrans charges IDR only; this wallet is in {currency}.")


def _pause(attempt: int) -> None:
    """A short jittered pause after a lost race, so the losers do not collide again in lockstep."""
    time.sleep(RETRY_PAUSE_SECONDS * random.random() * (1 + min(attempt, 5)))  # noqa: S311 — jitter
