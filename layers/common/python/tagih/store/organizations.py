"""Keys every organization-scoped entity starts from, and the one fact the API kernel needs on
every write: whether the organization is suspended. Kept free of domain models so that the kernel
(imported by every function) pays one small import for it."""

from __future__ import annotations

from tagih.config import get_settings
from tagih.store.table import dynamodb_client

SUBSCRIPTION_SK = "SUBSCRIPTION"
SUSPENDED = "suspended"


def org_pk(organization_id: str) -> str:
    return f"ORG#{organization_id}"


def subscription_key(organization_id: str) -> dict[str, str]:
    """The organization's current subscription (owned by ``store.subscriptions``)."""
    return {"PK": org_pk(organization_id), "SK": SUBSCRIPTION_SK}


def is_suspended(organization_id: str) -> bool:
    """One strongly consistent read of the subscription's status (an operator's suspension must
    take effect on the next request)."""
    key = subscription_key(organization_id)
    item = (
        dynamodb_client()
        .get_item(
            TableName=get_settings().table_name,
            Key={name: {"S": value} for name, value in key.items()},
            ProjectionExpression="#status",
            ExpressionAttributeNames={"#status": "status"},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return item is not None and item.get("status", {}).get("S") == SUSPENDED
