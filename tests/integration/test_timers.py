"""Timers on moto: what the billing services arm (trial, grace, incomplete, dunning) with which
deterministic names and inputs, what the timers function's tasks do when the state machines call
them (charge once; early → wait again; stale or duplicate → nothing), and the renewal sweep reading
only what is due.

moto here records executions without running them; the local stack runs the same machines for real
(tests/e2e/test_timers_flow.py). Time is pinned through the clock's port (``use_wall_clock``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from local.midtrans_fake import MidtransFake
from tagih import clock
from tagih.clock import parse_rfc3339, to_rfc3339
from tagih.domain.catalog import default_catalog
from tagih.domain.subscriptions import Subscription
from tagih.domain.transitions import start_subscription
from tagih.store.subscriptions import SubscriptionItems, subscription_item
from tagih.store.table import reset_clients, table
from tests.conftest import TABLE_NAME
from tests.fakes.aws_calls import count_items_read
from tests.fakes.billing_setup import (
    CARD_TOKEN,
    DECLINING,
    add_method,
    invoice_charges,
    mark_trialled,
    set_card_token,
)
from tests.fakes.gateway_env import configure_gateways
from tests.fakes.lambda_runtime import Answer, FakeLambdaContext, PinnedClock, call_api, load_function
from tests.fakes.midtrans_server import running_midtrans_fake

ORG = "org_timers"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def now() -> Iterator[PinnedClock]:
    pinned = PinnedClock(T0)
    clock.use_wall_clock(pinned)
    yield pinned
    clock.use_wall_clock(None)


@pytest.fixture
def midtrans(
    catalog: None, timer_machines: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[MidtransFake]:
    with running_midtrans_fake() as fake:
        configure_gateways(monkeypatch, midtrans=fake, timeout_seconds=2.0)
        yield fake


def call(method: str, path: str, body: Any = None, org: str = ORG) -> Answer:
    return call_api(method, path, body=body, org=org)


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """The timers function, called as a state machine's Lambda task calls it."""
    answer: dict[str, Any] = load_function("timers").lambda_handler(task, FakeLambdaContext("TimersFunction"))
    return answer


def executions(machine_arn: str) -> list[dict[str, Any]]:
    client = boto3.client("stepfunctions")
    found = client.list_executions(stateMachineArn=machine_arn)["executions"]
    return [
        {**e, "input": json.loads(client.describe_execution(executionArn=e["executionArn"])["input"])}
        for e in found
    ]


def subscribe(plan: str = "pro", token: str = CARD_TOKEN) -> dict[str, Any]:
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    if token != CARD_TOKEN:
        set_card_token(ORG, card, token)
    answer = call("POST", "/billing/subscriptions", {"plan": plan, "payment_method_id": card})
    assert answer.status == 201, answer.raw
    return answer.body


# -- trials --------------------------------------------------------------------------------------------
def test_a_trial_arms_one_timer_whose_task_ends_the_trial_and_charges_once(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    trial = subscribe()
    ends = parse_rfc3339(trial["trial_ends_at"])

    [armed] = executions(timer_machines["trial"])
    assert armed["name"] == f"trial-{trial['id']}-1"
    assert armed["input"] == {
        "organization_id": ORG,
        "subscription_id": trial["id"],
        "notice_at": to_rfc3339(ends - 3 * DAY),
        "wait_until": trial["trial_ends_at"],
    }
    task = {"action": "end_trial", "organization_id": ORG, "subscription_id": trial["id"]}

    # Fired early (a clock skew, a duplicate start): nothing charged, the machine waits again.
    assert run_task(task) == {
        "action": "end_trial",
        "status": "skipped",
        "reason": "early",
        "wait_until": trial["trial_ends_at"],
        "attempt": None,
    }
    assert invoice_charges(midtrans) == []

    now.at = ends + timedelta(seconds=5)
    ended = run_task(task)
    duplicate = run_task(task)

    assert (ended["status"], ended["reason"], ended["wait_until"]) == ("done", "paid", None)
    assert (duplicate["status"], duplicate["reason"]) == ("skipped", "not_due")
    assert len(invoice_charges(midtrans)) == 1
    current = call("GET", "/billing/subscription").body
    assert (current["status"], current["plan"]) == ("active", "pro")


def test_the_notice_task_publishes_only_inside_the_notice_window(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    trial = subscribe()
    notice = {"action": "trial_will_end", "organization_id": ORG, "subscription_id": trial["id"]}

    early = run_task(notice)
    now.at = parse_rfc3339(trial["trial_ends_at"]) - 2 * DAY
    published = run_task(notice)

    assert (early["reason"], early["wait_until"]) == (
        "early",
        to_rfc3339(parse_rfc3339(trial["trial_ends_at"]) - 3 * DAY),
    )
    assert (published["status"], published["reason"]) == ("done", "published")


# -- dunning -------------------------------------------------------------------------------------------
def test_a_declined_trial_end_arms_dunning_whose_retries_end_in_free(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    trial = subscribe(token=DECLINING)
    failed_at = parse_rfc3339(trial["trial_ends_at"])
    now.at = failed_at

    failed = run_task({"action": "end_trial", "organization_id": ORG, "subscription_id": trial["id"]})

    assert failed["reason"] == "payment_failed"
    [invoice] = call("GET", "/billing/invoices").body["items"]
    [dunning] = executions(timer_machines["dunning"])
    assert dunning["name"] == f"dunning-{invoice['id']}"
    assert dunning["input"] == {
        "organization_id": ORG,
        "invoice_id": invoice["id"],
        "attempt": 1,
        "wait_until": to_rfc3339(failed_at + DAY),
    }
    # The state machine's loop: wait until wait_until, run the retry, repeat while it says so.
    step: dict[str, Any] = dunning["input"]
    answers = []
    while step.get("wait_until"):
        now.at = parse_rfc3339(step["wait_until"])
        answer = run_task(
            {
                "action": "retry_payment",
                "organization_id": ORG,
                "invoice_id": invoice["id"],
                "attempt": step["attempt"],
            }
        )
        answers.append((answer["reason"], answer["wait_until"], answer["attempt"]))
        step = answer

    assert answers == [
        ("payment_failed", to_rfc3339(failed_at + 3 * DAY), 2),
        ("payment_failed", to_rfc3339(failed_at + 5 * DAY), 3),
        ("payment_failed", to_rfc3339(failed_at + 7 * DAY), 4),
        ("retries_exhausted", None, None),
    ]
    assert len(invoice_charges(midtrans)) == 5
    given_up = call("GET", f"/billing/invoices/{invoice['id']}").body
    assert given_up["status"] == "uncollectible"
    current = call("GET", "/billing/subscription").body
    assert (current["plan"], current["status"]) == ("free", "active")
    assert len(executions(timer_machines["dunning"])) == 1  # one execution followed every retry


# -- grace ---------------------------------------------------------------------------------------------
def test_cancel_arms_the_grace_timer_and_reactivation_stops_it(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    trial = subscribe()
    now.at = T0 + DAY
    cancelled = call("POST", f"/billing/subscriptions/{trial['id']}/cancel")
    assert cancelled.status == 200, cancelled.raw

    [grace] = executions(timer_machines["grace_period"])
    assert grace["name"] == f"grace-{trial['id']}-{int((T0 + DAY).timestamp() * 1000)}"
    assert grace["input"]["wait_until"] == cancelled.body["grace_period_ends_at"]
    assert grace["status"] == "RUNNING"

    reactivated = call("POST", f"/billing/subscriptions/{trial['id']}/reactivate")
    assert reactivated.status == 200, reactivated.raw
    [stopped] = executions(timer_machines["grace_period"])
    assert stopped["status"] == "ABORTED"
    # Had the stop been lost, the firing would change nothing: the subscription is not in grace.
    now.at = parse_rfc3339(cancelled.body["grace_period_ends_at"])
    fired = run_task({"action": "end_grace", "organization_id": ORG, "subscription_id": trial["id"]})
    assert (fired["status"], fired["reason"]) == ("skipped", "not_due")
    assert call("GET", "/billing/subscription").body["status"] == "trialing"


def test_the_grace_task_cancels_to_free_once_when_grace_ends(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    trial = subscribe()
    ends = parse_rfc3339(
        call("POST", f"/billing/subscriptions/{trial['id']}/cancel").body["grace_period_ends_at"]
    )
    task = {"action": "end_grace", "organization_id": ORG, "subscription_id": trial["id"]}

    now.at = ends
    ended, again = run_task(task), run_task(task)

    assert (ended["status"], ended["reason"]) == ("done", "cancelled")
    assert (again["status"], again["reason"]) == ("skipped", "not_due")
    assert call("GET", "/billing/subscription").body["plan"] == "free"
    assert invoice_charges(midtrans) == []  # a cancelled trial is never charged


# -- incomplete ----------------------------------------------------------------------------------------
def test_an_unpaid_transfer_arms_the_incomplete_timer_which_voids_after_23_hours(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    mark_trialled(ORG)
    bca = add_method(ORG, {"type": "bank_transfer", "bank": "bca"})
    started = call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": bca})
    assert started.status == 201, started.raw
    assert started.body["status"] == "incomplete"

    [armed] = executions(timer_machines["incomplete"])
    assert armed["name"] == f"incomplete-{started.body['id']}"
    assert armed["input"]["wait_until"] == to_rfc3339(T0 + timedelta(hours=23))

    now.at = T0 + timedelta(hours=23)
    expired = run_task(
        {"action": "expire_incomplete", "organization_id": ORG, "subscription_id": started.body["id"]}
    )

    assert (expired["status"], expired["reason"]) == ("done", "cancelled")
    [invoice] = call("GET", "/billing/invoices").body["items"]
    assert invoice["status"] == "void"


# -- test clocks ---------------------------------------------------------------------------------------
def test_an_organization_with_a_test_clock_arms_no_timer_and_timers_leave_it_alone(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    assert call("POST", "/billing/test-clock", {"frozen_time": "2026-01-01T00:00:00Z"}).status == 201
    trial = subscribe()

    assert executions(timer_machines["trial"]) == []
    now.at = T0 + 60 * DAY  # long after the clock's trial end, in wall time
    fired = run_task({"action": "end_trial", "organization_id": ORG, "subscription_id": trial["id"]})
    assert (fired["status"], fired["reason"]) == ("skipped", "test_clock")
    assert call("GET", "/billing/subscription").body["status"] == "trialing"


# -- renewal sweep -------------------------------------------------------------------------------------
def stored_active(org: str, period_end: datetime) -> Subscription:
    """An active monthly Pro subscription whose period ends at ``period_end``, as the store keeps it."""
    [pro] = [plan for plan in default_catalog().plans if plan.slug == "pro"]
    sub = start_subscription(
        org,
        pro,
        "monthly",
        period_end - 31 * DAY,
        trial_available=False,
        payment_method_id="pm_x",
        gateway="midtrans",
        currency="IDR",
    ).subscription
    return sub.model_copy(
        update={"status": "active", "current_period_end": period_end, "incomplete_expires_at": None}
    )


def test_the_sweep_reads_only_the_due_renewals_among_2000_subscriptions(
    catalog: None, timer_machines: dict[str, str]
) -> None:
    at = T0
    due = {
        f"org_due_{i:02d}": stored_active(f"org_due_{i:02d}", at - timedelta(minutes=7 * i + 1))
        for i in range(20)
    }
    later = [stored_active(f"org_later_{i:04d}", at + timedelta(minutes=1 + i)) for i in range(1980)]
    with table().batch_writer() as batch:
        for sub in [*due.values(), *later]:
            batch.put_item(Item=subscription_item(sub))

    with count_items_read() as read:
        found = run_task({"action": "find_due_renewals", "at": to_rfc3339(at), "cursor": ""})

    assert found["cursor"] == ""
    assert sorted(item["organization_id"] for item in found["items"]) == sorted(due)
    assert all(item["action"] == "renew" and item["version"] == 1 for item in found["items"])
    assert sum(read.values()) <= 30, read


def test_the_sweep_pages_without_losing_or_repeating_a_renewal(catalog: None) -> None:
    at = T0
    subs = [stored_active(f"org_page_{i:02d}", at - timedelta(hours=i % 5, minutes=i)) for i in range(23)]
    with table().batch_writer() as batch:
        for sub in subs:
            batch.put_item(Item=subscription_item(sub))
    store = SubscriptionItems(table())

    seen: list[str] = []
    cursor, pages = "", 0
    while True:
        page, cursor = store.due_renewals(at, lookback=timedelta(hours=72), page_size=4, cursor=cursor)
        seen += [due.organization_id for due in page]
        pages += 1
        if not cursor:
            break
    assert sorted(seen) == sorted(sub.organization_id for sub in subs)
    assert pages >= 6


def test_a_renewal_task_charges_once_and_a_stale_copy_changes_nothing(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    mark_trialled(ORG)
    active = subscribe()
    assert active["status"] == "active"
    now.at = parse_rfc3339(active["current_period_end"]) + timedelta(minutes=30)
    [due] = run_task({"action": "find_due_renewals", "at": to_rfc3339(now.at), "cursor": ""})["items"]

    renewed = run_task(due)
    stale = run_task(due)  # the same index copy, delivered twice by the Map

    assert (renewed["status"], renewed["reason"]) == ("done", "paid")
    assert (stale["status"], stale["reason"]) == ("skipped", "stale")
    assert len(invoice_charges(midtrans)) == 2  # the first period and this renewal
    assert run_task({"action": "find_due_renewals", "at": to_rfc3339(now.at), "cursor": ""})["items"] == []


def test_a_declined_renewal_arms_dunning(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    mark_trialled(ORG)
    active = subscribe()
    [method] = call("GET", "/billing/payment-methods").body["items"]
    set_card_token(ORG, method["id"], DECLINING)
    now.at = parse_rfc3339(active["current_period_end"])
    [due] = run_task({"action": "find_due_renewals", "at": to_rfc3339(now.at), "cursor": ""})["items"]

    failed = run_task(due)

    assert failed["reason"] == "payment_failed"
    assert call("GET", "/billing/subscription").body["status"] == "past_due"
    [dunning] = executions(timer_machines["dunning"])
    assert dunning["input"]["attempt"] == 1
    assert dunning["input"]["wait_until"] == to_rfc3339(now.at + DAY)


def test_arming_the_same_timer_twice_starts_one_execution(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    from tagih.wiring import default_billing

    trial = subscribe()
    stored = default_billing().subscriptions.current(ORG)
    assert stored is not None
    default_billing().timers.start_trial_timer(stored)

    assert [e["name"] for e in executions(timer_machines["trial"])] == [f"trial-{trial['id']}-1"]
    assert (
        boto3.resource("dynamodb")
        .Table(TABLE_NAME)
        .get_item(Key={"PK": f"ORG#{ORG}", "SK": "SUBSCRIPTION"})["Item"]["version"]
        == 1
    )


# -- what the timers could not finish ------------------------------------------------------------------
def test_a_trial_whose_timer_was_lost_is_ended_by_the_sweep(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    trial = subscribe()
    ends = parse_rfc3339(trial["trial_ends_at"])

    before = run_task(
        {"action": "find_due_renewals", "at": to_rfc3339(ends - timedelta(seconds=1)), "cursor": ""}
    )
    now.at = ends + timedelta(minutes=5)
    found = run_task({"action": "find_due_renewals", "at": to_rfc3339(now.at), "cursor": ""})

    assert before["items"] == []
    [due] = found["items"]
    assert due == {"action": "end_trial", "organization_id": ORG, "subscription_id": trial["id"]}
    ended = run_task(due)  # what the sweep's Map runs for it
    assert (ended["status"], ended["reason"]) == ("done", "paid")
    assert len(invoice_charges(midtrans)) == 1
    assert call("GET", "/billing/subscription").body["status"] == "active"
    # Active now, it is in the index again for its first renewal, not for its trial.
    assert run_task({"action": "find_due_renewals", "at": to_rfc3339(now.at), "cursor": ""})["items"] == []


def kept_tasks() -> list[dict[str, Any]]:
    return list(
        table().query(
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": "FAILEDTIMER"},
            ConsistentRead=True,
        )["Items"]
    )


def test_a_task_a_machine_gave_up_on_is_kept_and_the_janitor_finishes_it_once(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    trial = subscribe()
    now.at = parse_rfc3339(trial["trial_ends_at"]) + timedelta(minutes=1)
    task = {"action": "end_trial", "organization_id": ORG, "subscription_id": trial["id"]}
    caught = {"action": "record_failed_timer", "machine": "trial", "task": task, "error": "States.Timeout"}

    run_task({**caught, "cause": "Task timed out after 60.00 seconds"})
    run_task({**caught, "cause": "again"})  # the same task failing twice is one kept item

    [kept] = kept_tasks()
    assert (kept["machine"], kept["task"], kept["failures"]) == ("trial", task, 2)
    assert invoice_charges(midtrans) == []

    first = run_task({"action": "reconcile"})
    second = run_task({"action": "reconcile"})

    assert (first["redriven"], first["still_failing"]) == (1, 0)
    assert (second["redriven"], second["still_failing"]) == (0, 0)
    assert kept_tasks() == []
    assert len(invoice_charges(midtrans)) == 1
    assert call("GET", "/billing/subscription").body["status"] == "active"


def test_a_kept_dunning_retry_that_fails_again_is_carried_on_by_a_fresh_execution(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    trial = subscribe(token=DECLINING)
    failed_at = parse_rfc3339(trial["trial_ends_at"])
    now.at = failed_at
    run_task({"action": "end_trial", "organization_id": ORG, "subscription_id": trial["id"]})
    [invoice] = call("GET", "/billing/invoices").body["items"]
    now.at = failed_at + DAY
    retry = {"action": "retry_payment", "organization_id": ORG, "invoice_id": invoice["id"], "attempt": 1}
    run_task(
        {"action": "record_failed_timer", "machine": "dunning", "task": retry, "error": "Lambda.Unknown"}
    )

    reconciled = run_task({"action": "reconcile"})

    assert (reconciled["redriven"], reconciled["still_failing"]) == (1, 0)
    assert kept_tasks() == []
    assert len(invoice_charges(midtrans)) == 2  # the first charge and the re-driven retry, declined
    carried = [e for e in executions(timer_machines["dunning"]) if e["name"] != f"dunning-{invoice['id']}"]
    [fresh] = carried
    assert fresh["name"].startswith(f"dunning-{invoice['id']}-r")
    assert fresh["input"] == {
        "organization_id": ORG,
        "invoice_id": invoice["id"],
        "attempt": 2,
        "wait_until": to_rfc3339(failed_at + 3 * DAY),
    }


def test_a_kept_task_that_still_fails_stays_kept_for_a_person(
    midtrans: MidtransFake, timer_machines: dict[str, str], now: PinnedClock
) -> None:
    broken = {"action": "end_trial", "organization_id": ORG, "subscription_id": "sub_x", "unexpected": 1}
    run_task(
        {"action": "record_failed_timer", "machine": "trial", "task": broken, "error": "ValidationError"}
    )

    reconciled = run_task({"action": "reconcile"})

    assert (reconciled["redriven"], reconciled["still_failing"]) == (0, 1)
    [kept] = kept_tasks()
    assert kept["task"] == broken


def test_a_function_configured_with_a_non_increasing_dunning_schedule_refuses_to_run(
    catalog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 item 7, deployed: the schedule used to be read at the first trial end, and every one
    raised ``ValueError``; now the settings refuse it, naming the variable, on any invocation."""
    monkeypatch.setenv("DUNNING_SCHEDULE", "PT15S,PT15S")
    reset_clients()

    with pytest.raises(ValidationError) as refused:
        run_task({"action": "find_due_renewals", "at": to_rfc3339(T0), "cursor": ""})
    assert "DUNNING_SCHEDULE: 'PT15S,PT15S': delays must increase" in str(refused.value)
    with pytest.raises(ValidationError):
        call("GET", "/billing/subscription")
