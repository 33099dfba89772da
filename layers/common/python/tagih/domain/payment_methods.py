"""Payment methods: how an organization pays, as gateway references plus display data.

Card data never reaches Tagih: a card arrives as the gateway's token (Stripe ``pm_…`` from
Stripe.js, a Midtrans card token from Midtrans.js), the gateway turns it into a reusable reference
(the PaymentMethod attached to the account's Stripe Customer; Midtrans' ``saved_token_id``), and
only that reference and what people need to recognise the method (brand, last4, bank, e-wallet
provider) are stored. Virtual accounts and e-wallets have no token at all: they are a channel.

Exactly one method is the default once an organization has any. As with billing accounts, an
organization-level pointer names it and carries the ``version`` every change to the set of methods
bumps, so adds, deletes and default switches serialize on it and each is one transaction. Deleting
the default promotes the most recently added remaining method. The only method behind a paid
subscription cannot be deleted (409 ``payment_method_in_use``): the next renewal would have
nothing to charge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from tagih.domain.accounts import (
    AccountStore,
    default_billing_account,
    ensure_gateway_customer,
    retry_on_set_change,
)
from tagih.domain.errors import BillingAccountRequired, InvalidField, VersionConflict
from tagih.events.models import billing_event
from tagih.events.publisher import EventPublisher
from tagih.gateways.names import Bank, GatewayName, MethodType, WalletProvider
from tagih.gateways.registry import STRIPE_METHOD_PREFIX, choose_gateway
from tagih.ids import new_id

if TYPE_CHECKING:
    from tagih.gateways.port import AttachedMethod, GatewayDirectory


class PaymentMethod(BaseModel):
    id: str
    organization_id: str
    gateway: GatewayName
    gateway_payment_method_id: str
    type: MethodType
    brand: str | None = None
    last4: str | None = None
    bank: Bank | None = None
    provider: WalletProvider | None = None
    label: str | None = None
    is_default: bool = False
    version: int = 1
    created_at: datetime
    updated_at: datetime

    def as_attached(self) -> AttachedMethod:
        """What a charge needs to know of this method."""
        # the port's dataclasses load only on the charging path
        from tagih.gateways.port import AttachedMethod

        return AttachedMethod(
            gateway=self.gateway,
            gateway_payment_method_id=self.gateway_payment_method_id,
            type=self.type,
            brand=self.brand,
            last4=self.last4,
            bank=self.bank,
            provider=self.provider,
        )

    def event_data(self) -> dict[str, Any]:
        """What a billing event says of the method: display data, never the gateway's reference."""
        return self.model_dump(
            mode="json", include={"id", "gateway", "type", "brand", "last4", "bank", "provider", "label"}
        ) | {"is_default": self.is_default}


@dataclass(frozen=True)
class NewPaymentMethod:
    """What the caller asks for (API.md ``POST /billing/payment-methods``), already schema-valid."""

    type: MethodType
    token: str | None = None
    gateway_payment_method_id: str | None = None
    gateway: GatewayName | None = None
    bank: Bank | None = None
    provider: WalletProvider | None = None
    label: str | None = None
    is_default: bool = False

    @property
    def credential(self) -> str | None:
        """The card's token or existing gateway reference: both are attached the same way."""
        return self.token or self.gateway_payment_method_id

    @property
    def credential_field(self) -> str:
        """The field a refusal of the credential names: the one the caller sent."""
        return "gateway_payment_method_id" if self.gateway_payment_method_id and not self.token else "token"


@dataclass(frozen=True)
class DefaultMethodPointer:
    payment_method_id: str
    version: int


class PaymentMethodStore(Protocol):
    def get(self, organization_id: str, payment_method_id: str) -> PaymentMethod:
        """``PaymentMethodNotFound`` for an unknown id or another organization's."""
        ...

    def list_for_organization(self, organization_id: str) -> list[PaymentMethod]: ...

    def default_pointer(self, organization_id: str) -> DefaultMethodPointer | None: ...

    def insert(
        self,
        method: PaymentMethod,
        pointer: DefaultMethodPointer | None,
        previous_default: PaymentMethod | None,
    ) -> None:
        """Write a new method; when it is the default, ``previous_default`` stops being it.
        ``VersionConflict`` when the pointer or the previous default changed meanwhile."""
        ...

    def switch_default(
        self, method: PaymentMethod, pointer: DefaultMethodPointer, previous_default: PaymentMethod | None
    ) -> None:
        """Make ``method`` the default and ``previous_default`` not, in one transaction."""
        ...

    def remove(
        self,
        method: PaymentMethod,
        pointer: DefaultMethodPointer,
        successor: PaymentMethod | None,
        *,
        last: bool,
    ) -> None:
        """Delete ``method``; ``successor`` becomes the default when ``method`` was it. ``last``: it is
        the organization's only method, which must not be behind a paid subscription
        (``PaymentMethodInUse``, checked in the same transaction)."""
        ...


def newest_first(methods: Sequence[PaymentMethod]) -> list[PaymentMethod]:
    return sorted(methods, key=lambda m: (m.created_at, m.id), reverse=True)


def default_first(methods: Sequence[PaymentMethod]) -> list[PaymentMethod]:
    """The default, then the rest newest first (how a payment page lists them)."""
    ordered = newest_first(methods)
    return [m for m in ordered if m.is_default] + [m for m in ordered if not m.is_default]


# -- what a request may combine ----------------------------------------------------------------------
def resolve_gateway(request: NewPaymentMethod) -> GatewayName:
    """The gateway a method belongs to, with each refusal naming the field at fault (422)."""
    _check_fields(request)
    credential = request.credential or ""
    gateway = request.gateway or choose_gateway(request.credential, method_type=request.type)
    if gateway == "stripe":
        if request.type != "credit_card":
            raise InvalidField("gateway", "Virtual accounts and e-wallets are Midtrans payment methods.")
        if not credential.startswith(STRIPE_METHOD_PREFIX):
            raise InvalidField(
                request.credential_field, "A Stripe card is a PaymentMethod id (pm_…) from Stripe.js."
            )
    elif credential.startswith(STRIPE_METHOD_PREFIX):
        raise InvalidField("gateway", "A pm_… token is a Stripe PaymentMethod.")
    return gateway


def _check_fields(request: NewPaymentMethod) -> None:
    """Each type takes its own fields: a card its token, a virtual account its bank, an e-wallet
    its provider, and nothing of the others."""
    if request.token and request.gateway_payment_method_id:
        raise InvalidField("token", "Send either token or gateway_payment_method_id, not both.")
    needs = {"credit_card": "token", "bank_transfer": "bank", "e_wallet": "provider"}[request.type]
    given = {
        "token": request.credential,
        "bank": request.bank,
        "provider": request.provider,
    }
    if not given[needs]:
        raise InvalidField(request.credential_field if needs == "token" else needs, _NEEDS[request.type])
    for field, value in given.items():
        if field != needs and value:
            raise InvalidField(request.credential_field if field == "token" else field, _ONLY_FOR[field])


_NEEDS: dict[str, str] = {
    "credit_card": "A card needs the gateway's token (Stripe pm_…, or a Midtrans card token).",
    "bank_transfer": "A bank transfer needs bank: bca, bni, bri or mandiri.",
    "e_wallet": "An e-wallet needs provider: gopay, shopeepay or ovo.",
}
_ONLY_FOR: dict[str, str] = {
    "token": "Only cards have a token; virtual accounts and e-wallets are channels.",
    "bank": "Only for bank_transfer methods.",
    "provider": "Only for e_wallet methods.",
}


# -- services ---------------------------------------------------------------------------------------
def add_payment_method(
    store: PaymentMethodStore,
    accounts: AccountStore,
    gateways: GatewayDirectory,
    publisher: EventPublisher,
    *,
    organization_id: str,
    request: NewPaymentMethod,
    now: datetime,
) -> PaymentMethod:
    """Attach ``request`` at its gateway and keep the result; ``PaymentDeclined`` (402) when the
    gateway refuses the card, ``BillingAccountRequired`` (422) for Stripe without an account."""
    gateway_name = resolve_gateway(request)
    # A Stripe card belongs to the default account's Stripe Customer (created there on first use).
    account = default_billing_account(accounts, organization_id) if gateway_name == "stripe" else None
    if gateway_name == "stripe" and account is None:
        raise BillingAccountRequired()
    gateway = gateways.get(gateway_name)
    customer_id = ensure_gateway_customer(accounts, gateway, account, now) if account else None
    # the port's dataclasses load only on the charging path (the adapter above loaded them already)
    from tagih.gateways.port import AttachRequest

    attached = gateway.attach_method(
        AttachRequest(
            organization_id=organization_id,
            type=request.type,
            token=request.credential,
            customer_id=customer_id,
            bank=request.bank,
            provider=request.provider,
        )
    )
    method_id = new_id("pm")

    def attempt() -> PaymentMethod:
        pointer = store.default_pointer(organization_id)
        previous = store.get(organization_id, pointer.payment_method_id) if pointer else None
        becomes_default = pointer is None or request.is_default
        method = PaymentMethod(
            id=method_id,
            organization_id=organization_id,
            gateway=attached.gateway,
            gateway_payment_method_id=attached.gateway_payment_method_id,
            type=attached.type,
            brand=attached.brand,
            last4=attached.last4,
            bank=attached.bank,
            provider=attached.provider,
            label=request.label,
            is_default=becomes_default,
            created_at=now,
            updated_at=now,
        )
        store.insert(method, pointer, previous if becomes_default else None)
        return method

    method = retry_on_set_change(attempt)
    publisher.publish(
        [billing_event("billing.payment_method.added", organization_id, method.event_data(), now)]
    )
    return method


def list_payment_methods(store: PaymentMethodStore, organization_id: str) -> list[PaymentMethod]:
    return default_first(store.list_for_organization(organization_id))


def set_default_payment_method(
    store: PaymentMethodStore, organization_id: str, payment_method_id: str, now: datetime
) -> PaymentMethod:
    def attempt() -> PaymentMethod:
        method = store.get(organization_id, payment_method_id)
        pointer = store.default_pointer(organization_id)
        if pointer is None:  # only while a concurrent add of the first method is committing
            raise VersionConflict("The organization's payment methods are changing; retry.")
        if pointer.payment_method_id == method.id and method.is_default:
            return method
        previous = store.get(organization_id, pointer.payment_method_id)
        store.switch_default(method, pointer, previous)
        return method.model_copy(
            update={"is_default": True, "version": method.version + 1, "updated_at": now}
        )

    return retry_on_set_change(attempt)


def delete_payment_method(store: PaymentMethodStore, organization_id: str, payment_method_id: str) -> None:
    def attempt() -> None:
        method = store.get(organization_id, payment_method_id)
        pointer = store.default_pointer(organization_id)
        if pointer is None:
            raise VersionConflict("The organization's payment methods are changing; retry.")
        others = [m for m in store.list_for_organization(organization_id) if m.id != method.id]
        successor = newest_first(others)[0] if method.is_default and others else None
        store.remove(method, pointer, successor, last=not others)

    retry_on_set_change(attempt)
