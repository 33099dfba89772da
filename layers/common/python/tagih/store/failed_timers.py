"""Timer tasks that failed after their state machine's retries: ``FAILEDTIMER`` / ``<machine>#<task key>``.

A state machine whose task keeps failing (a bug, a timeout, a dependency down for longer than its
retries) Catches into ``record_failed_timer``, which writes one item here, then fails the execution
(its alarm). The janitor (``services.janitor``) reads this one partition, runs each task again
and deletes the item once it went through. The same task failing again overwrites its item (one
per task, with a count), so recording is idempotent; the partition holds only what a person or the
janitor has to look at, so reading it whole is cheap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Key

from tagih.domain.failed_timers import FailedTimer
from tagih.store.table import table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

FAILED_TIMER_PK = "FAILEDTIMER"
MAX_TEXT = 1_000  # an error's cause is kept short: it is for a person to read, not a trace store


class FailedTimerItems:
    """Implements ``domain.failed_timers.FailedTimerStore`` on the single table."""

    def __init__(self, billing_table: Table) -> None:
        self._table = billing_table

    def record(self, failed: FailedTimer) -> FailedTimer:
        """Keep ``failed``; a task that failed before keeps one item, its count increased."""
        answer = self._table.update_item(
            Key={"PK": FAILED_TIMER_PK, "SK": failed.key},
            UpdateExpression=(
                "SET entity = :entity, machine = :machine, task = :task, #error = :error, "
                "cause = :cause, failed_at = :at ADD failures :one"
            ),
            ExpressionAttributeNames={"#error": "error"},
            ExpressionAttributeValues={
                ":entity": "failed_timer",
                ":machine": failed.machine,
                ":task": failed.task,
                ":error": failed.error[:MAX_TEXT],
                ":cause": failed.cause[:MAX_TEXT],
                ":at": failed.failed_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                ":one": 1,
            },
            ReturnValues="ALL_NEW",
        )
        return _from_item(answer["Attributes"])

    def kept(self) -> list[FailedTimer]:
        found: list[FailedTimer] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(FAILED_TIMER_PK),
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**kwargs)
            found += [_from_item(item) for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def remove(self, failed: FailedTimer) -> None:
        """Forget ``failed`` unless it failed again meanwhile (then the newer failure stays)."""
        try:
            self._table.delete_item(
                Key={"PK": FAILED_TIMER_PK, "SK": failed.key},
                ConditionExpression="failures = :seen",
                ExpressionAttributeValues={":seen": failed.failures},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return


def _from_item(item: dict[str, Any]) -> FailedTimer:
    return FailedTimer(
        machine=str(item["machine"]),
        task=_plain(item["task"]),
        error=str(item.get("error", "")),
        cause=str(item.get("cause", "")),
        failed_at=datetime.fromisoformat(str(item["failed_at"]).replace("Z", "+00:00")),
        failures=int(item.get("failures", 1)),
    )


def _plain(value: Any) -> Any:
    """DynamoDB's Decimals back to ints (a task holds ids, an attempt and a version)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "as_integer_ratio") and not isinstance(value, bool | int | float):
        return int(value)
    return value


def default_failed_timer_items() -> FailedTimerItems:
    return FailedTimerItems(table())
