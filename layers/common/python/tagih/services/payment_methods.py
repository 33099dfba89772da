"""Payment methods' services: attaching one at its gateway, listing, choosing the default and
removing. Which gateway a method belongs to, and what a request may combine, is
``domain.payment_methods``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from tagih.domain.accounts import AccountStore
from tagih.domain.errors import BillingAccountRequired, VersionConflict
from tagih.domain.payment_methods import (
    NewPaymentMethod,
    PaymentMethod,
    PaymentMethodStore,
    credential_digest,
    default_first,
    newest_first,
    own_credential,
    resolve_gateway,
)
from tagih.events.models import EventPublisher, billing_event
from tagih.ids import new_id
from tagih.services.accounts import default_billing_account, ensure_gateway_customer, retry_on_set_change

if TYPE_CHECKING:
    from tagih.domain.gateway import GatewayDirectory
    from tagih.domain.gateway_names import GatewayName


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
    credential = _own_credential(store, gateway_name, request, organization_id)
    # A Stripe card belongs to the default account's Stripe Customer (created there on first use).
    account = default_billing_account(accounts, organization_id) if gateway_name == "stripe" else None
    if gateway_name == "stripe" and account is None:
        raise BillingAccountRequired()
    gateway = gateways.get(gateway_name)
    customer_id = ensure_gateway_customer(accounts, gateway, account, now) if account else None
    # the port's dataclasses load only on the charging path (the adapter above loaded them already)
    from tagih.domain.gateway import AttachRequest

    attached = gateway.attach_method(
        AttachRequest(
            organization_id=organization_id,
            type=request.type,
            token=credential,
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


def _own_credential(
    store: PaymentMethodStore, gateway: GatewayName, request: NewPaymentMethod, organization_id: str
) -> str | None:
    """The card token to attach, checked before the gateway sees it: a token Tagih verified for
    another organization is refused without even an authorization on that organization's card."""
    if request.type != "credit_card" or not request.credential:
        return request.credential
    digest = credential_digest(request.credential)
    return own_credential(request.credential, store.reference_binding(gateway, digest), organization_id)


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
