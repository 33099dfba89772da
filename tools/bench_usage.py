"""Usage ingestion: DynamoDB write requests per 1 000 events, and events per second on the CPU path.

    python -m tools.bench_usage [--events 100000] [--batch 1000]

100 000 events in batches of 1 000 (one organization per batch, as a request or the ingest batch
of one organization has them; five organizations in turn; nine in ten ``api_calls``, the rest a
custom metric and a gauge) go through what ``POST /billing/usage/events`` runs: the JSON body
parsed, the events validated, screened, aggregated, and the store's DynamoDB requests built. The
store talks to a client that answers as DynamoDB would with nothing stored and counts each request
(no I/O: the CPU path). The write requests are the ones the real store sends (the integration
tests check the same count on moto); the goal per batch is at most 50 plus one per distinct
organization, metric, day and shard written. Numbers only: this never fails on timing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.lambda_runtime import ROOT

LAYER = ROOT / "layers" / "common" / "python"
WRITE_OPERATIONS = ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items")
GOAL_BASE = 50
GOAL_EVENTS_PER_SECOND = 50_000
ORGANIZATIONS = 5


class CountingDynamoDB:
    """A DynamoDB client that stores nothing, answers success, and counts the requests it gets and
    the counter items (organization, metric, day, shard) the transactions add to."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.counter_items: set[tuple[str, str]] = set()

    def transact_write_items(self, **kwargs: Any) -> dict[str, Any]:
        self.requests["transact_write_items"] += 1
        for item in kwargs["TransactItems"]:
            key = item.get("Update", {}).get("Key")
            if key is not None and key["PK"]["S"].count("#") == 2:  # USAGE#<org>#<yyyy-mm>: a day counter
                self.counter_items.add((key["PK"]["S"], key["SK"]["S"]))
        return {}

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.requests["update_item"] += 1
        return {}

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.requests["put_item"] += 1
        return {}

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.requests["query"] += 1
        return {"Items": []}

    @property
    def writes(self) -> int:
        return sum(self.requests[name] for name in WRITE_OPERATIONS)


def request_bodies(total: int, batch: int, now: datetime) -> list[tuple[str, str]]:
    """(organization, JSON body) per batch, built before timing starts."""
    bodies = []
    for number in range(0, total, batch):
        org = f"org_bench_{number // batch % ORGANIZATIONS}"
        events = []
        for i in range(number, min(number + batch, total)):
            if i % 10 == 9:
                metric, quantity = ("exports", 1) if i % 20 == 9 else ("members", i % 40)
            else:
                metric, quantity = "api_calls", 1
            at = now - timedelta(seconds=i % 3600)
            events.append(
                {"id": f"evt-{i}", "metric": metric, "quantity": quantity, "timestamp": at.isoformat()}
            )
        bodies.append((org, json.dumps({"events": events})))
    return bodies


def run(total: int, batch: int) -> str:
    # ``tagih`` as the functions see it (the layer), when run as ``python -m tools.bench_usage``.
    if str(LAYER) not in sys.path:
        sys.path.append(str(LAYER))
    from pydantic import TypeAdapter

    from tagih.domain.usage import UsageEvent
    from tagih.services.usage import report_usage
    from tagih.store.usage import UsageItems
    from tests.fakes.usage_store import FixedTerms, RecordingPublisher

    parse_events = TypeAdapter(list[UsageEvent])
    now = datetime.now(UTC).replace(hour=12)  # all of one day: counters meet in one item per shard
    bodies = request_bodies(total, batch, now)
    terms, publisher = FixedTerms(), RecordingPublisher()
    per_batch: list[tuple[int, int, int]] = []  # (events, write requests, distinct counter items)
    elapsed = 0.0
    for org, body in bodies:
        client = CountingDynamoDB()
        store = UsageItems(client, "bench")  # type: ignore[arg-type]  # the counting stand-in
        started = time.perf_counter()
        events = parse_events.validate_python(json.loads(body)["events"])
        report_usage(org, events, store=store, terms=terms, publisher=publisher, now=now)
        elapsed += time.perf_counter() - started
        per_batch.append((len(events), client.writes, len(client.counter_items)))
    return report(per_batch, elapsed, batch)


def report(per_batch: Sequence[tuple[int, int, int]], elapsed: float, batch: int) -> str:
    events = sum(n for n, _, _ in per_batch)
    writes = sum(w for _, w, _ in per_batch)
    keys = statistics.mean(k for _, _, k in per_batch)
    within = sum(w <= GOAL_BASE + k for _, w, k in per_batch)
    rate = events / elapsed if elapsed else float("inf")
    return "\n".join(
        [
            f"usage ingestion: {events:,} events in batches of {batch:,}, {ORGANIZATIONS} organizations",
            f"  DynamoDB write requests per 1,000 events: {writes * 1000 / events:.1f} "
            f"(goal ≤ {GOAL_BASE} + distinct organization/metric/day/shard counters per batch, "
            f"here {keys:.1f}); {within}/{len(per_batch)} batches within it "
            f"{'✓' if within == len(per_batch) else '✗'}",
            f"  events per second on the CPU path (parse, validate, aggregate, build requests): "
            f"{rate:,.0f} (goal ≥ {GOAL_EVENTS_PER_SECOND:,}) "
            f"{'✓' if rate >= GOAL_EVENTS_PER_SECOND else '✗'}, Python {platform.python_version()}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_usage", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args(argv)
    print(run(max(1, args.events), max(1, min(args.batch, 1_000))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
