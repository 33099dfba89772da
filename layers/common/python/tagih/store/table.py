"""The single table: one cached boto3 resource/client per process, created on first use."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3

from tagih.config import get_settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.service_resource import Table

# The condition of a put that creates an item and never overwrites one.
ABSENT = "attribute_not_exists(PK)"


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
