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

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from tagih.domain.errors import GatewayReferenceNotFound, InvalidField
from tagih.domain.gateway_names import MIDTRANS_CURRENCY, Bank, GatewayName, MethodType, WalletProvider

if TYPE_CHECKING:
    from tagih.domain.gateway import AttachedMethod

STRIPE_METHOD_PREFIX = "pm_"
# What members see instead of a Midtrans saved_token_id, which charges the card for anyone holding
# the merchant's server key (every organization's, on one Midtrans merchant): its digest.
MIDTRANS_CARD_REFERENCE_PREFIX = "mtcard_"
MIDTRANS_ONLY_TYPES: frozenset[MethodType] = frozenset({"bank_transfer", "e_wallet"})


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
        from tagih.domain.gateway import AttachedMethod

        return AttachedMethod(
            gateway=self.gateway,
            gateway_payment_method_id=self.gateway_payment_method_id,
            type=self.type,
            brand=self.brand,
            last4=self.last4,
            bank=self.bank,
            provider=self.provider,
        )

    @property
    def public_reference(self) -> str:
        """The gateway reference as the API shows it: display data, never a chargeable token."""
        if self.gateway == "midtrans" and self.type == "credit_card":
            return MIDTRANS_CARD_REFERENCE_PREFIX + reference_digest(self.gateway_payment_method_id)
        return self.gateway_payment_method_id

    def binding(self) -> ReferenceBinding | None:
        """A card's gateway reference belongs to this organization for good (after deletion too);
        virtual accounts and e-wallets are channels anyone may use."""
        if self.type != "credit_card":
            return None
        return ReferenceBinding(
            gateway=self.gateway,
            digest=reference_digest(self.gateway_payment_method_id),
            organization_id=self.organization_id,
            reference=self.gateway_payment_method_id,
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
class ReferenceBinding:
    """Which organization a card's gateway reference was verified for (keyed by its digest)."""

    gateway: GatewayName
    digest: str
    organization_id: str
    reference: str  # the gateway's own token: for charging, never shown


def reference_digest(reference: str) -> str:
    return hashlib.sha256(reference.encode()).hexdigest()


def credential_digest(credential: str) -> str:
    """The binding key a caller's credential names: a public reference carries its digest, any
    other credential (a one-time token, a saved token, a ``pm_…``) is digested."""
    if credential.startswith(MIDTRANS_CARD_REFERENCE_PREFIX):
        return credential.removeprefix(MIDTRANS_CARD_REFERENCE_PREFIX)
    return reference_digest(credential)


def own_credential(credential: str, binding: ReferenceBinding | None, organization_id: str) -> str:
    """The token to attach for ``credential``: refused (404, as any other organization's object)
    when Tagih verified it for another organization, or when it is a public reference Tagih never
    issued to this one; a public reference of this organization's own card names its token."""
    if binding is not None and binding.organization_id != organization_id:
        raise GatewayReferenceNotFound()
    if credential.startswith(MIDTRANS_CARD_REFERENCE_PREFIX):
        if binding is None:
            raise GatewayReferenceNotFound()
        return binding.reference
    return credential


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

    def reference_binding(self, gateway: GatewayName, digest: str) -> ReferenceBinding | None: ...

    def insert(
        self,
        method: PaymentMethod,
        pointer: DefaultMethodPointer | None,
        previous_default: PaymentMethod | None,
    ) -> None:
        """Write a new method; when it is the default, ``previous_default`` stops being it; a card's
        ``binding()`` is recorded in the same transaction. ``VersionConflict`` when the pointer or
        the previous default changed meanwhile, ``GatewayReferenceNotFound`` when the card's
        reference is bound to another organization."""
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
def choose_gateway(
    token: str | None, currency: str = MIDTRANS_CURRENCY, method_type: MethodType | None = None
) -> GatewayName:
    """API.md: the gateway follows from the token (``pm_…`` Stripe, any other Midtrans).

    Without a token, virtual accounts and e-wallets exist only on Midtrans; otherwise IDR goes to
    Midtrans and every other currency to Stripe (DESIGN.md, Payment gateways).
    """
    if token:
        return "stripe" if token.startswith(STRIPE_METHOD_PREFIX) else "midtrans"
    if method_type in MIDTRANS_ONLY_TYPES:
        return "midtrans"
    return "midtrans" if currency.upper() == MIDTRANS_CURRENCY else "stripe"


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
