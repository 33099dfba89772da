"""Everything that, on AWS, invokes something asynchronously: rule targets, schedules, SQS pollers.

moto's EventBridge delivers a matching event only to SQS queues, log groups, archives and other
buses; it has no way to reach our handlers or to start an execution. So each rule is created in moto
as the template says, the targets moto can deliver itself (a queue, a bus) are attached as they are,
and the rest are reached through a *shadow* queue: one extra SQS target per rule that a poller
thread here drains, handing each event to the Lambda handler (``Invoker``) or to
``StartExecution``. A catch-all rule with its own queue on every bus (the *tap*) records every
event put on it, for ``GET /_local/events``.

Schedules are fired here (moto never fires them): ``rate(...)`` on its period, ``cron(...)`` only on
demand (``fire_rule``). SQS event-source mappings are one long-polling thread each, with Lambda's
batch event shape and partial-batch-failure semantics; redrive to a DLQ is moto's own.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from local.model import (
    ACCOUNT_ID,
    REGION,
    EventSourceMapping,
    FunctionError,
    Invoker,
    Rule,
    StackModel,
    Target,
)

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import InputTransformerTypeDef, TargetTypeDef
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef
    from mypy_boto3_stepfunctions import SFNClient

log = logging.getLogger("local.dispatch")

THREAD_PREFIX = "tagih-dispatch"
TAP_RULE_NAME = "tagih-local-tap"
SHADOW_TARGET_ID = "tagih-local-shadow"
# moto's default input for a queue target drops "account"; the predefined whole-event variable keeps
# the envelope as AWS sends it (plus moto's "ingestion-time", which orders the tap and is removed there).
WHOLE_EVENT: InputTransformerTypeDef = {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"}
LONG_POLL_SECONDS = 1  # the longest a poller waits before it notices stop()
TAP_IDLE_SECONDS = 0.05  # between short polls of an empty tap queue
ASYNC_RETRY_DELAYS = (1.0, 2.0)  # Lambda retries an async invoke twice (after 1 and 2 min); seconds here
DELIVERY_WORKERS = 4
STOP_DEADLINE_SECONDS = 5.0
MAX_RECORDED_EVENTS = 10_000  # a stack left running for days must not grow without bound

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_INPUT_PATH = re.compile(r"^\$((\.[A-Za-z0-9_\-]+)|(\[\d+\]))*$")
_PATH_STEP = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]")
_QUEUE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def rate_seconds(expression: str) -> int | None:
    """Seconds between firings of ``rate(N unit)``; None for anything else (``cron(...)``)."""
    match = _RATE.match(expression.strip())
    if match is None:
        return None
    amount = int(match.group(1))
    if amount < 1:
        raise ValueError(f"schedule {expression!r}: the rate must be at least 1")
    return amount * _UNIT_SECONDS[match.group(2).rstrip("s")]


def apply_input_path(event: Any, path: str) -> Any:
    """The part of ``event`` that an EventBridge ``InputPath`` (``$``, ``$.a.b``, ``$.a[0]``) selects."""
    if not _INPUT_PATH.match(path):
        raise ValueError(
            f"InputPath {path!r}: only $, $.field and $.field[index] paths are supported locally"
        )
    value = event
    for key, index in _PATH_STEP.findall(path[1:]):
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return None  # EventBridge sends nothing useful for a missing path; null is the honest stand-in
    return value


def target_payload(target: Target, event: Mapping[str, Any]) -> Any:
    """What a target receives: the event, or its ``Input`` constant, or the part ``InputPath`` picks."""
    if target.input is not None:
        return json.loads(target.input)
    if target.input_path is not None:
        return apply_input_path(event, target.input_path)
    return event


def scheduled_event(rule_arn: str, now: datetime | None = None) -> dict[str, Any]:
    """The event EventBridge sends to a scheduled rule's targets."""
    moment = now or datetime.now(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def execution_name(rule: Rule, event: Mapping[str, Any]) -> str:
    """A unique name for the execution a rule's event starts. EventBridge names it itself; moto keeps
    a missing name as ``None``, so every start after the first collided (ExecutionAlreadyExists) and
    a schedule fired once per stack. The event's id makes it unique per firing and traceable."""
    event_id = str(event.get("id") or uuid.uuid4())
    return _QUEUE_NAME_UNSAFE.sub("-", f"{rule.logical_id[:40]}-{event_id}")[:80]


def _queue_name(prefix: str, suffix: str) -> str:
    return (prefix + _QUEUE_NAME_UNSAFE.sub("-", suffix))[:80]


_ENVELOPE_KEYS = (
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
)


def _envelope(body: str) -> tuple[float, dict[str, Any]]:
    """An event as rule targets receive it, and moto's ingestion time (for ordering only)."""
    message = json.loads(body)
    ingested = float(message.pop("ingestion-time", time.time()))
    return ingested, {key: message[key] for key in _ENVELOPE_KEYS if key in message}


class Dispatcher:
    def __init__(self, model: StackModel, invoke: Invoker, endpoint_url: str) -> None:
        self._model = model
        self._invoke = invoke
        self._endpoint = endpoint_url
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._events: list[tuple[float, int, dict[str, Any]]] = []
        self._events_lock = threading.Lock()
        self._sequence = 0
        self._taps: list[str] = []
        # Held while a tap batch is received and recorded: a reader of the events takes it to
        # record what is still queued, so its answer holds every event put before it asked.
        self._tap_lock = threading.Lock()
        self._rule_arns: dict[str, str] = {}
        self._started = False
        for rule in model.rules.values():  # a path the local stack cannot follow fails at startup
            for target in rule.targets:
                if target.input_path is not None:
                    apply_input_path({}, target.input_path)
                if target.input is not None:
                    json.loads(target.input)
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 — moto's fake credentials
            region_name=REGION,
        )
        # Long polls run in parallel; a small pool would make them queue up behind each other.
        config = Config(
            max_pool_connections=64,
            retries={"max_attempts": 2, "mode": "standard"},
            read_timeout=LONG_POLL_SECONDS + 30,
        )
        self._sqs: SQSClient = session.client("sqs", endpoint_url=endpoint_url, config=config)
        self._events_client: EventBridgeClient = session.client(
            "events", endpoint_url=endpoint_url, config=config
        )
        self._sfn: SFNClient = session.client("stepfunctions", endpoint_url=endpoint_url, config=config)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Create rules, targets, shadow and tap queues; start pollers, the scheduler, the workers."""
        if self._started:
            raise RuntimeError("the dispatcher is already started")
        self._started = True
        for _ in range(DELIVERY_WORKERS):
            self._spawn("deliver", self._work)
        for bus in sorted({"default", *self._model.buses.values()}):
            self._create_tap(bus)
        scheduled: list[tuple[Rule, int]] = []
        for rule in self._model.rules.values():
            self._create_rule(rule)
            if rule.schedule and rule.enabled:
                period = rate_seconds(rule.schedule)
                if period is None:
                    log.info(
                        "rule %s (%s) fires only on demand locally: POST /_local/rules/%s/fire",
                        rule.name,
                        rule.schedule,
                        rule.name,
                    )
                else:
                    scheduled.append((rule, period))
        for mapping in self._model.event_source_mappings:
            self._spawn(f"esm-{mapping.function}-{mapping.queue}", partial(self._poll_mapping, mapping))
        if scheduled:
            self._spawn("scheduler", lambda: self._schedule(scheduled))

    def stop(self) -> None:
        """Stop every thread started here; pollers notice within one long poll."""
        self._stop.set()
        for _ in range(DELIVERY_WORKERS):
            self._jobs.put(None)
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                # Only a handler still running can hold a thread; it is a daemon, so exit is not blocked.
                log.warning("%s still busy at stop (a handler is running)", thread.name)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"{THREAD_PREFIX}-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------------ public API

    def fire_rule(self, name_or_logical_id: str) -> None:
        """Send the rule's targets a Scheduled Event now (whatever its schedule or state)."""
        rule = self._rule(name_or_logical_id)
        event = scheduled_event(self._rule_arn(rule))
        log.info("firing rule %s", rule.name)
        self._deliver_all(rule, rule.targets, event)

    def published_events(self, detail_type: str | None = None) -> list[dict[str, Any]]:
        """Every event put on a bus of the stack so far, oldest first (optionally of one type):
        moto delivers a put event to the tap queue before PutEvents answers, and the queues are
        drained here first, so nothing put before this call is missing."""
        with self._tap_lock:
            for url in self._taps:
                while self._record_tap_batch(url):
                    pass
        with self._events_lock:
            events = [event for _, _, event in sorted(self._events, key=lambda item: item[:2])]
        return [
            copy.deepcopy(event)
            for event in events
            if detail_type is None or event.get("detail-type") == detail_type
        ]

    def _rule(self, name_or_logical_id: str) -> Rule:
        if name_or_logical_id in self._model.rules:
            return self._model.rules[name_or_logical_id]
        for rule in self._model.rules.values():
            if rule.name == name_or_logical_id:
                return rule
        raise KeyError(f"no rule {name_or_logical_id!r} in the template")

    def _rule_arn(self, rule: Rule) -> str:
        if rule.logical_id in self._rule_arns:
            return self._rule_arns[rule.logical_id]
        path = rule.name if rule.bus_name == "default" else f"{rule.bus_name}/{rule.name}"
        return f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{path}"

    # ------------------------------------------------------------------ rules

    def _create_tap(self, bus: str) -> None:
        url, arn = self._create_queue(_queue_name("tagih-local-tap-", bus))
        # "account" is on every event, so this pattern matches everything put on the bus.
        self._events_client.put_rule(
            Name=TAP_RULE_NAME,
            EventBusName=bus,
            EventPattern=json.dumps({"account": [ACCOUNT_ID]}),
            Description="local stack: records every event for GET /_local/events",
        )
        self._events_client.put_targets(
            Rule=TAP_RULE_NAME,
            EventBusName=bus,
            Targets=[{"Id": "tagih-local-tap", "Arn": arn, "InputTransformer": WHOLE_EVENT}],
        )
        self._taps.append(url)
        self._spawn(f"tap-{bus}", lambda: self._poll_tap(url))

    def _poll_tap(self, url: str) -> None:
        """Record the tap's events as they come; short polls, so a reader never waits on one."""
        while not self._stop.is_set():
            try:
                with self._tap_lock:
                    recorded = self._record_tap_batch(url)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("recording events from %s", url)
                recorded = 0
            if not recorded:
                self._stop.wait(TAP_IDLE_SECONDS)

    def _record_tap_batch(self, url: str) -> int:
        """Record and delete what the tap queue holds now (up to 10 events); how many."""
        messages = self._sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        for message in messages:
            self._record(message["Body"])
            self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def _create_rule(self, rule: Rule) -> None:
        kwargs: dict[str, Any] = {
            "Name": rule.name,
            "EventBusName": rule.bus_name,
            "State": "ENABLED" if rule.enabled else "DISABLED",
        }
        if rule.event_pattern is not None:
            kwargs["EventPattern"] = json.dumps(rule.event_pattern)
        if rule.schedule:
            kwargs["ScheduleExpression"] = rule.schedule
        self._rule_arns[rule.logical_id] = self._events_client.put_rule(**kwargs)["RuleArn"]
        # moto delivers to every target of a rule without a pattern for any event on the bus, and
        # ignores State; so a scheduled or disabled rule gets no targets in moto: it is fired here.
        if rule.event_pattern is None or not rule.enabled:
            return
        direct = [
            t for t in rule.targets if t.kind in ("sqs", "bus") and t.input is None and t.input_path is None
        ]
        shadowed = tuple(t for t in rule.targets if t not in direct)
        targets: list[TargetTypeDef] = []
        for target in direct:
            entry: TargetTypeDef = {"Id": f"{target.kind}-{target.ref}"[:64], "Arn": target.arn}
            if target.kind == "sqs":
                entry["InputTransformer"] = WHOLE_EVENT
            targets.append(entry)
        if shadowed:
            url, arn = self._create_queue(_queue_name("tagih-local-shadow-", rule.logical_id))
            targets.append({"Id": SHADOW_TARGET_ID, "Arn": arn, "InputTransformer": WHOLE_EVENT})
            self._spawn(
                f"rule-{rule.logical_id}",
                lambda: self._poll_queue(url, lambda body: self._on_rule_event(rule, shadowed, body)),
            )
        if targets:
            self._events_client.put_targets(Rule=rule.name, EventBusName=rule.bus_name, Targets=targets)

    def _create_queue(self, name: str) -> tuple[str, str]:
        url = self._sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        return url, arn

    def _record(self, body: str) -> None:
        ingested, event = _envelope(body)
        with self._events_lock:
            self._sequence += 1
            self._events.append((ingested, self._sequence, event))
            if len(self._events) > MAX_RECORDED_EVENTS:
                del self._events[: len(self._events) - MAX_RECORDED_EVENTS]

    def _on_rule_event(self, rule: Rule, targets: tuple[Target, ...], body: str) -> None:
        _, event = _envelope(body)
        self._deliver_all(rule, targets, event)

    # ------------------------------------------------------------------ delivery

    def _deliver_all(self, rule: Rule, targets: tuple[Target, ...], event: dict[str, Any]) -> None:
        name = execution_name(rule, event)
        for target in targets:
            payload = target_payload(target, event)
            self._jobs.put(partial(self._deliver, rule, target, payload, name))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                return
            try:
                job()
            except Exception:
                log.exception("delivery failed")

    def _deliver(self, rule: Rule, target: Target, payload: Any, name: str) -> None:
        match target.kind:
            case "lambda":
                self._invoke_async(rule, target.ref, payload)
            case "stepfunctions":
                execution = self._sfn.start_execution(
                    stateMachineArn=target.arn, name=name, input=json.dumps(payload)
                )
                log.info("rule %s started %s", rule.name, execution["executionArn"])
            case "sqs":
                queue_url = self._model.queues[target.ref].url if target.ref in self._model.queues else None
                if queue_url is None:
                    queue_url = self._sqs.get_queue_url(QueueName=target.arn.rsplit(":", 1)[-1])["QueueUrl"]
                self._sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(payload))
            case "bus":
                entry = payload if isinstance(payload, Mapping) else {}
                self._events_client.put_events(
                    Entries=[
                        {
                            "EventBusName": target.arn,
                            "Source": str(entry.get("source", "aws.events")),
                            "DetailType": str(entry.get("detail-type", "Scheduled Event")),
                            "Detail": json.dumps(entry.get("detail", {})),
                            "Resources": list(entry.get("resources", [])),
                        }
                    ]
                )

    def _invoke_async(self, rule: Rule, function: str, payload: Any) -> None:
        """Lambda's asynchronous invocation: an error is retried twice, then only logged."""
        attempts = 1 + len(ASYNC_RETRY_DELAYS)
        for attempt in range(1, attempts + 1):
            try:
                self._invoke(function, payload)
                log.info("rule %s → %s", rule.name, function)
                return
            except FunctionError as error:
                log.warning(
                    "rule %s → %s failed (attempt %d/%d): %s", rule.name, function, attempt, attempts, error
                )
            if attempt == attempts or self._stop.wait(ASYNC_RETRY_DELAYS[attempt - 1]):
                break
        log.error("rule %s → %s: event dropped after %d attempts", rule.name, function, attempts)

    # ------------------------------------------------------------------ pollers

    def _poll_queue(self, url: str, handle: Callable[[str], None]) -> None:
        """Drain a shadow queue: each message is handled once, then deleted."""
        while not self._stop.is_set():
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=LONG_POLL_SECONDS
                ).get("Messages", [])
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("receiving from %s", url)
                self._stop.wait(LONG_POLL_SECONDS)
                continue
            for message in messages:
                try:
                    handle(message["Body"])
                except Exception:
                    log.exception("handling a message from %s", url)  # dropped: a retry would fail alike
                try:
                    self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                except Exception:
                    if not self._stop.is_set():
                        log.exception("deleting a message from %s", url)

    def _poll_mapping(self, mapping: EventSourceMapping) -> None:
        queue_spec = self._model.queues[mapping.queue]
        batch_size = max(1, mapping.batch_size)
        while not self._stop.is_set():
            try:
                messages = self._receive(queue_spec.url, batch_size)
                # As Lambda does: with a batching window, keep gathering until the batch is full or
                # the window has passed (SQS hands out at most 10 messages per receive).
                window_end = time.monotonic() + mapping.maximum_batching_window_seconds
                while (
                    messages
                    and len(messages) < batch_size
                    and time.monotonic() < window_end
                    and not self._stop.is_set()
                ):
                    messages += self._receive(queue_spec.url, batch_size - len(messages))
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("receiving from %s", queue_spec.name)
                self._stop.wait(LONG_POLL_SECONDS)
                continue
            if messages:
                self._process_batch(mapping, queue_spec.url, queue_spec.arn, messages)

    def _receive(self, url: str, count: int) -> list[MessageTypeDef]:
        return self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(count, 10),
            WaitTimeSeconds=LONG_POLL_SECONDS,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    def _process_batch(
        self, mapping: EventSourceMapping, url: str, arn: str, messages: list[MessageTypeDef]
    ) -> None:
        event = {"Records": [sqs_record(message, arn) for message in messages]}
        try:
            result = self._invoke(mapping.function, event)
        except FunctionError as error:
            # The whole batch stays: it comes back after the visibility timeout (and may reach a DLQ).
            log.warning("%s failed on a batch of %d from %s: %s", mapping.function, len(messages), arn, error)
            return
        except Exception:
            log.exception("%s could not be invoked", mapping.function)
            return
        done = messages
        if mapping.report_batch_item_failures:
            failed = batch_item_failures(result, {m["MessageId"] for m in messages})
            if failed is None:
                log.warning(
                    "%s returned an invalid batchItemFailures; the whole batch is retried", mapping.function
                )
                return
            done = [m for m in messages if m["MessageId"] not in failed]
            if failed:
                log.info(
                    "%s: %d of %d messages failed and will be retried",
                    mapping.function,
                    len(failed),
                    len(messages),
                )
        for start in range(0, len(done), 10):  # DeleteMessageBatch takes at most 10 entries
            chunk = done[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )

    # ------------------------------------------------------------------ schedules

    def _schedule(self, rules: list[tuple[Rule, int]]) -> None:
        start = time.monotonic()
        due = {rule.logical_id: start + period for rule, period in rules}
        while not self._stop.is_set():
            now = time.monotonic()
            for rule, period in rules:
                if due[rule.logical_id] <= now:
                    due[rule.logical_id] += period
                    try:
                        self.fire_rule(rule.logical_id)
                    except Exception:
                        log.exception("firing %s", rule.name)
            self._stop.wait(max(0.0, min(due.values()) - time.monotonic()))


def sqs_record(message: MessageTypeDef, queue_arn: str) -> dict[str, Any]:
    """One record of the event Lambda's SQS poller sends."""
    attributes: dict[str, Any] = {}
    for name, value in message.get("MessageAttributes", {}).items():
        attribute: dict[str, Any] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(value["BinaryValue"]).decode()
            if "BinaryValue" in value
            else None,
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": [base64.b64encode(v).decode() for v in value.get("BinaryListValues", [])],
            "dataType": value["DataType"],
        }
        attributes[name] = {k: v for k, v in attribute.items() if v is not None}
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": attributes,
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def batch_item_failures(result: Any, message_ids: set[str]) -> set[str] | None:
    """The message ids a handler reported as failed, or None when the response is invalid.

    As Lambda does: no response or an empty list means all succeeded; an identifier that is empty or
    not in the batch makes the whole batch a failure.
    """
    if result is None:
        return set()
    if not isinstance(result, Mapping):
        return set()  # Lambda ignores a response that is not an object
    items = result.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        return None
    failed: set[str] = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not isinstance(identifier, str) or identifier not in message_ids:
            return None
        failed.add(identifier)
    return failed
