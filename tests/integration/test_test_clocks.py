"""Test clocks through the real handlers on moto, charging through the real Midtrans adapter at the
local Midtrans fake: attached before the first subscription only, every request of the organization
runs at its frozen time (and only that organization's), advancing it runs the trial end and the
renewal at their own moments, and prod refuses it all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from local.midtrans_fake import MidtransFake
from tagih.clock import parse_rfc3339, to_rfc3339
from tagih.store.table import reset_clients
from tests.conftest import TABLE_NAME
from tests.fakes.billing_setup import CARD_TOKEN, add_method
from tests.fakes.lambda_runtime import Answer, call_api

ORG = "org_clock"
OTHER = "org_wall_time"
CLOCK = "/billing/test-clock"
ADVANCE = "/billing/test-clock/advance"
SUBS = "/billing/subscriptions"
FROZEN = datetime(2027, 1, 1, tzinfo=UTC)
TRIAL_ENDS = FROZEN + timedelta(days=14)
FIRST_PERIOD_ENDS = datetime(2027, 2, 15, tzinfo=UTC)


def call(method: str, path: str, body: Any = None, org: str = ORG, role: str = "owner") -> Answer:
    return call_api(method, path, body=body, org=org, role=role)


def attach(at: datetime = FROZEN, org: str = ORG) -> Answer:
    return call("POST", CLOCK, {"frozen_time": to_rfc3339(at)}, org=org)


def add_card(org: str = ORG) -> str:
    return add_method(org, {"type": "credit_card", "token": CARD_TOKEN})


def invoices(org: str = ORG) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    rows = [i for i in found if i["PK"] == f"ORG#{org}" and str(i["SK"]).startswith("INVOICE#")]
    return sorted(rows, key=lambda i: str(i["created_at"]))


def test_a_clock_is_attached_before_the_first_subscription_and_read_back(midtrans: MidtransFake) -> None:
    created = attach()

    assert created.status == 201, created.raw
    assert created.body["frozen_time"] == to_rfc3339(FROZEN)
    read = call("GET", CLOCK, role="member")
    assert read.status == 200, read.raw
    assert read.body == created.body
    again = attach(FROZEN + timedelta(days=1))
    assert again.status == 409, again.raw
    assert again.error_code == "test_clock_exists"


def test_attaching_after_subscribing_is_too_late(midtrans: MidtransFake) -> None:
    assert call("POST", SUBS, {}).status == 201

    late = attach()

    assert late.status == 409, late.raw
    assert late.error_code == "test_clock_too_late"
    missing = call("GET", CLOCK)
    assert missing.status == 404, missing.raw
    assert missing.error_code == "test_clock_not_found"


def test_advancing_ends_the_trial_then_renews_at_their_own_moments(midtrans: MidtransFake) -> None:
    assert attach().status == 201
    card = add_card()
    trial = call("POST", SUBS, {"plan": "pro", "payment_method_id": card})
    assert trial.status == 201, trial.raw
    assert trial.body["status"] == "trialing"
    assert parse_rfc3339(trial.body["current_period_start"]) == FROZEN
    assert parse_rfc3339(trial.body["trial_ends_at"]) == TRIAL_ENDS

    advanced = call("POST", ADVANCE, {"to": to_rfc3339(TRIAL_ENDS)})

    assert advanced.status == 200, advanced.raw
    assert advanced.body["frozen_time"] == to_rfc3339(TRIAL_ENDS)
    [first] = invoices()
    assert [(p["action"], p["at"], p["object_id"]) for p in advanced.body["processed"]] == [
        ("trial_will_end", to_rfc3339(TRIAL_ENDS - timedelta(days=3)), trial.body["id"]),
        ("end_trial", to_rfc3339(TRIAL_ENDS), first["id"]),
    ]
    assert (first["status"], first["billing_reason"], first["total"]) == (
        "paid",
        "subscription_create",
        331_890,
    )
    assert parse_rfc3339(str(first["created_at"])) == TRIAL_ENDS  # dated at the frozen time
    assert parse_rfc3339(str(first["period_start"])) == TRIAL_ENDS
    active = call("GET", "/billing/subscription", role="member")
    assert active.body["status"] == "active"
    assert parse_rfc3339(active.body["current_period_start"]) == TRIAL_ENDS
    assert parse_rfc3339(active.body["current_period_end"]) == FIRST_PERIOD_ENDS

    renewed = call("POST", ADVANCE, {"to": to_rfc3339(FIRST_PERIOD_ENDS + timedelta(days=1))})

    assert renewed.status == 200, renewed.raw
    [renewal] = renewed.body["processed"]
    assert (renewal["action"], renewal["at"]) == ("renew", to_rfc3339(FIRST_PERIOD_ENDS))
    second = invoices()[-1]
    assert (renewal["object_id"], second["status"], second["billing_reason"]) == (
        second["id"],
        "paid",
        "subscription_cycle",
    )
    assert parse_rfc3339(str(second["created_at"])) == FIRST_PERIOD_ENDS
    assert parse_rfc3339(str(second["period_start"])) == FIRST_PERIOD_ENDS
    after = call("GET", "/billing/subscription").body
    assert (after["status"], parse_rfc3339(after["current_period_start"])) == ("active", FIRST_PERIOD_ENDS)
    assert call("GET", CLOCK).body["frozen_time"] == to_rfc3339(FIRST_PERIOD_ENDS + timedelta(days=1))


def test_advance_must_move_forward_and_not_too_far(midtrans: MidtransFake) -> None:
    assert attach().status == 201

    for to in (FROZEN, FROZEN - timedelta(days=1), FROZEN + timedelta(days=800)):
        answer = call("POST", ADVANCE, {"to": to_rfc3339(to)})
        assert answer.status == 422, answer.raw
        assert answer.error_code == "validation_error"
        assert answer.fields == {"to"}
    assert call("GET", CLOCK).body["frozen_time"] == to_rfc3339(FROZEN)
    without = call("POST", ADVANCE, {"to": to_rfc3339(FROZEN)}, org=OTHER)
    assert without.status == 404, without.raw
    assert without.error_code == "test_clock_not_found"


def test_another_organization_keeps_wall_time(midtrans: MidtransFake) -> None:
    assert attach().status == 201
    before = datetime.now(UTC).replace(microsecond=0)

    trial = call("POST", SUBS, {"plan": "pro"}, org=OTHER)

    assert trial.status == 201, trial.raw
    started = parse_rfc3339(trial.body["current_period_start"])
    assert before <= started <= datetime.now(UTC)
    frozen = call("POST", SUBS, {"plan": "pro"})
    assert parse_rfc3339(frozen.body["current_period_start"]) == FROZEN


def test_prod_refuses_every_route(midtrans: MidtransFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "prod")
    reset_clients()  # settings are read again

    for method, path, body in (
        ("POST", CLOCK, {"frozen_time": to_rfc3339(FROZEN)}),
        ("GET", CLOCK, None),
        ("POST", ADVANCE, {"to": to_rfc3339(FROZEN)}),
    ):
        answer = call(method, path, body)
        assert answer.status == 404, answer.raw
        assert answer.error_code == "route_not_found"
    items = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    assert not [i for i in items if i["SK"] == "TESTCLOCK"]


def test_prod_ignores_a_stored_clock(midtrans: MidtransFake, monkeypatch: pytest.MonkeyPatch) -> None:
    assert attach().status == 201
    monkeypatch.setenv("STAGE", "prod")
    reset_clients()
    before = datetime.now(UTC).replace(microsecond=0)

    trial = call("POST", SUBS, {"plan": "pro"})

    assert trial.status == 201, trial.raw
    assert parse_rfc3339(trial.body["current_period_start"]) >= before
