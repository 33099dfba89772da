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
  kept). The charge's reference is ``<txn id>-a1`` (``services.charging.charge_attempt``), so a
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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tagih.clock import to_rfc3339
from tagih.domain.errors import (
    InvalidField,
    VersionConflict,
)
from tagih.domain.gateway_names import FIRST_ATTEMPT, Bank, GatewayName, WalletProvider, charge_reference
from tagih.domain.invoices import Invoice
from tagih.domain.money import Currency, format_money
from tagih.ids import new_id

if TYPE_CHECKING:
    from tagih.domain.payment_methods import PaymentMethod
    from tagih.domain.payments import Payment


TransactionType = Literal["top_up", "invoice_payment", "refund", "adjustment"]
TransactionStatus = Literal["pending", "succeeded", "failed"]

ENTRY_TICK = timedelta(microseconds=1)
# Top-up bounds in the currency's unit: IDR rupiah, others cents.
IDR_TOP_UP = (10_000, 100_000_000)
CENTS_TOP_UP = (100, 10_000_000)
DEFAULT_MONTHLY_RECHARGES = 5  # monthly_limit when none is set: this many recharges of the amount
MAX_MONTHLY_LIMIT_FACTOR = 10  # monthly_limit is at most this many maximal top-ups
# A claimed recharge whose charge has not finished after this was left by a crashed request (the
# functions time out after 15 s): a later debit charges it again under the same reference.
RECHARGE_ABANDONED = timedelta(minutes=5)


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
    claim: Payment | None = None  # a charge claimed with its entry (written if its reference is new)


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


def changed_wallet(wallet: Wallet, now: datetime, **update: Any) -> Wallet:
    return wallet.model_copy(update={**update, "version": wallet.version + 1, "updated_at": now})


def top_up_entry(
    wallet: Wallet, amount: int, method: PaymentMethod, now: datetime, transaction_id: str | None = None
) -> WalletTransaction:
    """A pending top-up of ``amount`` by ``method``; ``transaction_id`` when the request's key
    names it (``services.wallet.top_up``), else a new one."""
    transaction_id = transaction_id or new_id("txn")
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


def credited_entry(
    wallet: Wallet, entry_id: str, kind: TransactionType, amount: int, *, invoice_id: str, at: datetime
) -> tuple[Wallet, WalletTransaction]:
    """``amount`` credited to ``wallet`` at ``at`` by an entry of ``kind`` (a ``refund`` of what an
    invoice took, an ``adjustment`` of money that paid nothing): the wallet and the entry."""
    credited = changed_wallet(wallet, at, balance=wallet.balance + amount)
    entry = WalletTransaction(
        id=entry_id,
        organization_id=wallet.organization_id,
        type=kind,
        status="succeeded",
        amount=amount,
        currency=wallet.currency,
        balance_after=credited.balance,
        invoice_id=invoice_id,
        created_at=at,
        updated_at=at,
    )
    return credited, entry


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
    return Debit(amount, changed_wallet(wallet, now, **update), entry, crossed, recharge)


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
    return changed_wallet(wallet, now, **update), credited
