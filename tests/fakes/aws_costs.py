"""What a block of code asks of AWS: every operation, transaction sizes and DynamoDB capacity.

``CostRecorder`` registers botocore hooks on the default boto3 session (as ``aws_calls`` does) and
resets the cached clients, so that clients made afterwards carry them; ``recording()`` collects one
``Sample``. DynamoDB is asked for ``ReturnConsumedCapacity=TOTAL`` and moto's answer is kept
(``moto``), but moto answers placeholders whatever the sizes (GetItem 0.5, PutItem/Query/Scan/DeleteItem
1, UpdateItem 0.5, BatchGetItem 1 a key, nothing for transactions), so capacity is computed by
DynamoDB's rules from the items as stored, read by a hook-free client before and after each write:
reads in 4 KB units per item (GetItem, BatchGetItem) or per request (Query, Scan: the items read),
halved when eventually consistent (a GSI always is); writes in 1 KB units of the larger of the item
before and after; transactions double both. Writes to the GSIs an item is projected into are counted
apart (``gsi_wcu``: one write an index, two when the item's index key moves).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from tagih.events.publisher import reset_publisher
from tagih.gateways.registry import reset_default_gateways
from tagih.gateways.secrets import reset_secrets
from tagih.gateways.webhook_queue import reset_delivery_queue
from tagih.invoices_pdf.storage import reset_pdf_clients
from tagih.store.table import reset_clients
from tagih.store.test_clocks import TEST_CLOCK_SK
from tagih.timers.step_functions import reset_timers_client
from tests.conftest import table_definition

KB = 1024
KEY_NAMES = tuple(k["AttributeName"] for k in table_definition()["KeySchema"])
INDEX_KEYS = [
    tuple(k["AttributeName"] for k in i["KeySchema"]) for i in table_definition()["GlobalSecondaryIndexes"]
]


def _number_size(text: str) -> int:
    digits = text.lstrip("-").lower().split("e")[0].replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def _value_size(value: Mapping[str, Any]) -> int:
    [(kind, data)] = value.items()
    if kind == "M":  # 3 bytes, and 1 a member
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in data.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in data)
    if kind in ("BOOL", "NULL"):
        return 1
    size: Callable[[str], int] = {
        "N": _number_size,
        "B": lambda b: len(b) * 3 // 4,
    }.get(  # base64 on the wire
        kind[0], lambda s: len(s.encode())
    )
    return sum(size(v) for v in data) if kind in ("SS", "NS", "BS") else size(data)


def item_size(item: Mapping[str, Any] | None) -> int:
    """An item's size as DynamoDB counts it (attribute names and values, from DynamoDB JSON)."""
    return sum(len(k.encode()) + _value_size(v) for k, v in (item or {}).items())


def _units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


def write_units(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[int, int]:
    """(table units, GSI units) of one item written, from the item before and after."""
    table, index = _units(max(item_size(before), item_size(after)), KB), 0
    for keys in INDEX_KEYS if before != after else []:
        had = before is not None and all(k in before for k in keys)
        has = after is not None and all(k in after for k in keys)
        moved = had and has and any(before[k] != after[k] for k in keys)  # type: ignore[index]
        index += _units(item_size(before), KB) if had and (moved or not has) else 0
        index += _units(item_size(after), KB) if has else 0
    return table, index


class Probe:
    """Reads stored items through a session of its own: no hooks, so never counted."""

    def __init__(self) -> None:
        self._client: Any = boto3.session.Session().client("dynamodb")

    def item(self, table: str, item_or_key: Mapping[str, Any]) -> dict[str, Any] | None:
        if not all(k in item_or_key for k in KEY_NAMES):
            return None
        key = {k: item_or_key[k] for k in KEY_NAMES}
        found: dict[str, Any] | None = self._client.get_item(
            TableName=table, Key=key, ConsistentRead=True
        ).get("Item")
        return found


@dataclass
class Sample:
    calls: Counter[str] = field(default_factory=Counter)  # "dynamodb.GetItem", "events.PutEvents", …
    transact_items: int = 0  # items of TransactWriteItems, summed
    put_events_entries: int = 0
    rcu: float = 0.0
    wcu: float = 0.0  # the table's own; transactions doubled
    gsi_wcu: float = 0.0
    moto: float = 0.0  # the CapacityUnits moto reported
    test_clock_reads: int = 0  # GetItem of an organization's test clock (the API kernel's, outside prod)
    aws_ms: float = 0.0  # wall time inside AWS calls (moto's, and this recorder's own probes)


class CostRecorder:
    """botocore hooks on the default session, recording while ``recording()`` is open."""

    def __init__(self) -> None:
        self.sample: Sample | None = None
        self.errors: list[Exception] = []  # a hook that raised: the caller's measurement is wrong
        self.probe = Probe()
        events = boto3._get_default_session().events
        events.register("before-parameter-build.dynamodb", self._guarded(self._ask_capacity))
        events.register("before-call", self._guarded(self._before))
        events.register("after-call", self._guarded(self._after))
        # Time inside each call, from its first event to after the hooks above: what moto stands in
        # for, so a cost model can put AWS's latency in its place.
        events.register("provide-client-params", self._guarded(self._started))
        events.register("after-call", self._guarded(self._finished))
        for reset in (
            reset_clients,
            reset_secrets,
            reset_publisher,
            reset_default_gateways,
            reset_timers_client,
            reset_pdf_clients,
            reset_delivery_queue,
        ):
            reset()  # clients made from now on carry the hooks

    @contextlib.contextmanager
    def recording(self) -> Iterator[Sample]:
        self.sample = Sample()
        try:
            yield self.sample
        finally:
            self.sample = None

    def _guarded(self, hook: Callable[..., None]) -> Callable[..., None]:
        """A hook that raises must not change the call it watches: the error is kept instead."""

        def guarded(**kwargs: Any) -> None:
            try:
                hook(**kwargs)
            except Exception as error:
                self.errors.append(error)

        return guarded

    def _started(self, context: dict[str, Any], **_: Any) -> None:
        context["tagih_started"] = time.perf_counter()

    def _finished(self, context: dict[str, Any], **_: Any) -> None:
        started = context.pop("tagih_started", None)
        if self.sample is not None and started is not None:
            self.sample.aws_ms += (time.perf_counter() - started) * 1000

    def _ask_capacity(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.sample is not None and "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _before(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        sample, service, operation = self.sample, model.service_model.service_name, model.name
        if sample is None:
            return
        sample.calls[f"{service}.{operation}"] += 1
        if service not in ("dynamodb", "events"):
            return
        request: dict[str, Any] = json.loads(params.get("body") or b"{}")  # the wire's JSON
        if operation == "PutEvents":
            sample.put_events_entries += len(request.get("Entries", []))
            return
        if operation == "GetItem" and request["Key"].get("SK") == {"S": TEST_CLOCK_SK}:
            sample.test_clock_reads += 1
        writes: list[tuple[str, dict[str, Any], float]] = []  # table, key or item, factor
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            writes.append((request["TableName"], request.get("Key") or request["Item"], 1.0))
        for table, entries in (
            request.get("RequestItems", {}).items() if operation == "BatchWriteItem" else []
        ):
            for entry in entries:
                put = entry.get("PutRequest", {}).get("Item")
                writes.append((table, put or entry["DeleteRequest"]["Key"], 1.0))
        if operation == "TransactWriteItems":
            sample.transact_items += len(request["TransactItems"])
            for entry in request["TransactItems"]:
                [action] = entry.values()
                writes.append((action["TableName"], action.get("Key") or action["Item"], 2.0))
        context["tagih_costs"] = (request, [(t, k, self.probe.item(t, k), f) for t, k, f in writes])

    def _after(self, http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        sample = self.sample
        if sample is None or "tagih_costs" not in context:
            return
        request, writes = context.pop("tagih_costs")
        # The raw answer: ``parsed`` may be deserialized already by boto3's resource layer.
        answer: dict[str, Any] = json.loads(http_response.content or b"{}")
        reported = answer.get("ConsumedCapacity") or []
        for capacity in [reported] if isinstance(reported, dict) else reported:
            sample.moto += float(capacity.get("CapacityUnits", 0))
        for table, key, before, factor in writes:
            table_units, index_units = write_units(before, self.probe.item(table, key))
            sample.wcu += factor * table_units
            sample.gsi_wcu += index_units
        sample.rcu += self._read_units(model.name, request, answer)

    def _read_units(self, operation: str, request: dict[str, Any], answer: dict[str, Any]) -> float:
        def read(table: str, key: dict[str, Any], consistent: Any) -> float:
            return (1.0 if consistent else 0.5) * _units(item_size(self.probe.item(table, key)), 4 * KB)

        if operation == "GetItem":
            return read(request["TableName"], request["Key"], request.get("ConsistentRead"))
        if operation == "BatchGetItem":
            batches = request["RequestItems"].items()
            return sum(read(t, k, spec.get("ConsistentRead")) for t, spec in batches for k in spec["Keys"])
        if operation == "TransactGetItems":
            return sum(
                2 * read(e["Get"]["TableName"], e["Get"]["Key"], True) for e in request["TransactItems"]
            )
        if operation not in ("Query", "Scan"):
            return 0.0
        items = answer.get("Items", [])
        size = sum(item_size(self.probe.item(request["TableName"], i) or i) for i in items)
        scanned = int(answer.get("ScannedCount", len(items)))
        if items and scanned > len(items):  # filtered out: as large as those returned, on average
            size = size * scanned // len(items)
        eventual = "IndexName" in request or not request.get("ConsistentRead")
        return (0.5 if eventual else 1.0) * _units(size, 4 * KB)
