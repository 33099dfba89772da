"""API key items: the lookup by hash and the organization's listing.

- lookup ``APIKEY#<sha256>`` / ``APIKEY``: what the authorizer reads, one GetItem per new token;
- listing ``ORG#<org>`` / ``APIKEY#<key_id>``: display data for the owners' list, and the hash
  that finds the lookup item on revoke.

Both are written and deleted together in one transaction, so a key is either usable and listed or
neither. Items go through the low-level client with explicit attribute types: the authorizer uses
this module on its cold path, where neither pydantic nor the settings model is loaded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.exceptions import ClientError

from tagih.clock import parse_rfc3339
from tagih.domain.api_keys import ApiKey, ApiKeyGrant, ApiKeyRole
from tagih.domain.errors import ApiKeyNotFound

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

LOOKUP_SK = "APIKEY"
LISTING_PREFIX = "APIKEY#"
ABSENT = "attribute_not_exists(PK)"


def lookup_key(key_hash: str) -> dict[str, str]:
    return {"PK": f"APIKEY#{key_hash}", "SK": LOOKUP_SK}


def listing_key(organization_id: str, key_id: str) -> dict[str, str]:
    return {"PK": f"ORG#{organization_id}", "SK": f"{LISTING_PREFIX}{key_id}"}


def _timestamp(moment: datetime) -> str:
    # Microseconds kept, so keys created within one second still list newest first.
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _typed(values: dict[str, str]) -> dict[str, AttributeValueTypeDef]:
    return {name: {"S": value} for name, value in values.items()}


def _plain(item: dict[str, Any]) -> dict[str, str]:
    return {name: str(value["S"]) for name, value in item.items() if "S" in value}


def lookup_item(api_key: ApiKey) -> dict[str, str]:
    return {
        **lookup_key(api_key.key_hash),
        "entity": "api_key_lookup",
        "organization_id": api_key.organization_id,
        "key_id": api_key.id,
        "role": api_key.role,
        "name": api_key.name,
        "created_at": _timestamp(api_key.created_at),
    }


def listing_item(api_key: ApiKey) -> dict[str, str]:
    return {
        **listing_key(api_key.organization_id, api_key.id),
        "entity": "api_key",
        "id": api_key.id,
        "organization_id": api_key.organization_id,
        "name": api_key.name,
        "role": api_key.role,
        "prefix": api_key.prefix,
        "last4": api_key.last4,
        "created_at": _timestamp(api_key.created_at),
        "key_hash": api_key.key_hash,
    }


def api_key_from_listing(item: dict[str, str]) -> ApiKey:
    return ApiKey(
        id=item["id"],
        organization_id=item["organization_id"],
        name=item["name"],
        role=cast(ApiKeyRole, item["role"]),
        prefix=item["prefix"],
        last4=item["last4"],
        created_at=parse_rfc3339(item["created_at"]),
        key_hash=item["key_hash"],
    )


def _cancelled_by_condition(error: ClientError) -> bool:
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return False
    reasons = cast(list[dict[str, Any]], error.response.get("CancellationReasons") or [])
    return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)


class ApiKeyItems:
    """The API key items of the single table (implements ``ApiKeyStore`` and the authorizer's lookup)."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def grant_for_hash(self, key_hash: str) -> ApiKeyGrant | None:
        # Strongly consistent, so a revoked key is refused from the next request on.
        item = self._client.get_item(
            TableName=self._table, Key=_typed(lookup_key(key_hash)), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        values = _plain(cast(dict[str, Any], item))
        return ApiKeyGrant(
            organization_id=values["organization_id"],
            key_id=values["key_id"],
            role=cast(ApiKeyRole, values["role"]),
        )

    def create(self, api_key: ApiKey) -> None:
        absent = "attribute_not_exists(PK)"
        self._client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _typed(lookup_item(api_key)),
                        "ConditionExpression": absent,
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _typed(listing_item(api_key)),
                        "ConditionExpression": absent,
                    }
                },
            ]
        )

    def list_for_organization(self, organization_id: str) -> list[ApiKey]:
        """One single-partition Query (paged through, an organization has few keys)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
            "ExpressionAttributeValues": _typed({":pk": f"ORG#{organization_id}", ":prefix": LISTING_PREFIX}),
        }
        keys: list[ApiKey] = []
        while True:
            page = self._client.query(**kwargs)
            keys.extend(api_key_from_listing(_plain(cast(dict[str, Any], item))) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return keys
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def revoke(self, organization_id: str, key_id: str) -> None:
        # The key in the path is only ever looked up under the caller's organization, so another
        # organization's key id is simply not found.
        item = self._client.get_item(
            TableName=self._table, Key=_typed(listing_key(organization_id, key_id)), ConsistentRead=True
        ).get("Item")
        if item is None:
            raise ApiKeyNotFound(f"No API key {key_id!r} in this organization.")
        key_hash = _plain(cast(dict[str, Any], item))["key_hash"]
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {"Delete": {"TableName": self._table, "Key": _typed(lookup_key(key_hash))}},
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": _typed(listing_key(organization_id, key_id)),
                            "ConditionExpression": "attribute_exists(PK)",
                        }
                    },
                ]
            )
        except ClientError as error:
            if _cancelled_by_condition(error):  # revoked by a concurrent request in between
                raise ApiKeyNotFound(f"No API key {key_id!r} in this organization.") from error
            raise


def api_key_items(table_name: str) -> ApiKeyItems:
    """For the authorizer: a client of its own, without the settings model (cold start)."""
    return ApiKeyItems(boto3.client("dynamodb"), table_name)


def default_api_key_items() -> ApiKeyItems:
    """For HTTP functions: the process's shared client and the configured table."""
    from tagih.config import get_settings
    from tagih.store.table import dynamodb_client

    return ApiKeyItems(dynamodb_client(), get_settings().table_name)
