"""One ``TransactWriteItems`` whose failed conditions become domain errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from tagih.domain.errors import VersionConflict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient


def failed_conditions(error: ClientError) -> list[int] | None:
    """Indexes of the transaction items whose condition failed; None if not a condition failure."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = cast(list[dict[str, Any]], error.response.get("CancellationReasons") or [])
    failed = [i for i, reason in enumerate(reasons) if reason.get("Code") == "ConditionalCheckFailed"]
    return failed or None


def transact(
    client: DynamoDBClient,
    items: list[dict[str, Any]],
    conflict_message: str,
    on_condition: Mapping[int, Exception] | None = None,
) -> None:
    """Write ``items`` all or nothing. A failed condition at an index of ``on_condition`` raises
    that error; any other failed condition means something read has changed: ``VersionConflict``."""
    try:
        client.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
    except ClientError as error:
        failed = failed_conditions(error)
        if failed is None:
            raise
        for index in failed:
            if on_condition and index in on_condition:
                raise on_condition[index] from error
        raise VersionConflict(conflict_message) from error
