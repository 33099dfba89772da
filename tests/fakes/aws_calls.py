"""Count the AWS operations the code under test makes, through botocore's event hooks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from tagih.store.table import reset_clients


@contextmanager
def count_calls(service: str = "dynamodb") -> Iterator[Counter[str]]:
    """Counter of operation names, for clients created inside the block (cached clients are reset)."""
    counts: Counter[str] = Counter()
    session = boto3._get_default_session()

    def record(model: Any, **_: Any) -> None:
        counts[model.name] += 1

    reset_clients()
    session.events.register(f"before-call.{service}", record)
    try:
        yield counts
    finally:
        session.events.unregister(f"before-call.{service}", record)


@contextmanager
def count_items_read() -> Iterator[Counter[str]]:
    """Items DynamoDB read, per operation, for clients created inside the block (cached clients are
    reset): a Query's or Scan's ``ScannedCount``, one per GetItem, each item a BatchGetItem returned."""
    counts: Counter[str] = Counter()
    session = boto3._get_default_session()

    def record(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in {"Query", "Scan"}:
            counts[model.name] += int(parsed.get("ScannedCount", parsed.get("Count", 0)))
        elif model.name == "GetItem":
            counts[model.name] += 1
        elif model.name == "BatchGetItem":
            counts[model.name] += sum(len(items) for items in parsed.get("Responses", {}).values())

    reset_clients()
    session.events.register("after-call.dynamodb", record)
    try:
        yield counts
    finally:
        session.events.unregister("after-call.dynamodb", record)


@contextmanager
def after_succeeded_charge_is_recorded(action: Any) -> Iterator[None]:
    """Run ``action()`` once, just before the first DynamoDB call that follows the write recording a
    succeeded payment (``PAYMENT#…`` put with status ``succeeded``): what happens "after the money
    was taken" — a crash (``action`` raises) or another request's write. Only the timing around the
    code under test changes, through botocore's hooks; clients are reset so that new ones carry it."""
    state = {"charged": False, "done": False, "running": False}
    session = boto3._get_default_session()

    def hook(model: Any, params: dict[str, Any], **_: Any) -> None:
        if state["running"] or state["done"]:
            return
        if state["charged"]:
            state["running"] = True
            try:
                state["done"] = True
                action()
            finally:
                state["running"] = False
            return
        item = params.get("Item") or {}
        sk = str((item.get("SK") or {}).get("S", ""))
        status = str((item.get("status") or {}).get("S", ""))
        if model.name == "PutItem" and sk.startswith("PAYMENT#") and status == "succeeded":
            state["charged"] = True

    reset_clients()
    session.events.register("before-parameter-build.dynamodb", hook)
    try:
        yield
    finally:
        session.events.unregister("before-parameter-build.dynamodb", hook)
        reset_clients()
