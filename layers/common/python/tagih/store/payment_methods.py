"""Payment method items.

- method ``ORG#<org>`` / ``PM#<id>``;
- card binding ``GWREF#<gateway>#<sha256 of the reference>`` / ``GWREF`` ``{organization_id,
  reference}``: the organization a card's saved token or ``pm_…`` was verified for, written with the
  method and kept after it is deleted, so no other organization can attach that card;
- default pointer ``ORG#<org>`` / ``DEFAULT#PM`` ``{payment_method_id, version}``: every add,
  delete and default switch bumps its version in the same transaction, so changes to the set of
  methods serialize and "exactly one default" holds after any interleaving;
- the subscription item ``ORG#<org>`` / ``SUBSCRIPTION`` (owned by subscriptions) is only checked,
  in the transaction that deletes an organization's last method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Key

from tagih.domain.errors import GatewayReferenceNotFound, PaymentMethodInUse, PaymentMethodNotFound
from tagih.domain.gateway_names import GatewayName
from tagih.domain.payment_methods import DefaultMethodPointer, PaymentMethod, ReferenceBinding
from tagih.store.accounts import not_paid_subscription_check
from tagih.store.items import from_item, to_item
from tagih.store.organizations import org_pk
from tagih.store.table import ABSENT, table
from tagih.store.transactions import transact

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

METHOD_PREFIX = "PM#"
DEFAULT_METHOD_SK = "DEFAULT#PM"
BINDING_PREFIX = "GWREF#"
AT_VERSION = "#version = :seen"
VERSION_NAME = {"#version": "version"}
CONFLICT = "The organization's payment methods changed meanwhile; retry."


def method_key(organization_id: str, payment_method_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": f"{METHOD_PREFIX}{payment_method_id}"}


def default_method_key(organization_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": DEFAULT_METHOD_SK}


def binding_key(gateway: GatewayName, digest: str) -> dict[str, str]:
    """Not under an organization: the item exists to tell which organization holds a card."""
    return {"PK": f"{BINDING_PREFIX}{gateway}#{digest}", "SK": BINDING_PREFIX.rstrip("#")}


def method_item(method: PaymentMethod) -> dict[str, Any]:
    return to_item(method_key(method.organization_id, method.id), "payment_method", method)


class PaymentMethodItems:
    """Implements ``domain.payment_methods.PaymentMethodStore`` on the single table."""

    def __init__(self, billing_table: Table) -> None:
        self._table = billing_table
        self._client = billing_table.meta.client
        self._name = billing_table.name

    # -- reads (strongly consistent: writes are conditioned on what they return) ------------------
    def get(self, organization_id: str, payment_method_id: str) -> PaymentMethod:
        item = self._table.get_item(
            Key=method_key(organization_id, payment_method_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            raise PaymentMethodNotFound(f"No payment method {payment_method_id!r} in this organization.")
        return from_item(PaymentMethod, item)

    def list_for_organization(self, organization_id: str) -> list[PaymentMethod]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(org_pk(organization_id))
            & Key("SK").begins_with(METHOD_PREFIX),
            "ConsistentRead": True,
        }
        methods: list[PaymentMethod] = []
        while True:
            page = self._table.query(**kwargs)
            methods.extend(from_item(PaymentMethod, item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return methods
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def default_pointer(self, organization_id: str) -> DefaultMethodPointer | None:
        item = self._table.get_item(Key=default_method_key(organization_id), ConsistentRead=True).get("Item")
        if item is None:
            return None
        return DefaultMethodPointer(
            payment_method_id=str(item["payment_method_id"]), version=int(str(item["version"]))
        )

    def reference_binding(self, gateway: GatewayName, digest: str) -> ReferenceBinding | None:
        item = self._table.get_item(Key=binding_key(gateway, digest), ConsistentRead=True).get("Item")
        if item is None:
            return None
        return ReferenceBinding(
            gateway=gateway,
            digest=digest,
            organization_id=str(item["organization_id"]),
            reference=str(item["reference"]),
        )

    def _bind(self, binding: ReferenceBinding) -> dict[str, Any]:
        """Record the card reference as this organization's, or fail when it is another's."""
        return {
            "Put": {
                "TableName": self._name,
                "Item": {
                    **binding_key(binding.gateway, binding.digest),
                    "entity": "gateway_reference",
                    "organization_id": binding.organization_id,
                    "reference": binding.reference,
                },
                "ConditionExpression": "attribute_not_exists(PK) OR organization_id = :org",
                "ExpressionAttributeValues": {":org": binding.organization_id},
            }
        }

    # -- transaction parts --------------------------------------------------------------------------
    def _pointer_update(
        self, organization_id: str, pointer: DefaultMethodPointer, new_default: str | None = None
    ) -> dict[str, Any]:
        expression = "SET #version = #version + :one"
        values: dict[str, Any] = {":one": 1, ":seen": pointer.version}
        if new_default is not None:
            expression += ", payment_method_id = :default"
            values[":default"] = new_default
        return {
            "Update": {
                "TableName": self._name,
                "Key": default_method_key(organization_id),
                "UpdateExpression": expression,
                "ConditionExpression": AT_VERSION,
                "ExpressionAttributeNames": VERSION_NAME,
                "ExpressionAttributeValues": values,
            }
        }

    def _mark_default(self, method: PaymentMethod, is_default: bool) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._name,
                "Key": method_key(method.organization_id, method.id),
                "UpdateExpression": "SET #version = #version + :one, is_default = :default",
                "ConditionExpression": AT_VERSION,
                "ExpressionAttributeNames": VERSION_NAME,
                "ExpressionAttributeValues": {":one": 1, ":seen": method.version, ":default": is_default},
            }
        }

    # -- writes -------------------------------------------------------------------------------------
    def insert(
        self,
        method: PaymentMethod,
        pointer: DefaultMethodPointer | None,
        previous_default: PaymentMethod | None,
    ) -> None:
        org = method.organization_id
        items: list[dict[str, Any]] = [
            {"Put": {"TableName": self._name, "Item": method_item(method), "ConditionExpression": ABSENT}}
        ]
        if pointer is None:  # the organization's first method: its default
            items.append(
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": {
                            **default_method_key(org),
                            "entity": "default_payment_method",
                            "payment_method_id": method.id,
                            "version": 1,
                        },
                        "ConditionExpression": ABSENT,
                    }
                }
            )
        else:
            items.append(self._pointer_update(org, pointer, method.id if method.is_default else None))
            if method.is_default and previous_default is not None:
                items.append(self._mark_default(previous_default, False))
        on_condition: dict[int, Exception] = {}
        binding = method.binding()
        if binding is not None:
            on_condition[len(items)] = GatewayReferenceNotFound()
            items.append(self._bind(binding))
        transact(self._client, items, CONFLICT, on_condition)

    def switch_default(
        self,
        method: PaymentMethod,
        pointer: DefaultMethodPointer,
        previous_default: PaymentMethod | None,
    ) -> None:
        items = [
            self._pointer_update(method.organization_id, pointer, method.id),
            self._mark_default(method, True),
        ]
        if previous_default is not None and previous_default.id != method.id:
            items.append(self._mark_default(previous_default, False))
        transact(self._client, items, CONFLICT)

    def remove(
        self,
        method: PaymentMethod,
        pointer: DefaultMethodPointer,
        successor: PaymentMethod | None,
        *,
        last: bool,
    ) -> None:
        org = method.organization_id
        items: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self._name,
                    "Key": method_key(org, method.id),
                    "ConditionExpression": AT_VERSION,
                    "ExpressionAttributeNames": VERSION_NAME,
                    "ExpressionAttributeValues": {":seen": method.version},
                }
            }
        ]
        on_condition: dict[int, Exception] = {}
        if last:
            on_condition[len(items)] = PaymentMethodInUse()
            items.append(not_paid_subscription_check(org, self._name))
            items.append(
                {
                    "Delete": {
                        "TableName": self._name,
                        "Key": default_method_key(org),
                        "ConditionExpression": AT_VERSION,
                        "ExpressionAttributeNames": VERSION_NAME,
                        "ExpressionAttributeValues": {":seen": pointer.version},
                    }
                }
            )
        else:
            items.append(self._pointer_update(org, pointer, successor.id if successor else None))
            if successor is not None:
                items.append(self._mark_default(successor, True))
        transact(self._client, items, CONFLICT, on_condition)


def default_payment_method_items() -> PaymentMethodItems:
    return PaymentMethodItems(table())
