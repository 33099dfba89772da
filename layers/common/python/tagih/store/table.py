"""The single table: one cached boto3 resource/client per process, created on first use."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import boto3

from tagih.config import get_settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.service_resource import Table

# The condition of a put that creates an item and never overwrites one.
ABSENT = "attribute_not_exists(PK)"
# The condition of a write that replaces the version it read, and nothing newer.
AT_VERSION = "#version = :seen"
VERSION_NAME = {"#version": "version"}


@cache
def dynamodb_client() -> DynamoDBClient:
    return boto3.client("dynamodb")


@cache
def table() -> Table:
    return boto3.resource("dynamodb").Table(get_settings().table_name)


def reset_clients() -> None:
    """Forget cached clients (tests switch moto accounts and environments)."""
    dynamodb_client.cache_clear()
    table.cache_clear()
    get_settings.cache_clear()


def put_at_version(table_name: str, item: dict[str, Any], seen_version: int) -> dict[str, Any]:
    """A transaction's Put of ``item``, only while the stored item is still at ``seen_version``."""
    return {
        "Put": {
            "TableName": table_name,
            "Item": item,
            "ConditionExpression": AT_VERSION,
            "ExpressionAttributeNames": VERSION_NAME,
            "ExpressionAttributeValues": {":seen": seen_version},
        }
    }
