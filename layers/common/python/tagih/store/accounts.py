"""Billing account items.

- account ``ORG#<org>`` / ``ACCOUNT#<id>``, with GSI1 ``GWCUST#stripe#<customer id>`` once the
  account is a Stripe customer (so a Stripe webhook finds its account);
- default pointer ``ORG#<org>`` / ``DEFAULT#ACCOUNT`` ``{account_id, version}``: every create and
  delete bumps its version in the same transaction, so changes to the set of accounts serialize;
- the subscription item ``ORG#<org>`` / ``SUBSCRIPTION`` (owned by subscriptions) is only read,
  and checked in the transaction that deletes a default account.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from tagih.domain.accounts import (
    PAID_SUBSCRIPTION_STATUSES,
    BillingAccount,
    DefaultAccountPointer,
    is_paid_subscription,
)
from tagih.domain.errors import BillingAccountInUse, BillingAccountNotFound, VersionConflict
from tagih.domain.gateway_names import GatewayName
from tagih.domain.plan_slugs import FREE_PLAN
from tagih.store.items import from_item, to_item
from tagih.store.organizations import org_pk, subscription_key
from tagih.store.table import ABSENT, table
from tagih.store.transactions import transact

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

ACCOUNT_PREFIX = "ACCOUNT#"
DEFAULT_ACCOUNT_SK = "DEFAULT#ACCOUNT"


def account_key(organization_id: str, account_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": f"{ACCOUNT_PREFIX}{account_id}"}


def default_account_key(organization_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": DEFAULT_ACCOUNT_SK}


def gateway_customer_index_key(gateway: GatewayName, customer_id: str) -> dict[str, str]:
    return {"GSI1PK": f"GWCUST#{gateway}#{customer_id}", "GSI1SK": "ACCOUNT"}


def account_item(account: BillingAccount) -> dict[str, Any]:
    index: dict[str, str] = {}
    if account.gateway_customer_ids.stripe:
        index = gateway_customer_index_key("stripe", account.gateway_customer_ids.stripe)
    return to_item(account_key(account.organization_id, account.id), "billing_account", account, **index)


def not_paid_subscription_check(organization_id: str, table_name: str) -> dict[str, Any]:
    """A transaction's ConditionCheck: the organization has no paid subscription (see
    ``domain.accounts.is_paid_subscription``), so a write that needs none cannot race one."""
    statuses = {f":paid{i}": status for i, status in enumerate(PAID_SUBSCRIPTION_STATUSES)}
    return {
        "ConditionCheck": {
            "TableName": table_name,
            "Key": subscription_key(organization_id),
            "ConditionExpression": f"{ABSENT} OR NOT (#status IN ({', '.join(statuses)})) OR #plan = :free",
            "ExpressionAttributeNames": {"#status": "status", "#plan": "plan"},
            "ExpressionAttributeValues": {**statuses, ":free": FREE_PLAN},
        }
    }


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class AccountItems:
    """The billing-account items of the single table (implements ``domain.accounts.AccountStore``)."""

    def __init__(self, billing_table: Table) -> None:
        self._table = billing_table
        self._client = billing_table.meta.client  # takes plain Python values, like the resource
        self._name = billing_table.name

    # -- reads (strongly consistent: writes are conditioned on what they return) ------------------
    def get(self, organization_id: str, account_id: str) -> BillingAccount:
        item = self._table.get_item(Key=account_key(organization_id, account_id), ConsistentRead=True).get(
            "Item"
        )
        if item is None:
            raise BillingAccountNotFound(f"No billing account {account_id!r} in this organization.")
        return from_item(BillingAccount, item)

    def list_for_organization(self, organization_id: str) -> list[BillingAccount]:
        """One single-partition Query (paged through; an organization has few accounts)."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(org_pk(organization_id))
            & Key("SK").begins_with(ACCOUNT_PREFIX),
            "ConsistentRead": True,
        }
        accounts: list[BillingAccount] = []
        while True:
            page = self._table.query(**kwargs)
            accounts.extend(from_item(BillingAccount, item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return accounts
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def default_pointer(self, organization_id: str) -> DefaultAccountPointer | None:
        item = self._table.get_item(Key=default_account_key(organization_id), ConsistentRead=True).get("Item")
        if item is None:
            return None
        return DefaultAccountPointer(account_id=str(item["account_id"]), version=int(str(item["version"])))

    def subscription_is_paid(self, organization_id: str) -> bool:
        item = self._table.get_item(Key=subscription_key(organization_id), ConsistentRead=True).get("Item")
        if item is None:
            return False
        return is_paid_subscription(cast(str | None, item.get("status")), cast(str | None, item.get("plan")))

    # -- writes -------------------------------------------------------------------------------------
    def _pointer_bump(self, organization_id: str, pointer: DefaultAccountPointer) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._name,
                "Key": default_account_key(organization_id),
                "UpdateExpression": "SET #version = #version + :one",
                "ConditionExpression": "#version = :seen",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":one": 1, ":seen": pointer.version},
            }
        }

    def _transact(
        self, items: list[dict[str, Any]], on_condition: dict[int, Exception] | None = None
    ) -> None:
        transact(
            self._client, items, "The organization's billing accounts changed meanwhile; retry.", on_condition
        )

    def insert(self, account: BillingAccount, pointer: DefaultAccountPointer | None) -> None:
        org = account.organization_id
        put_account = {
            "Put": {"TableName": self._name, "Item": account_item(account), "ConditionExpression": ABSENT}
        }
        if pointer is None:  # the organization's first account: its default
            pointer_write: dict[str, Any] = {
                "Put": {
                    "TableName": self._name,
                    "Item": {
                        **default_account_key(org),
                        "entity": "default_billing_account",
                        "account_id": account.id,
                        "version": 1,
                    },
                    "ConditionExpression": ABSENT,
                }
            }
        else:
            pointer_write = self._pointer_bump(org, pointer)
        self._transact([put_account, pointer_write])

    def replace(self, account: BillingAccount, expected_version: int) -> None:
        try:
            self._table.put_item(
                Item=account_item(account),
                ConditionExpression="#version = :seen",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":seen": expected_version},
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise VersionConflict(
                    f"Billing account {account.id!r} changed since version {expected_version}; read it again."
                ) from error
            raise

    def remove(
        self,
        account: BillingAccount,
        pointer: DefaultAccountPointer,
        successor: BillingAccount | None,
    ) -> None:
        org = account.organization_id
        items: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self._name,
                    "Key": account_key(org, account.id),
                    "ConditionExpression": "#version = :seen",
                    "ExpressionAttributeNames": {"#version": "version"},
                    "ExpressionAttributeValues": {":seen": account.version},
                }
            }
        ]
        on_condition: dict[int, Exception] = {}
        if not account.is_default:
            items.append(self._pointer_bump(org, pointer))
        else:
            on_condition[len(items)] = BillingAccountInUse()
            items.append(not_paid_subscription_check(org, self._name))
            if successor is None:
                items.append(
                    {
                        "Delete": {
                            "TableName": self._name,
                            "Key": default_account_key(org),
                            "ConditionExpression": "#version = :seen",
                            "ExpressionAttributeNames": {"#version": "version"},
                            "ExpressionAttributeValues": {":seen": pointer.version},
                        }
                    }
                )
            else:
                items.append(
                    {
                        "Update": {
                            "TableName": self._name,
                            "Key": default_account_key(org),
                            "UpdateExpression": "SET #version = #version + :one, account_id = :successor",
                            "ConditionExpression": "#version = :seen",
                            "ExpressionAttributeNames": {"#version": "version"},
                            "ExpressionAttributeValues": {
                                ":one": 1,
                                ":seen": pointer.version,
                                ":successor": successor.id,
                            },
                        }
                    }
                )
                items.append(
                    {
                        "Update": {
                            "TableName": self._name,
                            "Key": account_key(org, successor.id),
                            "UpdateExpression": "SET #version = #version + :one, is_default = :true",
                            "ConditionExpression": "#version = :seen",
                            "ExpressionAttributeNames": {"#version": "version"},
                            "ExpressionAttributeValues": {
                                ":one": 1,
                                ":seen": successor.version,
                                ":true": True,
                            },
                        }
                    }
                )
        self._transact(items, on_condition)

    def set_gateway_customer(
        self, account: BillingAccount, gateway: GatewayName, customer_id: str, now: datetime
    ) -> BillingAccount:
        updated = account.model_copy(
            update={
                "gateway_customer_ids": account.gateway_customer_ids.model_copy(
                    update={gateway: customer_id}
                ),
                "version": account.version + 1,
                "updated_at": now,
            }
        )
        self.replace(updated, account.version)
        return updated


def default_account_items() -> AccountItems:
    return AccountItems(table())
