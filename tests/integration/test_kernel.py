"""The API kernel every function shares: API.md's error format, validation, auth pre-flight."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.conftest import TABLE_NAME
from tests.fakes.lambda_runtime import FakeLambdaContext, http_event, principal
from tests.integration import kernel_app
from tests.integration.kernel_app import app


def call(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    result = app.resolve(event, FakeLambdaContext())
    body = json.loads(result["body"]) if result.get("body") else {}
    return result["statusCode"], body, result.get("headers") or {}


def assert_error(body: dict[str, Any], code: str) -> dict[str, Any]:
    error = body["error"]
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], list)
    assert error["request_id"].startswith("req-")
    return error  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _fresh(aws: None) -> None:
    kernel_app.calls.clear()


def test_authenticated_read_sees_its_organization() -> None:
    status, body, _ = call(http_event("GET", "/billing/things", authorizer=principal("org_7", "member")))
    assert status == 200
    assert body == {"organization_id": "org_7", "role": "member"}


@pytest.mark.parametrize(
    ("authorizer", "status", "code"),
    [
        (None, 401, "unauthenticated"),
        ({}, 401, "unauthenticated"),
        ({"auth_error": "unauthenticated", "auth_message": "The token has expired."}, 401, "unauthenticated"),
        ({"auth_error": "forbidden", "auth_message": "Not a member of org_2."}, 403, "forbidden"),
    ],
)
def test_no_principal_is_refused_before_validation(
    authorizer: dict[str, Any] | None, status: int, code: str
) -> None:
    # An invalid body must not matter: the caller is refused first and learns nothing about the route.
    event = http_event("POST", "/billing/things", raw_body="{not json", authorizer=authorizer)
    got, body, _ = call(event)
    assert (got, assert_error(body, code)["code"]) == (status, code)
    assert kernel_app.calls == []


def test_member_may_read_but_not_write() -> None:
    status, body, _ = call(
        http_event("POST", "/billing/things", body={"name": "a"}, authorizer=principal(role="member"))
    )
    assert status == 403
    assert_error(body, "forbidden")
    assert kernel_app.calls == []


def test_route_policy_requires_owner_or_scope() -> None:
    admin = principal(role="admin")
    assert call(http_event("POST", "/billing/owner-only", authorizer=admin))[0] == 403
    assert call(http_event("POST", "/billing/owner-only", authorizer=principal(role="owner")))[0] == 200
    assert call(http_event("POST", "/billing/ops", authorizer=principal(role="owner")))[0] == 403
    operator = {**principal(role=""), "scopes": "billing:operator"}
    assert call(http_event("POST", "/billing/ops", authorizer=operator))[0] == 200


def test_malformed_json_is_400() -> None:
    status, body, _ = call(
        http_event("POST", "/billing/things", raw_body='{"name": ', authorizer=principal())
    )
    assert status == 400
    assert_error(body, "malformed_json")


def test_unknown_and_out_of_range_fields_are_named() -> None:
    event = http_event(
        "POST", "/billing/things", body={"name": "a", "quantity": 9, "status": "paid"}, authorizer=principal()
    )
    status, body, _ = call(event)
    assert status == 422
    details = assert_error(body, "validation_error")["details"]
    by_field = {d["field"]: d for d in details}
    assert by_field["status"]["message"] == "Unknown field."
    assert by_field["quantity"]["type"] == "less_than_equal"
    assert kernel_app.calls == []


def test_domain_error_uses_its_code_and_status() -> None:
    status, body, _ = call(http_event("GET", "/billing/missing", authorizer=principal()))
    assert status == 404
    assert assert_error(body, "plan_not_found")["message"] == "No plan with slug 'gold'."


def test_unexpected_error_is_500_without_internals() -> None:
    status, body, _ = call(http_event("GET", "/billing/boom", authorizer=principal()))
    assert status == 500
    assert_error(body, "internal_error")
    assert "/var/task" not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)


def test_unknown_route_is_404_in_api_format() -> None:
    status, body, _ = call(http_event("GET", "/billing/nowhere", authorizer=principal()))
    assert status == 404
    assert_error(body, "route_not_found")


def test_oversized_body_is_413() -> None:
    event = http_event(
        "POST", "/billing/things", raw_body='{"name": "' + "x" * 2_000_000 + '"}', authorizer=principal()
    )
    status, body, _ = call(event)
    assert status == 413
    assert_error(body, "payload_too_large")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_json_body_is_read_as_json_whatever_its_label(content_type: str | None) -> None:
    # curl -d sends application/x-www-form-urlencoded unless told otherwise.
    headers = {"content-type": content_type} if content_type else {}
    event = http_event(
        "POST", "/billing/things", raw_body='{"name": "curl"}', headers=headers, authorizer=principal()
    )
    if content_type is None:
        event["headers"].pop("content-type", None)

    status, body, _ = call(event)

    assert status == 201, body
    assert body["name"] == "curl"


def test_a_form_body_is_malformed_json() -> None:
    event = http_event(
        "POST",
        "/billing/things",
        raw_body="name=curl&quantity=2",
        headers={"content-type": "application/x-www-form-urlencoded"},
        authorizer=principal(),
    )

    status, body, _ = call(event)

    assert status == 400
    assert_error(body, "malformed_json")
    assert kernel_app.calls == []


def test_a_suspended_organization_reads_but_writes_nothing() -> None:
    boto3.resource("dynamodb").Table(TABLE_NAME).put_item(
        Item={"PK": "ORG#org_1", "SK": "SUBSCRIPTION", "status": "suspended", "plan": "pro"}
    )

    read, _, _ = call(http_event("GET", "/billing/things", authorizer=principal()))
    status, body, _ = call(http_event("POST", "/billing/things", body={"name": "x"}, authorizer=principal()))

    assert read == 200
    assert status == 403
    assert_error(body, "organization_suspended")
    assert kernel_app.calls == []
    # Operator routes (a scope, not a role) are how the organization is unsuspended.
    ops, _, _ = call(http_event("POST", "/billing/ops", authorizer=principal(scopes="billing:operator")))
    assert ops == 200
