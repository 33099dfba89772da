"""The local stack's asynchronous half, end to end: the fixture template under tests/e2e/fixtures.

Everything is observed the way a developer would: through boto3 against the stack's moto endpoint
(execution status and output, the table the fixture functions write into, the DLQ) and through the
``/_local`` endpoints. Outcomes are polled with a deadline, never waited for blindly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.e2e.conftest import LocalStack, eventually

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).parent / "fixtures" / "template.yaml"
TABLE = "tagih-fixture-records"
BUS = "tagih-fixture"
MACHINE = "tagih-fixture-machine"


@pytest.fixture(scope="module")
def stack(local_stack_factory: Callable[..., LocalStack]) -> LocalStack:
    # A developer in Jakarta (UTC+7): timestamp waits must still count from UTC.
    return local_stack_factory(template=FIXTURE, env={"TZ": "Asia/Jakarta"})


def aws(stack: LocalStack, service: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=stack.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def records(stack: LocalStack, kind: str) -> list[dict[str, Any]]:
    """What the fixture functions wrote under one partition."""
    table = boto3.resource(
        "dynamodb",
        endpoint_url=stack.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).Table(TABLE)
    return list(
        table.query(KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": kind})["Items"]
    )


def put_event(stack: LocalStack, detail_type: str, detail: dict[str, Any]) -> str:
    response = aws(stack, "events").put_events(
        Entries=[
            {
                "EventBusName": BUS,
                "Source": "fixture.test",
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
            }
        ]
    )
    assert response["FailedEntryCount"] == 0
    return str(response["Entries"][0]["EventId"])


def tap_ids(stack: LocalStack) -> set[str]:
    return {event["id"] for event in stack.request("GET", "/_local/events").json()["items"]}


def test_a_state_machine_waits_runs_its_lambda_tasks_retries_and_catches(stack: LocalStack) -> None:
    sfn = aws(stack, "stepfunctions")
    machine_arn = f"arn:aws:states:us-east-1:123456789012:stateMachine:{MACHINE}"
    at = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    name = f"run-{uuid.uuid4().hex[:8]}"

    execution_arn = sfn.start_execution(
        stateMachineArn=machine_arn,
        name=name,
        input=json.dumps({"at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "name": "Ayu"}),
    )["executionArn"]

    described = eventually(
        lambda: (d := sfn.describe_execution(executionArn=execution_arn))["status"] != "RUNNING" and d,
        "the execution finished",
    )
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["greeting"] == {"message": "hello Ayu"}  # the plain function-ARN task
    assert output["flaky"] == {"attempts": 3}  # lambda:invoke, retried twice on FlakyError
    assert output["caught"]["Error"] == "BoomError"  # Catch on the handler's error type
    assert "always fails" in output["caught"]["Cause"]
    assert [item["attempts"] for item in records(stack, "FLAKY") if item["SK"] == name] == [3]
    # The run alone takes about three seconds; ending after `at` means WaitUntil honoured it.
    assert described["stopDate"] >= at


def test_an_event_put_on_the_bus_reaches_the_rules_function_and_no_other(stack: LocalStack) -> None:
    other_id = put_event(stack, "fixture.goodbye", {"n": 0})
    hello_id = put_event(stack, "fixture.hello", {"greeting": "halo"})

    recorded = eventually(
        lambda: [r for r in records(stack, "RULE") if r["SK"] == hello_id], "OnHelloFunction ran"
    )
    event = json.loads(recorded[0]["event"])
    assert event["detail-type"] == "fixture.hello"
    assert event["source"] == "fixture.test"
    assert event["detail"] == {"greeting": "halo"}
    assert event["account"] == "123456789012"
    # The other event was put first; once the tap has it, a delivery of it would have come first too.
    eventually(lambda: other_id in tap_ids(stack), "the other event on the tap")
    assert hello_id in tap_ids(stack)
    assert other_id not in {r["SK"] for r in records(stack, "RULE")}


def test_sqs_messages_reach_the_consumer_and_a_failing_one_lands_in_the_dlq(stack: LocalStack) -> None:
    sqs = aws(stack, "sqs")
    work_url = sqs.get_queue_url(QueueName="tagih-fixture-work")["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName="tagih-fixture-work-dlq")["QueueUrl"]
    good, bad = f"ok-{uuid.uuid4().hex[:6]}", f"fail-{uuid.uuid4().hex[:6]}"

    good_id = sqs.send_message(QueueUrl=work_url, MessageBody=good)["MessageId"]
    bad_id = sqs.send_message(QueueUrl=work_url, MessageBody=bad)["MessageId"]

    def dead_letters() -> list[dict[str, Any]]:
        response = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return [m for m in response.get("Messages", []) if m["Body"] == bad]

    dead = eventually(dead_letters, "the failing message in the DLQ")
    assert dead[0]["MessageId"] == bad_id
    deliveries = records(stack, "SQS")
    assert [d["SK"] for d in deliveries if d["body"] == good] == [f"{good_id}#1"]
    assert sorted(d["SK"] for d in deliveries if d["body"] == bad) == [f"{bad_id}#1", f"{bad_id}#2"]
    record = json.loads(next(d for d in deliveries if d["body"] == good)["record"])
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:tagih-fixture-work"
    remaining = sqs.get_queue_attributes(
        QueueUrl=work_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert remaining == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_firing_the_daily_schedule_runs_its_function_with_a_scheduled_event(stack: LocalStack) -> None:
    before = {r["SK"] for r in records(stack, "SWEEP")}

    response = stack.request("POST", "/_local/rules/tagih-fixture-sweep/fire")

    assert response.status_code == 202, response.text
    fresh = eventually(lambda: [r for r in records(stack, "SWEEP") if r["SK"] not in before], "the sweep ran")
    event = json.loads(fresh[0]["event"])
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    rule_arn = aws(stack, "events").describe_rule(Name="tagih-fixture-sweep")["Arn"]
    assert event["resources"] == [rule_arn]
    assert (
        aws(stack, "events").describe_rule(Name="tagih-fixture-sweep")["ScheduleExpression"] == "rate(1 day)"
    )


def test_firing_an_unknown_rule_is_a_404(stack: LocalStack) -> None:
    assert stack.request("POST", "/_local/rules/no-such-rule/fire").status_code == 404


def test_local_events_lists_what_a_handler_published_by_type(stack: LocalStack) -> None:
    kind = f"fixture.published.{uuid.uuid4().hex[:6]}"

    first = stack.request("POST", "/publish", json={"detail_type": kind, "detail": {"n": 1}})
    second = stack.request("POST", "/publish", json={"detail_type": kind, "detail": {"n": 2}})
    put_event(stack, "fixture.unrelated", {})

    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text

    def listed() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = stack.request("GET", f"/_local/events?type={kind}").json()["items"]
        return items if len(items) == 2 else []

    items = eventually(listed, "both published events listed")
    assert [item["id"] for item in items] == [first.json()["event_id"], second.json()["event_id"]]
    assert [item["detail"] for item in items] == [{"n": 1}, {"n": 2}]
    assert {item["detail-type"] for item in items} == {kind}
    assert set(items[0]) == {
        "version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"
    }  # fmt: skip
