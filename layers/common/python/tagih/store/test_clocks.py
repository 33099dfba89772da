"""Test clock items (any stage but prod; DESIGN.md "Time and test clocks").

``ORG#<org>`` / ``TESTCLOCK`` ``{frozen_time, created_at, version}``: the organization's frozen
"now". It is attached only before the organization's first subscription (the subscription item is
checked absent in the same transaction), so no state ever mixes wall time and frozen time; it moves
only forward, conditional on its version.

The API kernel reads it on every authenticated request outside prod (``frozen_time_of``: one
strongly consistent GetItem), so this module stays as light as ``store.organizations``: the
low-level client, no pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from tagih.clock import parse_rfc3339, to_rfc3339
from tagih.config import get_settings
from tagih.domain.errors import TestClockExists, TestClockNotFound, TestClockTooLate, VersionConflict
from tagih.store.organizations import org_pk, subscription_key
from tagih.store.table import dynamodb_client

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

TEST_CLOCK_SK = "TESTCLOCK"
ABSENT = "attribute_not_exists(PK)"


@dataclass(frozen=True)
class TestClock:
    __test__ = False  # not a pytest class

    organization_id: str
    frozen_time: datetime
    created_at: datetime
    version: int


def test_clock_key(organization_id: str) -> dict[str, AttributeValueTypeDef]:
    return {"PK": {"S": org_pk(organization_id)}, "SK": {"S": TEST_CLOCK_SK}}


def _from_item(organization_id: str, item: dict[str, Any]) -> TestClock:
    return TestClock(
        organization_id=organization_id,
        frozen_time=parse_rfc3339(str(item["frozen_time"]["S"])),
        created_at=parse_rfc3339(str(item["created_at"]["S"])),
        version=int(item["version"]["N"]),
    )


def get_test_clock(organization_id: str) -> TestClock | None:
    """The organization's test clock, read strongly consistent (an advance counts from the next
    request on)."""
    item = (
        dynamodb_client()
        .get_item(
            TableName=get_settings().table_name, Key=test_clock_key(organization_id), ConsistentRead=True
        )
        .get("Item")
    )
    return None if item is None else _from_item(organization_id, cast(dict[str, Any], item))


def frozen_time_of(organization_id: str) -> datetime | None:
    """What the kernel asks on each request outside prod: the frozen time, or None (wall time)."""
    found = get_test_clock(organization_id)
    return None if found is None else found.frozen_time


def require_test_clock(organization_id: str) -> TestClock:
    found = get_test_clock(organization_id)
    if found is None:
        raise TestClockNotFound()
    return found


def create_test_clock(organization_id: str, frozen_time: datetime, now: datetime) -> TestClock:
    """Attach a clock: 409 ``test_clock_exists`` when one is, 409 ``test_clock_too_late`` once the
    organization has (or had) a subscription."""
    clock = TestClock(organization_id, frozen_time.replace(microsecond=0), now.replace(microsecond=0), 1)
    table = get_settings().table_name
    subscription = {name: {"S": value} for name, value in subscription_key(organization_id).items()}
    try:
        dynamodb_client().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table,
                        "Item": {
                            **test_clock_key(organization_id),
                            "entity": {"S": "test_clock"},
                            "frozen_time": {"S": to_rfc3339(clock.frozen_time)},
                            "created_at": {"S": to_rfc3339(clock.created_at)},
                            "version": {"N": str(clock.version)},
                        },
                        "ConditionExpression": ABSENT,
                    }
                },
                {"ConditionCheck": {"TableName": table, "Key": subscription, "ConditionExpression": ABSENT}},
            ]
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
            raise
        reasons = cast(list[dict[str, Any]], error.response.get("CancellationReasons") or [])
        codes = [str(reason.get("Code", "")) for reason in reasons]
        if codes and codes[0] == "ConditionalCheckFailed":
            raise TestClockExists() from error
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            raise TestClockTooLate() from error
        raise
    return clock


def move_test_clock(clock: TestClock, to: datetime) -> TestClock:
    """Store ``to`` as the frozen time, if nobody moved the clock since ``clock`` was read."""
    moved = TestClock(clock.organization_id, to.replace(microsecond=0), clock.created_at, clock.version + 1)
    try:
        dynamodb_client().update_item(
            TableName=get_settings().table_name,
            Key=test_clock_key(clock.organization_id),
            UpdateExpression="SET frozen_time = :to, version = :next",
            ConditionExpression="version = :seen",
            ExpressionAttributeValues={
                ":to": {"S": to_rfc3339(moved.frozen_time)},
                ":next": {"N": str(moved.version)},
                ":seen": {"N": str(clock.version)},
            },
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise VersionConflict("The test clock was moved meanwhile; read it again and retry.") from error
        raise
    return moved
