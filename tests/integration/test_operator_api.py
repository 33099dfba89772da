"""Operator routes through the real operator handler on moto: the ``billing:operator`` scope, Enterprise
custom terms invoiced on payment terms (never charged), and suspension (reads allowed, writes refused)
until lifted. The organization acted on is the path's, never the caller's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from local.midtrans_fake import MidtransFake
from tagih import clock
from tagih.clock import parse_rfc3339
from tests.conftest import BUS_NAME, TABLE_NAME
from tests.fakes.billing_setup import CARD_TOKEN, add_method, mark_trialled
from tests.fakes.gateway_env import event_queue, received_events
from tests.fakes.lambda_runtime import (
    Answer,
    FakeLambdaContext,
    PinnedClock,
    call_api,
    http_event,
    load_function,
)

TARGET = "org_customer"
OPERATORS_ORG = "org_ops"
SUBS = "/billing/subscriptions"
NOW = datetime(2026, 6, 10, 9, 15, 0, tzinfo=UTC)
LIMITS = {
    "members": 500,
    "applications": None,
    "storage_bytes": None,
    "api_calls": 50_000_000,
    "webhooks": 200,
}
FEATURES = {
    "basic": True,
    "mfa": True,
    "webhooks": True,
    "sso": True,
    "scim": True,
    "audit_streaming": True,
    "sla": True,
    "dedicated_support": True,
}
ENTERPRISE = {
    "price_monthly": 25_000_000,
    "currency": "idr",
    "billing_cycle": "monthly",
    "limits": LIMITS,
    "features": FEATURES,
    "payment_terms_days": 45,
}


@pytest.fixture
def frozen() -> Iterator[PinnedClock]:
    pinned = PinnedClock(NOW)
    clock.use_wall_clock(pinned)
    yield pinned
    clock.use_wall_clock(None)


def operate(
    action: str,
    org_id: str = TARGET,
    body: Any = None,
    *,
    scopes: str = "billing:operator",
    caller_org: str = OPERATORS_ORG,
    role: str = "",
) -> Answer:
    """Call the operator function as API Gateway would after the authorizer: an operator's JWT
    (the scope, no membership of the target) unless told otherwise."""
    route = f"/billing/operator/organizations/{{org_id}}/{action}"
    event = http_event(
        "POST",
        f"/billing/operator/organizations/{org_id}/{action}",
        route=route,
        body=body,
        path_parameters={"org_id": org_id},
        authorizer={
            "organization_id": caller_org,
            "role": role,
            "subject": "operator_1",
            "scopes": scopes,
            "method": "jwt",
        },
    )
    return Answer(load_function("operator").lambda_handler(event, FakeLambdaContext()))


def customer(method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    """The target organization's own owner (or ``role``) on the customer routes."""
    kwargs.setdefault("org", TARGET)
    return call_api(method, path, body=body, **kwargs)


def items(org: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    return [i for i in found if i["PK"] == f"ORG#{org}" and str(i["SK"]).startswith(prefix)]


def half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def test_operator_routes_need_the_operator_scope(midtrans: MidtransFake) -> None:
    # The organization's own owner, without the scope.
    for action, body in (("enterprise", ENTERPRISE), ("suspend", {"reason": "abuse"}), ("unsuspend", None)):
        answer = operate(action, body=body, scopes="", caller_org=TARGET, role="owner")

        assert answer.status == 403, answer.raw
        assert answer.error_code == "forbidden"
    assert items(TARGET, "") == []


def test_enterprise_activation_puts_custom_terms_in_force_with_an_open_invoice_on_payment_terms(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    events = event_queue(BUS_NAME)

    answer = operate("enterprise", body=ENTERPRISE)

    assert answer.status == 200, answer.raw
    subscription, invoice = answer.body["subscription"], answer.body["invoice"]
    assert (subscription["organization_id"], subscription["plan"], subscription["status"]) == (
        TARGET,
        "enterprise",
        "active",
    )
    assert (subscription["limits"], subscription["features"]) == (LIMITS, FEATURES)
    assert parse_rfc3339(subscription["current_period_start"]) == NOW
    assert parse_rfc3339(subscription["current_period_end"]) == datetime(2026, 7, 10, 9, 15, tzinfo=UTC)
    tax = half_up(25_000_000 * 1_100, 10_000)
    assert (invoice["status"], invoice["subtotal"], invoice["tax"], invoice["total"]) == (
        "open",
        25_000_000,
        tax,
        25_000_000 + tax,
    )
    assert invoice["number"].endswith("-0001")
    assert invoice["currency"] == "IDR"
    assert parse_rfc3339(invoice["due_date"]) == NOW + timedelta(days=45)
    assert (invoice["amount_due"], invoice["payment_url"]) == (25_000_000 + tax, None)
    assert midtrans.charges == []  # Enterprise pays by invoice
    # The customer sees it; the operator's own organization got nothing.
    assert customer("GET", "/billing/subscription", role="member").body == subscription
    assert items(OPERATORS_ORG, "SUBSCRIPTION") == []
    assert [e["detail-type"] for e in received_events(events)] == [
        "billing.subscription.created",
        "billing.invoice.created",
    ]


def test_enterprise_converts_a_live_subscription_crediting_its_unused_time(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    mark_trialled(TARGET)
    card = add_method(TARGET, {"type": "credit_card", "token": CARD_TOKEN})
    pro = customer("POST", SUBS, {"plan": "pro", "payment_method_id": card}).body
    assert pro["status"] == "active"
    frozen.at = NOW + timedelta(days=12, seconds=37)

    answer = operate("enterprise", body=ENTERPRISE)

    assert answer.status == 200, answer.raw
    subscription, invoice = answer.body["subscription"], answer.body["invoice"]
    assert (subscription["id"], subscription["plan"]) == (pro["id"], "enterprise")
    start, end = parse_rfc3339(pro["current_period_start"]), parse_rfc3339(pro["current_period_end"])
    credit = -half_up(299_000 * int((end - frozen.at).total_seconds()), int((end - start).total_seconds()))
    assert [line["amount"] for line in invoice["lines"]] == [credit, 25_000_000]
    assert invoice["billing_reason"] == "subscription_update"
    assert invoice["subtotal"] == 25_000_000 + credit
    assert invoice["status"] == "open"


def test_suspension_allows_reads_refuses_writes_and_unsuspend_restores(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    trial = customer("POST", SUBS, {"plan": "pro"}).body

    suspended = operate("suspend", body={"reason": "chargeback under review"})

    assert suspended.status == 200, suspended.raw
    assert (suspended.body["id"], suspended.body["status"]) == (trial["id"], "suspended")
    read = customer("GET", "/billing/subscription", role="member")
    assert read.status == 200, read.raw
    assert read.body["status"] == "suspended"
    for method, path, body in (
        ("POST", f"{SUBS}/{trial['id']}/cancel", None),
        ("POST", f"{SUBS}/{trial['id']}/change", {"plan": "business"}),
    ):
        refused = customer(method, path, body)
        assert refused.status == 403, refused.raw
        assert refused.error_code == "organization_suspended"
    again = operate("suspend", body={"reason": "twice"})
    assert again.status == 409, again.raw
    assert again.error_code == "already_suspended"

    restored = operate("unsuspend")

    assert restored.status == 200, restored.raw
    assert (restored.body["status"], restored.body["plan"]) == ("trialing", "pro")
    assert customer("POST", f"{SUBS}/{trial['id']}/cancel").status == 200
    not_suspended = operate("unsuspend")
    assert not_suspended.status == 409, not_suspended.raw
    assert not_suspended.error_code == "not_suspended"


def test_an_organization_on_free_is_suspended_too_and_returns_to_free(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    suspended = operate("suspend", body={"reason": "abuse"})

    assert suspended.status == 200, suspended.raw
    assert (suspended.body["plan"], suspended.body["status"]) == ("free", "suspended")
    assert customer("GET", "/billing/subscription").body["status"] == "suspended"
    refused = customer("POST", SUBS, {"plan": "pro"})
    assert refused.status == 403, refused.raw
    assert refused.error_code == "organization_suspended"

    restored = operate("unsuspend")

    assert restored.status == 200, restored.raw
    assert (restored.body["id"], restored.body["plan"], restored.body["status"]) == (None, "free", "active")
    assert items(TARGET, "SUBSCRIPTION") == []
    assert customer("POST", SUBS, {"plan": "pro"}).status == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ENTERPRISE, "status": "active"}, "status"),
        ({**ENTERPRISE, "currency": "jpy"}, "currency"),
        ({**ENTERPRISE, "price_monthly": -1}, "price_monthly"),
        ({**ENTERPRISE, "limits": {"members": 5}}, "limits.applications"),
        # Schemathesis found `false` taken as a price of 0 (pydantic's lax int).
        ({**ENTERPRISE, "price_monthly": False}, "price_monthly"),
        ({**ENTERPRISE, "price_monthly": "5000000"}, "price_monthly"),
        ({**ENTERPRISE, "payment_terms_days": True}, "payment_terms_days"),
        ({**ENTERPRISE, "limits": {**LIMITS, "webhooks": False}}, "limits.webhooks"),
        ({**ENTERPRISE, "features": {**FEATURES, "webhooks": 0}}, "features.webhooks"),
    ],
)
def test_enterprise_terms_are_validated(midtrans: MidtransFake, body: dict[str, Any], field: str) -> None:
    answer = operate("enterprise", body=body)

    assert answer.status == 422, answer.raw
    assert answer.error_code == "validation_error"
    assert field in answer.fields
    assert items(TARGET, "") == []


@pytest.mark.parametrize("org_id", ["null%2Cnull", "org%201", "caf%C3%A9"])
def test_an_organization_id_outside_its_alphabet_is_refused_and_nothing_is_written(
    midtrans: MidtransFake, org_id: str
) -> None:
    """Schemathesis found it: Powertools reads the raw path, so ``null%2Cnull`` reached the service
    as an organization id and got an Enterprise subscription (and could be suspended)."""
    for action, body in (("enterprise", ENTERPRISE), ("suspend", {"reason": "abuse"}), ("unsuspend", None)):
        answer = operate(action, org_id, body=body)

        assert answer.status == 422, answer.raw
        assert "path.org_id" in answer.fields
    found: list[dict[str, Any]] = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    assert [item["PK"] for item in found if str(item["PK"]).startswith("ORG#")] == []
