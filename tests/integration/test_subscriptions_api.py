"""Subscribing through the real handlers on moto, charging through the real Midtrans adapter at the
local Midtrans fake: Free by default, trials, a first charge paid at once or later by a virtual
account (settled by a signed notification through the gateway-notification handler), declines that
keep nothing, cancel and reactivate, and the events each step publishes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest

from local.midtrans_fake import MidtransFake
from tagih.clock import parse_rfc3339
from tests.conftest import BUS_NAME, TABLE_NAME
from tests.fakes.aws_calls import count_calls
from tests.fakes.billing_setup import (
    CARD_TOKEN,
    DECLINING,
    add_method,
    event_types,
    mark_trialled,
    set_card_token,
)
from tests.fakes.gateway_env import configure_gateways, event_queue
from tests.fakes.lambda_runtime import (
    Answer,
    FakeLambdaContext,
    call_api,
    http_event,
    load_function,
)
from tests.fakes.midtrans_server import NotificationInbox, running_midtrans_fake

ORG = "org_subs"
SUBS = "/billing/subscriptions"


@pytest.fixture
def inbox() -> Iterator[NotificationInbox]:
    with NotificationInbox() as receiver:
        yield receiver


@pytest.fixture
def midtrans(
    catalog: None, inbox: NotificationInbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MidtransFake]:
    with running_midtrans_fake(notification_url=inbox.url) as fake:
        configure_gateways(monkeypatch, midtrans=fake, timeout_seconds=2.0)
        yield fake


@pytest.fixture
def events(midtrans: MidtransFake) -> str:
    return event_queue(BUS_NAME)


def call(method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    kwargs.setdefault("org", ORG)
    return call_api(method, path, body=body, **kwargs)


def items(prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    return [i for i in found if i["PK"] == f"ORG#{ORG}" and str(i["SK"]).startswith(prefix)]


def test_an_organization_without_a_subscription_is_on_free(midtrans: MidtransFake) -> None:
    answer = call("GET", "/billing/subscription", role="member")

    assert answer.status == 200, answer.raw
    free = answer.body
    assert (free["id"], free["plan"], free["status"]) == (None, "free", "active")
    assert free["limits"]["members"] == 3
    assert free["features"]["basic"] is True


def test_subscribing_starts_a_fourteen_day_trial_on_the_cheapest_paid_plan(
    midtrans: MidtransFake, events: str
) -> None:
    answer = call("POST", SUBS, {})

    assert answer.status == 201, answer.raw
    trial = answer.body
    assert (trial["plan"], trial["status"], trial["billing_cycle"]) == ("pro", "trialing", "monthly")
    assert trial["id"].startswith("sub_")
    started, ends = parse_rfc3339(trial["current_period_start"]), parse_rfc3339(trial["trial_ends_at"])
    assert ends - started == timedelta(days=14)
    assert trial["current_period_end"] == trial["trial_ends_at"]
    assert call("GET", "/billing/subscription").body == trial
    assert call("GET", f"{SUBS}/{trial['id']}").body == trial
    assert items("INVOICE#") == []  # a trial charges nothing
    assert midtrans.charges == []
    assert event_types(events) == ["billing.subscription.created"]
    again = call("POST", SUBS, {"plan": "business"})
    assert again.status == 409, again.raw
    assert again.error_code == "already_subscribed"


def test_reading_a_subscribed_organization_s_subscription_is_one_read(midtrans: MidtransFake) -> None:
    trial = call("POST", SUBS, {}).body
    with count_calls() as calls:
        assert call("GET", "/billing/subscription").body == trial
    # Outside prod the kernel also reads the organization's test clock; the subscription is the
    # only other read (the Free plan is read only for an organization on Free).
    assert calls == {"GetItem": 2}


def test_without_a_trial_the_first_invoice_is_charged_and_paid_at_once(
    midtrans: MidtransFake, events: str
) -> None:
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})

    answer = call("POST", SUBS, {"plan": "pro", "payment_method_id": card})

    assert answer.status == 201, answer.raw
    active = answer.body
    assert (active["status"], active["payment_method_id"], active["payment_gateway"]) == (
        "active",
        card,
        "midtrans",
    )
    [invoice] = items("INVOICE#")
    assert invoice["number"].startswith("INV-") and invoice["number"].endswith("-0001")  # noqa: PT018
    assert (invoice["status"], invoice["subtotal"], invoice["tax"], invoice["total"]) == (
        "paid",
        299_000,
        32_890,
        331_890,
    )
    assert invoice["amount_paid"] == 331_890
    [charge] = [c for c in midtrans.charges if c["order_id"] == f"{invoice['id']}-a1"]
    assert (charge["gross_amount"], charge["initiated_by"]) == (331_890, "merchant")
    assert event_types(events)[-3:] == [
        "billing.subscription.created",
        "billing.invoice.created",
        "billing.invoice.paid",
    ]


def test_a_declined_first_charge_is_402_and_keeps_nothing(midtrans: MidtransFake) -> None:
    mark_trialled(ORG)
    # A card Midtrans saved, later declined by its bank on the charge.
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    set_card_token(ORG, card, DECLINING)

    answer = call("POST", SUBS, {"plan": "pro", "payment_method_id": card})

    assert answer.status == 402, answer.raw
    assert answer.error_code == "payment_failed"
    assert "Do not honour" in answer.body["error"]["details"][0]["reason"]
    assert items("SUBSCRIPTION") == []
    assert items("INVOICE#") == []
    assert call("GET", "/billing/subscription").body["plan"] == "free"


def test_a_virtual_account_subscription_is_incomplete_until_the_transfer_settles(
    midtrans: MidtransFake, inbox: NotificationInbox, events: str
) -> None:
    mark_trialled(ORG)
    bca = add_method(ORG, {"type": "bank_transfer", "bank": "bca"})

    answer = call("POST", SUBS, {"plan": "business", "payment_method_id": bca})

    assert answer.status == 201, answer.raw
    assert answer.body["status"] == "incomplete"
    [invoice] = items("INVOICE#")
    assert (invoice["status"], invoice["total"]) == ("open", 1_098_900)  # 990.000 + PPN 108.900
    assert invoice["gateway_invoice_id"] == f"{invoice['id']}-a1"

    midtrans.settle(f"{invoice['id']}-a1")
    notification = inbox.bodies[-1]
    delivered = load_function("gateway_webhooks").lambda_handler(
        http_event("POST", "/webhooks/midtrans", raw_body=notification.decode()), FakeLambdaContext()
    )

    assert json.loads(delivered["body"]) == {"received": True, "result": "settled"}
    [paid] = items("INVOICE#")
    assert (paid["status"], paid["amount_paid"]) == ("paid", 1_098_900)
    assert call("GET", "/billing/subscription").body["status"] == "active"
    assert event_types(events)[-2:] == ["billing.invoice.paid", "billing.subscription.updated"]


def test_cancel_enters_grace_and_reactivate_returns_to_the_trial(midtrans: MidtransFake, events: str) -> None:
    trial = call("POST", SUBS, {"plan": "pro"}).body

    cancelled = call("POST", f"{SUBS}/{trial['id']}/cancel")

    assert cancelled.status == 200, cancelled.raw
    assert (cancelled.body["status"], cancelled.body["cancel_at_period_end"]) == ("grace_period", True)
    assert cancelled.body["grace_period_ends_at"] >= cancelled.body["current_period_end"]
    again = call("POST", f"{SUBS}/{trial['id']}/cancel")
    assert again.status == 409, again.raw
    reactivated = call("POST", f"{SUBS}/{trial['id']}/reactivate")
    assert reactivated.status == 200, reactivated.raw
    assert (reactivated.body["status"], reactivated.body["grace_period_ends_at"]) == ("trialing", None)
    assert event_types(events)[-2:] == ["billing.subscription.updated", "billing.subscription.updated"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"plan": "enterprise"}, 409, "contact_sales"),
        ({"plan": "free"}, 422, "plan_not_subscribable"),
        ({"plan": "gold"}, 404, "plan_not_found"),
        ({"plan": "pro", "billing_cycle": "weekly"}, 422, "validation_error"),
        ({"plan": "pro", "status": "active"}, 422, "validation_error"),
        ({"plan": "pro", "payment_method_id": "pm_someone_elses"}, 404, "payment_method_not_found"),
    ],
)
def test_refusals(midtrans: MidtransFake, body: dict[str, Any], status: int, code: str) -> None:
    answer = call("POST", SUBS, body)

    assert answer.status == status, answer.raw
    assert answer.error_code == code
    assert items("SUBSCRIPTION") == []


def test_members_read_but_may_not_subscribe(midtrans: MidtransFake) -> None:
    assert call("POST", SUBS, {}, role="member").status == 403
    assert call("GET", "/billing/subscription", role="member").status == 200


def test_another_organizations_subscription_is_not_found(midtrans: MidtransFake) -> None:
    theirs = call("POST", SUBS, {}, org="org_other").body

    for answer in (call("GET", f"{SUBS}/{theirs['id']}"), call("POST", f"{SUBS}/{theirs['id']}/cancel")):
        assert answer.status == 404, answer.raw
        assert answer.error_code == "subscription_not_found"
