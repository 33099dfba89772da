"""The real timer state machines on the local stack, with durations of seconds (template parameters
``TrialDuration``, ``GraceDuration``, ``DunningSchedule``, as ``make local PARAMS=…`` passes them):
trial → active; cancel → grace → Free; a failing card → dunning → uncollectible → Free; and the
hourly renewal sweep's Distributed Map renewing a due subscription when its rule fires.

Outcomes are observed over HTTP (``GET /billing/subscription``, ``/billing/invoices``,
``/_local/events``), polled with a deadline; nothing here advances time but the wall clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.e2e.conftest import LocalStack, eventually, free_port
from tests.fakes.lambda_runtime import ROOT

pytestmark = pytest.mark.e2e

# Long enough for the trial-will-end notice to run first: the timers function's first invocation
# starts a worker process, and a notice that arrives after the trial's end is skipped.
TRIAL_SECONDS = 8
DEADLINE_SECONDS = 90.0
CARD_TOKEN = "481111-1114-one-time-7d1b"


def no_funds_card() -> str:
    """A one-time token the Midtrans fake verifies and saves, then declines every charge of."""
    return f"481111-insufficient_funds-{uuid.uuid4().hex[:8]}-1114"


PRO_WITH_PPN = 331_890


@pytest.fixture(scope="module")
def stack(local_stack_factory: Callable[..., LocalStack]) -> LocalStack:
    return local_stack_factory(
        parameters={
            "TrialDuration": f"PT{TRIAL_SECONDS}S",
            "GraceDuration": "PT3S",
            "DunningSchedule": "PT2S,PT4S",
        }
    )


class Org:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.id = f"org_timer_{uuid.uuid4().hex[:8]}"
        self.headers = stack.headers(self.id, "owner")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.stack.request(method, path, headers=self.headers, json=body)
        assert answer.status_code < 300, answer.text
        return answer.json()

    def subscription(self) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", "/billing/subscription")
        return found

    def invoices(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", "/billing/invoices")["items"]
        return found

    def events(self) -> list[str]:
        items = self.stack.request("GET", "/_local/events").json()["items"]
        return [e["detail-type"] for e in items if e["detail"]["organization_id"] == self.id]

    def card(self, token: str = CARD_TOKEN) -> str:
        method = self.call("POST", "/billing/payment-methods", {"type": "credit_card", "token": token})
        return str(method["id"])


def test_a_non_increasing_dunning_schedule_stops_the_stack_from_starting_naming_the_parameter() -> None:
    """Issue 16 item 7: ``PT15S,PT15S`` matches the template's pattern; the stack started fine and
    every trial end then failed with a ``ValueError``."""
    args = ["--port", str(free_port()), "--parameter-overrides", "DunningSchedule=PT15S,PT15S"]
    started = subprocess.Popen(
        [sys.executable, "-m", "local", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a stack that did start is stopped whole (its fakes too)
    )
    try:
        _, stderr = started.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(started.pid, signal.SIGKILL)
        started.communicate()
        pytest.fail("the stack started with DunningSchedule=PT15S,PT15S")

    assert started.returncode != 0
    assert "parameter DunningSchedule is refused" in stderr
    assert "delay 2 (PT15S) is not after delay 1 (PT15S)" in stderr


def test_a_trial_ends_on_its_timer_and_the_card_is_charged(stack: LocalStack) -> None:
    org = Org(stack)
    trial = org.call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": org.card()})
    assert trial["status"] == "trialing"

    # Events are published once the change is stored: the last one says everything is in place.
    eventually(lambda: "billing.subscription.updated" in org.events(), "trial → active", DEADLINE_SECONDS)

    active = org.subscription()
    assert active["status"] == "active"
    assert active["current_period_start"] == trial["trial_ends_at"]
    [invoice] = org.invoices()
    assert (invoice["status"], invoice["billing_reason"], invoice["total"]) == (
        "paid",
        "subscription_create",
        PRO_WITH_PPN,
    )
    assert org.events() == [
        "billing.payment_method.added",
        "billing.subscription.created",
        "billing.subscription.trial_will_end",
        "billing.invoice.created",
        "billing.invoice.paid",
        "billing.subscription.updated",
    ]


def test_a_cancelled_trial_ends_in_free_when_its_grace_ends(stack: LocalStack) -> None:
    org = Org(stack)
    trial = org.call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": org.card()})
    cancelled = org.call("POST", f"/billing/subscriptions/{trial['id']}/cancel")
    assert cancelled["status"] == "grace_period"

    eventually(lambda: "billing.subscription.cancelled" in org.events(), "grace → Free", DEADLINE_SECONDS)

    assert org.subscription()["plan"] == "free"
    assert org.invoices() == []  # a cancelled trial is never charged
    assert org.events()[-1] == "billing.subscription.cancelled"
    stored = org.call("GET", f"/billing/subscriptions/{trial['id']}")
    assert stored["status"] == "cancelled"


def test_a_failing_card_is_dunned_until_uncollectible_and_the_org_is_on_free(stack: LocalStack) -> None:
    org = Org(stack)
    org.call(
        "POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": org.card(no_funds_card())}
    )

    eventually(
        lambda: "billing.subscription.cancelled" in org.events(),
        "trial → past_due → retries → Free",
        DEADLINE_SECONDS,
    )

    assert org.subscription()["plan"] == "free"
    [invoice] = org.invoices()
    assert (invoice["status"], invoice["retry_count"], invoice["next_retry_at"]) == ("uncollectible", 3, None)
    assert invoice["amount_due"] == PRO_WITH_PPN
    events = org.events()
    assert events.count("billing.invoice.payment_failed") == 3  # the trial's end and two retries
    assert "billing.invoice.overdue" in events
    assert events[-1] == "billing.subscription.cancelled"


def test_the_hourly_sweep_renews_a_subscription_whose_period_ended(stack: LocalStack) -> None:
    org = Org(stack)
    # This organization had its trial before: it is charged at once and active.
    dynamodb = stack.aws_client("dynamodb")
    dynamodb.put_item(
        TableName=stack.table_name(), Item={"PK": {"S": f"ORG#{org.id}"}, "SK": {"S": "TRIALLED"}}
    )
    active = org.call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": org.card()})
    assert active["status"] == "active"
    # A month went by (history the API cannot fake): its period ended a minute ago, and its renewal
    # index entry says so, as the store writes it.
    ended = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    dynamodb.update_item(
        TableName=stack.table_name(),
        Key={"PK": {"S": f"ORG#{org.id}"}, "SK": {"S": "SUBSCRIPTION"}},
        UpdateExpression="SET current_period_end = :end, GSI2PK = :bucket, GSI2SK = :sort",
        ExpressionAttributeValues={
            ":end": {"S": ended.isoformat().replace("+00:00", "Z")},
            ":bucket": {"S": f"RENEW#{ended.strftime('%Y-%m-%dT%H')}"},
            ":sort": {"S": f"{ended.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{org.id}"},
        },
    )

    fired = stack.request("POST", "/_local/rules/tagih-local-RenewalStateMachineHourlySweep/fire")
    assert fired.status_code in (200, 202), fired.text

    def renewal_settled() -> dict[str, Any] | None:
        # The renewal invoice is listed (a draft, then open) before its charge completes.
        cycles = [i for i in org.invoices() if i["billing_reason"] == "subscription_cycle"]
        return cycles[0] if cycles and cycles[0]["status"] not in ("draft", "open") else None

    cycle = eventually(renewal_settled, "the sweep renews it and its charge settles", DEADLINE_SECONDS)
    assert len(org.invoices()) == 2
    assert (cycle["status"], cycle["total"]) == ("paid", PRO_WITH_PPN)
    now_sub = org.subscription()
    assert (now_sub["status"], now_sub["current_period_start"]) == ("active", cycle["period_start"])
    renewed = eventually(
        lambda: (
            org.events()[-3:]
            == ["billing.invoice.created", "billing.invoice.paid", "billing.subscription.updated"]
        ),
        "the renewal published as docs/events.md lists it",
    )
    assert renewed
    assert org.events().count("billing.subscription.updated") == 1

    # The schedule fires again (the next hour): the sweep runs, finds nothing due, renews nothing.
    sweeps = stack.logs().count('"message":"due renewals"')
    fired = stack.request("POST", "/_local/rules/tagih-local-RenewalStateMachineHourlySweep/fire")
    assert fired.status_code in (200, 202), fired.text
    eventually(lambda: stack.logs().count('"message":"due renewals"') > sweeps, "a second sweep ran")
    assert "ExecutionAlreadyExists" not in stack.logs()
    assert len(org.invoices()) == 2
    assert org.events().count("billing.subscription.updated") == 1


def test_a_trial_end_killed_after_the_capture_is_finished_by_its_retry_with_one_charge(
    stack: LocalStack,
) -> None:
    org = Org(stack)
    # The timers function dies after Midtrans took the money and before the payment is recorded:
    # the state machine's retry runs the task again, which asks Midtrans under the same order_id.
    planned = stack.request(
        "POST",
        "/_local/faults",
        json={
            "function": "TimersFunction",
            "before_writing": {"sk_prefix": "PAYMENT#", "status": "succeeded"},
        },
    )
    assert planned.status_code == 202, planned.text
    trial = org.call("POST", "/billing/subscriptions", {"plan": "pro", "payment_method_id": org.card()})
    assert trial["status"] == "trialing"

    eventually(lambda: "billing.invoice.paid" in org.events(), "the retried trial end pays", DEADLINE_SECONDS)

    assert "local fault: killed" in stack.logs()
    [invoice] = org.invoices()
    assert (invoice["status"], invoice["amount_paid"]) == ("paid", PRO_WITH_PPN)
    assert org.subscription()["status"] == "active"
    order_id = f"{invoice['id']}-a1"
    charges = requests.get(
        f"{stack.health['midtrans_endpoint']}/_fake/charges", params={"order_id": order_id}, timeout=10
    ).json()["items"]
    assert [c["transaction_status"] for c in charges] == ["capture"]  # one capture, however often asked
    assert org.events().count("billing.invoice.paid") == 1
    stack.run_the_janitor()
    assert stack.in_flight(org.id) == []
