"""The local stack's asynchronous half (``local.dispatch``) against moto in server mode.

A hand-built ``StackModel`` and an in-memory invoker that records what each "function" received stand
in for the template and the worker processes; moto is real (a threaded server on 127.0.0.1), so rules,
patterns, queues, redrive and executions behave as moto makes them behave.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from local.dispatch import (
    THREAD_PREFIX,
    Dispatcher,
    apply_input_path,
    batch_item_failures,
    rate_seconds,
)
from local.model import (
    ACCOUNT_ID,
    REGION,
    EventSourceMapping,
    FunctionError,
    Queue,
    Rule,
    StackModel,
    Target,
)
from tests.e2e.conftest import free_port

DEADLINE_SECONDS = 20.0
BUS = "tagih-unit"
FN_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:"
BUS_ARN = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{BUS}"


def eventually(check: Callable[[], Any], what: str, deadline: float = DEADLINE_SECONDS) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"not within {deadline}s: {what}")
        time.sleep(0.05)


class FakeInvoker:
    """Runs "functions" as Python callables keyed by logical id and records every call."""

    def __init__(self) -> None:
        self.behaviour: dict[str, Callable[[Any], Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, function: str, event: Any) -> Any:
        with self._lock:
            self.calls.append((function, json.loads(json.dumps(event))))
        behaviour = self.behaviour.get(function)
        return behaviour(event) if behaviour else None

    def events_of(self, function: str) -> list[Any]:
        with self._lock:
            return [event for name, event in self.calls if name == function]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per moto request drowns the report
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def endpoint(moto_endpoint: str) -> str:
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    return moto_endpoint


def client(service: str, endpoint: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def invoker() -> FakeInvoker:
    return FakeInvoker()


@pytest.fixture
def run(endpoint: str, invoker: FakeInvoker) -> Iterator[Callable[[StackModel], Dispatcher]]:
    """Start a dispatcher for a model (its bus created first, as the core does); stop it after."""
    started: list[Dispatcher] = []

    def start(model: StackModel) -> Dispatcher:
        for bus in model.buses.values():
            client("events", endpoint).create_event_bus(Name=bus)
        dispatcher = Dispatcher(model, invoker, endpoint)
        dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        dispatcher.stop()


def put_event(endpoint: str, detail_type: str, detail: dict[str, Any], bus: str = BUS) -> str:
    response = client("events", endpoint).put_events(
        Entries=[
            {
                "EventBusName": bus,
                "Source": "tagih.billing",
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
            }
        ]
    )
    assert response["FailedEntryCount"] == 0
    return str(response["Entries"][0]["EventId"])


def lambda_rule(logical_id: str, function: str, pattern: dict[str, Any] | None, **target: Any) -> Rule:
    return Rule(
        logical_id=logical_id,
        name=f"tagih-unit-{logical_id}",
        bus_name=BUS,
        event_pattern=pattern,
        schedule=None,
        targets=(Target(kind="lambda", ref=function, arn=FN_ARN + function, **target),),
    )


def make_queue(endpoint: str, name: str, **attributes: str) -> Queue:
    sqs = client("sqs", endpoint)
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return Queue(logical_id=name, name=name, url=url, arn=arn, attributes=attributes)


def queue_is_empty(endpoint: str, queue: Queue) -> bool:
    """No message waiting and none in flight: everything delivered was deleted."""
    attributes = client("sqs", endpoint).get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return bool(
        attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    )


def queue_bodies(endpoint: str, queue: Queue) -> list[str]:
    messages = client("sqs", endpoint).receive_message(
        QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0
    )
    return [m["Body"] for m in messages.get("Messages", [])]


# ---------------------------------------------------------------- event rules


def test_a_rule_with_a_lambda_target_gets_only_the_events_its_pattern_matches(
    endpoint: str, invoker: FakeInvoker, run: Callable[[StackModel], Dispatcher]
) -> None:
    pattern = {"source": ["tagih.billing"], "detail-type": ["billing.invoice.paid"]}
    model = StackModel(
        parameters={}, buses={"Bus": BUS}, rules={"OnPaid": lambda_rule("OnPaid", "PaidFn", pattern)}
    )
    dispatcher = run(model)

    other_id = put_event(endpoint, "billing.invoice.created", {"invoice": "inv_0"})
    paid_id = put_event(endpoint, "billing.invoice.paid", {"invoice": "inv_1"})

    received = eventually(lambda: invoker.events_of("PaidFn"), "PaidFn invoked")
    eventually(lambda: len(dispatcher.published_events()) == 2, "both events on the tap")
    assert [event["id"] for event in received] == [paid_id]
    assert other_id != paid_id
    event = received[0]
    assert event["detail-type"] == "billing.invoice.paid"
    assert event["source"] == "tagih.billing"
    assert event["detail"] == {"invoice": "inv_1"}
    assert event["account"] == ACCOUNT_ID
    assert event["region"] == REGION
    assert event["time"].endswith("Z")
    assert "ingestion-time" not in event


def test_input_path_and_input_shape_what_the_target_receives(
    endpoint: str, invoker: FakeInvoker, run: Callable[[StackModel], Dispatcher]
) -> None:
    pattern = {"source": ["tagih.billing"]}
    model = StackModel(
        parameters={},
        buses={"Bus": BUS},
        rules={
            "Detail": lambda_rule("Detail", "DetailFn", pattern, input_path="$.detail"),
            "Constant": lambda_rule("Constant", "ConstantFn", pattern, input='{"sweep": true}'),
        },
    )
    run(model)

    put_event(endpoint, "billing.invoice.paid", {"invoice": "inv_2"})

    assert eventually(lambda: invoker.events_of("DetailFn"), "DetailFn invoked") == [{"invoice": "inv_2"}]
    assert eventually(lambda: invoker.events_of("ConstantFn"), "ConstantFn invoked") == [{"sweep": True}]


def test_queue_and_state_machine_targets_receive_the_event(
    endpoint: str, run: Callable[[StackModel], Dispatcher]
) -> None:
    sfn = client("stepfunctions", endpoint)
    machine_arn = sfn.create_state_machine(
        name="tagih-unit-machine",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/x",
    )["stateMachineArn"]
    inbox = make_queue(endpoint, "tagih-unit-inbox")
    pattern = {"detail-type": ["billing.subscription.created"]}
    targets = (
        Target(kind="sqs", ref=inbox.logical_id, arn=inbox.arn),
        Target(kind="stepfunctions", ref="Machine", arn=machine_arn, input_path="$.detail"),
    )
    rule = Rule(
        logical_id="Fanout",
        name="tagih-unit-fanout",
        bus_name=BUS,
        event_pattern=pattern,
        schedule=None,
        targets=targets,
    )
    run(
        StackModel(
            parameters={}, buses={"Bus": BUS}, rules={"Fanout": rule}, queues={inbox.logical_id: inbox}
        )
    )

    event_id = put_event(endpoint, "billing.subscription.created", {"subscription": "sub_1"})

    executions = eventually(
        lambda: sfn.list_executions(stateMachineArn=machine_arn)["executions"], "an execution started"
    )
    described = sfn.describe_execution(executionArn=executions[0]["executionArn"])
    assert json.loads(described["input"]) == {"subscription": "sub_1"}
    bodies = eventually(lambda: queue_bodies(endpoint, inbox), "the event in the queue")
    assert json.loads(bodies[0])["id"] == event_id


def test_the_tap_lists_every_event_put_on_any_bus_oldest_first_and_by_type(
    endpoint: str, run: Callable[[StackModel], Dispatcher]
) -> None:
    dispatcher = run(StackModel(parameters={}, buses={"Bus": BUS}))

    first = put_event(endpoint, "billing.invoice.created", {"n": 1})
    second = put_event(endpoint, "billing.invoice.paid", {"n": 2})
    third = put_event(endpoint, "billing.invoice.created", {"n": 3})
    on_default = put_event(endpoint, "billing.other", {"n": 4}, bus="default")

    # Read at once, not eventually: an event put before the read is in its answer (tests that
    # check what one request published rely on it).
    events = dispatcher.published_events()
    assert [e["id"] for e in events] == [first, second, third, on_default]
    created = dispatcher.published_events("billing.invoice.created")
    assert [e["detail"] for e in created] == [{"n": 1}, {"n": 3}]
    assert set(created[0]) == {
        "version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"
    }  # fmt: skip
    assert dispatcher.published_events("billing.nothing") == []
    created[0]["detail"]["n"] = 99  # a caller's copy, not the record
    assert dispatcher.published_events("billing.invoice.created")[0]["detail"] == {"n": 1}


def test_a_failing_async_target_is_tried_three_times_then_dropped(
    endpoint: str,
    invoker: FakeInvoker,
    run: Callable[[StackModel], Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail(event: Any) -> Any:
        raise FunctionError("Broken", "RuntimeError", "boom")

    invoker.behaviour["Broken"] = fail
    rule = lambda_rule("OnAny", "Broken", {"source": ["tagih.billing"]})
    run(StackModel(parameters={}, buses={"Bus": BUS}, rules={"OnAny": rule}))
    caplog.set_level(logging.INFO, logger="local.dispatch")

    event_id = put_event(endpoint, "billing.invoice.paid", {})

    eventually(lambda: "dropped after 3 attempts" in caplog.text, "the event given up on")
    assert [event["id"] for event in invoker.events_of("Broken")] == [event_id] * 3


# ---------------------------------------------------------------- schedules


def test_fire_rule_sends_a_scheduled_event_to_the_targets(
    endpoint: str, invoker: FakeInvoker, run: Callable[[StackModel], Dispatcher]
) -> None:
    rule = Rule(
        logical_id="SweepSchedule",
        name="tagih-unit-sweep",
        bus_name="default",
        event_pattern=None,
        schedule="rate(1 day)",
        targets=(Target(kind="lambda", ref="SweepFn", arn=FN_ARN + "SweepFn"),),
    )
    dispatcher = run(StackModel(parameters={}, rules={"SweepSchedule": rule}))
    put_event(endpoint, "billing.invoice.paid", {}, bus="default")  # a bus event is not a firing
    eventually(dispatcher.published_events, "the bus event on the tap")

    dispatcher.fire_rule("tagih-unit-sweep")
    dispatcher.fire_rule("SweepSchedule")

    events = eventually(
        lambda: len(invoker.events_of("SweepFn")) == 2 and invoker.events_of("SweepFn"), "2 firings"
    )
    rule_arn = client("events", endpoint).describe_rule(Name="tagih-unit-sweep")["Arn"]
    for event in events:
        assert event["detail-type"] == "Scheduled Event"
        assert event["source"] == "aws.events"
        assert event["resources"] == [rule_arn]
        assert event["detail"] == {}
        assert event["account"] == ACCOUNT_ID
    assert events[0]["id"] != events[1]["id"]
    assert dispatcher.published_events("Scheduled Event") == []  # schedules do not go through a bus


def test_a_schedule_starts_its_state_machine_every_time_it_fires(
    endpoint: str, run: Callable[[StackModel], Dispatcher]
) -> None:
    """Issue 16 item 7: the renewal sweep's schedule started its machine once per stack; the second
    start collided on the execution name (``…renewal:None``)."""
    sfn = client("stepfunctions", endpoint)
    machine_arn = sfn.create_state_machine(
        name="tagih-unit-sweep-machine",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/x",
    )["stateMachineArn"]
    rule = Rule(
        logical_id="SweepMachineHourly",
        name="tagih-unit-sweep-machine-hourly",
        bus_name="default",
        event_pattern=None,
        schedule="rate(1 hour)",
        targets=(Target(kind="stepfunctions", ref="SweepMachine", arn=machine_arn),),
    )
    dispatcher = run(StackModel(parameters={}, rules={"SweepMachineHourly": rule}))

    for _ in range(3):
        dispatcher.fire_rule("SweepMachineHourly")

    def started() -> list[dict[str, Any]]:
        found = sfn.list_executions(stateMachineArn=machine_arn)["executions"]
        return list(found) if len(found) == 3 else []

    executions = eventually(started, "three executions started")
    inputs = [json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"]) for e in executions]
    assert len({i["id"] for i in inputs}) == 3
    assert {e["name"] for e in executions} == {f"SweepMachineHourly-{i['id']}" for i in inputs}


def test_firing_an_unknown_rule_is_a_key_error(run: Callable[[StackModel], Dispatcher]) -> None:
    dispatcher = run(StackModel(parameters={}))
    with pytest.raises(KeyError):
        dispatcher.fire_rule("no-such-rule")


def test_rate_expressions() -> None:
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(1 hour)") == 3600
    assert rate_seconds("rate(2 days)") == 172800
    assert rate_seconds("cron(0 * * * ? *)") is None
    with pytest.raises(ValueError, match="at least 1"):
        rate_seconds("rate(0 minutes)")


def test_input_paths() -> None:
    event = {"detail": {"lines": [{"amount": 5}]}}
    assert apply_input_path(event, "$") == event
    assert apply_input_path(event, "$.detail.lines[0].amount") == 5
    assert apply_input_path(event, "$.missing") is None
    with pytest.raises(ValueError, match="InputPath"):
        apply_input_path(event, "$..amount")


# ---------------------------------------------------------------- SQS event sources


def test_partial_batch_failure_deletes_the_successes_and_the_failure_comes_back_then_reaches_the_dlq(
    endpoint: str, invoker: FakeInvoker, run: Callable[[StackModel], Dispatcher]
) -> None:
    dlq = make_queue(endpoint, "tagih-unit-work-dlq")
    redrive = json.dumps({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": 2})
    work = make_queue(endpoint, "tagih-unit-work", VisibilityTimeout="1", RedrivePolicy=redrive)

    def consume(event: dict[str, Any]) -> dict[str, Any]:
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "bad"]
        return {"batchItemFailures": failures}

    invoker.behaviour["Worker"] = consume
    mapping = EventSourceMapping(function="Worker", queue=work.logical_id, report_batch_item_failures=True)
    run(
        StackModel(
            parameters={},
            queues={work.logical_id: work, dlq.logical_id: dlq},
            event_source_mappings=[mapping],
        )
    )
    sqs = client("sqs", endpoint)
    for body in ("good-1", "bad", "good-2"):
        sqs.send_message(
            QueueUrl=work.url,
            MessageBody=body,
            MessageAttributes={"kind": {"DataType": "String", "StringValue": body}},
        )

    assert eventually(lambda: queue_bodies(endpoint, dlq), "the bad message in the DLQ") == ["bad"]
    records = [record for event in invoker.events_of("Worker") for record in event["Records"]]
    by_body: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_body.setdefault(record["body"], []).append(record)
    assert len(by_body["good-1"]) == 1
    assert len(by_body["good-2"]) == 1
    assert [r["attributes"]["ApproximateReceiveCount"] for r in by_body["bad"]] == ["1", "2"]
    record = by_body["good-1"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == work.arn
    assert record["awsRegion"] == REGION
    assert {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    } <= set(record["attributes"])
    assert record["messageAttributes"]["kind"]["stringValue"] == "good-1"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    assert record["md5OfBody"]
    assert record["receiptHandle"]
    assert queue_is_empty(endpoint, work)


def test_a_function_error_leaves_the_whole_batch_for_redelivery(
    endpoint: str, invoker: FakeInvoker, run: Callable[[StackModel], Dispatcher]
) -> None:
    work = make_queue(endpoint, "tagih-unit-retry", VisibilityTimeout="1")
    attempts: list[int] = []

    def flaky(event: dict[str, Any]) -> None:
        attempts.append(len(event["Records"]))
        if len(attempts) == 1:
            raise FunctionError("Flaky", "RuntimeError", "first time fails")

    invoker.behaviour["Flaky"] = flaky
    client("sqs", endpoint).send_message(QueueUrl=work.url, MessageBody="once")
    mapping = EventSourceMapping(function="Flaky", queue=work.logical_id)
    run(StackModel(parameters={}, queues={work.logical_id: work}, event_source_mappings=[mapping]))

    records = eventually(
        lambda: (
            len(invoker.events_of("Flaky")) == 2 and [e["Records"][0] for e in invoker.events_of("Flaky")]
        ),
        "the message delivered again",
    )
    assert [r["body"] for r in records] == ["once", "once"]
    assert records[0]["messageId"] == records[1]["messageId"]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in records] == ["1", "2"]
    eventually(lambda: queue_is_empty(endpoint, work), "the delivered message deleted")


def test_a_batching_window_gathers_a_batch_larger_than_one_receive(
    endpoint: str, invoker: FakeInvoker, run: Callable[[StackModel], Dispatcher]
) -> None:
    work = make_queue(endpoint, "tagih-unit-bulk")
    sqs = client("sqs", endpoint)
    for n in range(15):
        sqs.send_message(QueueUrl=work.url, MessageBody=f"m{n}")
    mapping = EventSourceMapping(
        function="Bulk", queue=work.logical_id, batch_size=15, maximum_batching_window_seconds=5
    )
    run(StackModel(parameters={}, queues={work.logical_id: work}, event_source_mappings=[mapping]))

    batches = eventually(lambda: invoker.events_of("Bulk"), "a batch delivered")

    assert sorted(r["body"] for r in batches[0]["Records"]) == sorted(f"m{n}" for n in range(15))
    eventually(lambda: queue_is_empty(endpoint, work), "the batch deleted")


def test_batch_item_failures_validation() -> None:
    ids = {"a", "b"}
    assert batch_item_failures(None, ids) == set()
    assert batch_item_failures({"batchItemFailures": []}, ids) == set()
    assert batch_item_failures({"batchItemFailures": [{"itemIdentifier": "a"}]}, ids) == {"a"}
    assert batch_item_failures({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) is None
    assert batch_item_failures({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, ids) is None


# ---------------------------------------------------------------- lifecycle


def test_stop_ends_every_thread_it_started(endpoint: str, invoker: FakeInvoker) -> None:
    work = make_queue(endpoint, "tagih-unit-idle")
    client("events", endpoint).create_event_bus(Name=BUS)
    rule = Rule(
        logical_id="Hourly",
        name="tagih-unit-hourly",
        bus_name="default",
        event_pattern=None,
        schedule="rate(1 hour)",
        targets=(Target(kind="lambda", ref="Fn", arn=FN_ARN + "Fn"),),
    )
    model = StackModel(
        parameters={},
        buses={"Bus": BUS},
        rules={"Hourly": rule, "OnAny": lambda_rule("OnAny", "Fn", {"source": ["x"]})},
        queues={work.logical_id: work},
        event_source_mappings=[EventSourceMapping(function="Fn", queue=work.logical_id)],
    )
    dispatcher = Dispatcher(model, invoker, endpoint)
    dispatcher.start()
    mine = [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
    assert mine
    assert all(t.daemon for t in mine)

    dispatcher.stop()

    assert [t.name for t in mine if t.is_alive()] == []
