"""Billing accounts' services: what the billing-account routes do, and the gateway customer a
charge is for (``ensure_gateway_customer``). The model and its rules are ``domain.accounts``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from tagih import clock
from tagih.domain.accounts import AccountStore, Address, BillingAccount, newest_first
from tagih.domain.errors import BillingAccountInUse, VersionConflict
from tagih.domain.money import DEFAULT_CURRENCY, Currency
from tagih.ids import new_id

if TYPE_CHECKING:
    from tagih.domain.gateway import PaymentGateway


# Retries of an operation whose only conflict is a concurrent change to the organization's set of
# accounts (create, delete): re-reading and writing again is always correct there.
SET_CHANGE_ATTEMPTS = 5


T = TypeVar("T")


def retry_on_set_change(operation: Callable[[], T], attempts: int = SET_CHANGE_ATTEMPTS) -> T:
    """Run ``operation`` again when a concurrent request changed what it read (never blindly
    overwriting: each attempt re-reads); the last conflict reaches the caller as a 409."""
    for _ in range(attempts - 1):
        try:
            return operation()
        except VersionConflict:
            continue
    return operation()


# -- services: what the billing-account routes do --------------------------------------------------
def create_billing_account(
    store: AccountStore,
    *,
    organization_id: str,
    name: str,
    email: str,
    phone: str | None,
    description: str | None,
    currency: Currency | None,
    address: Address | None,
    now: datetime,
) -> BillingAccount:
    account_id = new_id("acct")

    def attempt() -> BillingAccount:
        pointer = store.default_pointer(organization_id)
        chosen = currency
        if chosen is None:
            # "The org's" currency is its default account's; a first account falls back to IDR.
            chosen = store.get(organization_id, pointer.account_id).currency if pointer else DEFAULT_CURRENCY
        account = BillingAccount(
            id=account_id,
            organization_id=organization_id,
            name=name,
            email=email,
            phone=phone,
            description=description,
            currency=chosen,
            address=address,
            is_default=pointer is None,
            version=1,
            created_at=now,
            updated_at=now,
        )
        store.insert(account, pointer)
        return account

    return retry_on_set_change(attempt)


def list_billing_accounts(store: AccountStore, organization_id: str) -> list[BillingAccount]:
    """The organization's accounts, newest first."""
    return newest_first(store.list_for_organization(organization_id))


def get_billing_account(store: AccountStore, organization_id: str, account_id: str) -> BillingAccount:
    return store.get(organization_id, account_id)


def default_billing_account(store: AccountStore, organization_id: str) -> BillingAccount | None:
    pointer = store.default_pointer(organization_id)
    return store.get(organization_id, pointer.account_id) if pointer else None


def update_billing_account(
    store: AccountStore,
    *,
    organization_id: str,
    account_id: str,
    changes: dict[str, Any],
    expected_version: int | None,
    now: datetime,
) -> BillingAccount:
    """Apply ``changes`` (field → new value; only the fields the caller sent). A stale
    ``expected_version``, or a concurrent update between our read and write, is a 409."""
    current = store.get(organization_id, account_id)
    if expected_version is not None and expected_version != current.version:
        raise VersionConflict(
            f"Billing account {account_id!r} is at version {current.version}, not {expected_version}."
        )
    updated = current.model_copy(update={**changes, "version": current.version + 1, "updated_at": now})
    store.replace(updated, current.version)
    return updated


def delete_billing_account(store: AccountStore, organization_id: str, account_id: str) -> None:
    def attempt() -> None:
        account = store.get(organization_id, account_id)
        pointer = store.default_pointer(organization_id)
        if pointer is None:  # only while a concurrent create of the first account is committing
            raise VersionConflict("The organization's accounts are changing; retry.")
        successor = None
        if account.is_default:
            if store.subscription_is_paid(organization_id):
                raise BillingAccountInUse()
            others = [a for a in store.list_for_organization(organization_id) if a.id != account.id]
            successor = newest_first(others)[0] if others else None
        store.remove(account, pointer, successor)

    retry_on_set_change(attempt)


def ensure_gateway_customer(
    store: AccountStore, gateway: PaymentGateway, account: BillingAccount, now: datetime | None = None
) -> str | None:
    """The account's customer id at ``gateway``, created there on first use and kept on the account.

    The gateway is asked once per call; if a concurrent request stored an id first, the stored one
    wins (the other customer stays unused at the gateway, which is harmless and rare).
    """
    known = account.gateway_customer_ids.get(gateway.name)
    if known:
        return known
    customer_id = gateway.ensure_customer(account.as_customer())
    if customer_id is None:  # a gateway without customers (Midtrans)
        return None
    moment = now or clock.now()
    for _ in range(SET_CHANGE_ATTEMPTS):
        try:
            store.set_gateway_customer(account, gateway.name, customer_id, moment)
            return customer_id
        except VersionConflict:
            account = store.get(account.organization_id, account.id)
            stored = account.gateway_customer_ids.get(gateway.name)
            if stored:
                return stored
    raise VersionConflict(f"Billing account {account.id!r} keeps changing; retry.")
