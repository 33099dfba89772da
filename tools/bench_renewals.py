"""Items the renewal sweep reads per due renewal, at 1,000 and 10,000 subscriptions (issue 4).

    python -m tools.bench_renewals

On moto (in-process, nothing leaves the machine): the table from template.yaml, N active monthly
subscriptions of which 1 % are due at the sweep's moment and the rest renew over the next 30 days,
written as the store writes them. The sweep is the timers function's ``find_due_renewals`` task,
paged to the end; a botocore hook counts the items DynamoDB read (``ScannedCount`` of each Query,
one per GetItem). Numbers only: nothing here fails on them.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws

from tests.fakes.lambda_runtime import ROOT

TABLE = "tagih-bench"
SIZES = (1_000, 10_000)
DUE_SHARE = 0.01
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _environment() -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TABLE_NAME": TABLE,
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "TagihBench",
    }.items():
        os.environ[name] = value


def _sweep_reads(size: int) -> tuple[int, int, int]:
    """(due renewals found, items read, Query requests) for ``size`` subscriptions."""
    from tagih.domain.catalog import default_catalog
    from tagih.domain.transitions import start_subscription
    from tagih.store.subscriptions import SubscriptionItems, subscription_item
    from tagih.store.table import reset_clients, table
    from tests.conftest import table_definition

    reset_clients()
    definition = {**table_definition(), "TableName": TABLE}
    boto3.client("dynamodb").create_table(**definition)
    [pro] = [plan for plan in default_catalog().plans if plan.slug == "pro"]
    due_count = int(size * DUE_SHARE)
    with table().batch_writer() as batch:
        for i in range(size):
            # Due ones ended within the last hours; the others renew over the next 30 days.
            ends = (
                AT - timedelta(minutes=5 + i)
                if i < due_count
                else AT + timedelta(minutes=1 + (i * 43) % 43_200)
            )
            sub = start_subscription(
                f"org_{i:05d}",
                pro,
                "monthly",
                ends - timedelta(days=31),
                trial_available=False,
                payment_method_id="pm_bench",
                gateway="midtrans",
                currency="IDR",
            ).subscription
            active = sub.model_copy(
                update={"status": "active", "current_period_end": ends, "incomplete_expires_at": None}
            )
            batch.put_item(Item=subscription_item(active))

    counts: Counter[str] = Counter()

    def record(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "Query":
            counts["items"] += int(parsed.get("ScannedCount", 0))
            counts["queries"] += 1
        elif model.name == "GetItem":
            counts["items"] += 1

    reset_clients()
    session = boto3._get_default_session()
    session.events.register("after-call.dynamodb", record)
    try:
        store, cursor, found = SubscriptionItems(table()), "", 0
        while True:
            page, cursor = store.due_renewals(AT, lookback=timedelta(hours=72), page_size=500, cursor=cursor)
            found += len(page)
            if not cursor:
                break
    finally:
        session.events.unregister("after-call.dynamodb", record)
    boto3.client("dynamodb").delete_table(TableName=TABLE)
    return found, counts["items"], counts["queries"]


def main() -> int:
    _environment()
    sys.path.append(str(ROOT / "layers" / "common" / "python"))  # the layer, as Lambda mounts it
    lines = [f"{'subscriptions':>13} {'due':>5} {'items read':>10} {'per due':>8} {'queries':>8}"]
    with mock_aws():
        for size in SIZES:
            found, items, queries = _sweep_reads(size)
            lines.append(f"{size:>13,} {found:>5} {items:>10} {items / max(found, 1):>8.2f} {queries:>8}")
    lines.append(
        "renewal sweep: items read per due renewal (goal: O(due), about 1); "
        "one Query per hour bucket of the 72 h lookback."
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
