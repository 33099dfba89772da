"""Bodies no client should send, on every route that takes one: 400 ``malformed_json`` in API.md's
error format and nothing written, never a 500 (issue 16: invalid UTF-8 and 1,000-deep JSON used to
raise ``UnicodeDecodeError`` and ``RecursionError``, on the unauthenticated gateway routes too)."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from tests.conftest import TABLE_NAME
from tests.fakes.lambda_runtime import Answer, FakeLambdaContext, http_event, load_function, principal
from tools.functions import load_functions

WRITE_ROUTES = [
    pytest.param(function.folder, route, id=f"{route.method} {route.path}")
    for function in load_functions()
    for route in function.routes
    if route.method in ("POST", "PUT", "PATCH")
]

INVALID_UTF8 = b'{"name": "\xff"}'
DEEP = ("[" * 1_000 + "]" * 1_000).encode()
DEEP_IN_A_FIELD = b'{"name": ' + b'{"a": ' * 1_000 + b"1" + b"}" * 1_000 + b"}"


def _items() -> list[dict[str, Any]]:
    return boto3.client("dynamodb").scan(TableName=TABLE_NAME)["Items"]


def _call(group: str, route: Any, raw: bytes) -> Answer:
    path = route.path.replace("{", "").replace("}", "")  # each parameter's value is its own name
    parameters = {
        part[1:-1]: value
        for part, value in zip(route.path.split("/"), path.split("/"), strict=True)
        if part.startswith("{")
    }
    event = http_event(
        route.method,
        path,
        route=route.path,
        raw_body="",
        path_parameters=parameters or None,
        authorizer=principal(scopes="billing:operator") if route.authorized else None,
        headers={"idempotency-key": "hostile-1"} if route.method == "POST" else None,
    )
    # API Gateway base64-encodes a body it does not take for text, as it does these.
    event["body"] = base64.b64encode(raw).decode()
    event["isBase64Encoded"] = True
    return Answer(load_function(group).lambda_handler(event, FakeLambdaContext()))


@pytest.mark.parametrize("raw", [INVALID_UTF8, DEEP, DEEP_IN_A_FIELD], ids=["utf8", "deep", "deep-field"])
@pytest.mark.parametrize(("group", "route"), WRITE_ROUTES)
def test_an_undecodable_or_too_deep_body_is_400_and_changes_nothing(
    catalog: None, group: str, route: Any, raw: bytes
) -> None:
    before = _items()

    answer = _call(group, route, raw)

    assert answer.status == 400, answer.raw
    assert answer.error_code == "malformed_json"
    assert answer.body["error"]["request_id"]
    assert _items() == before


def test_a_deep_body_that_is_plain_text_is_refused_as_well(catalog: None) -> None:
    event = http_event(
        "POST", "/billing/accounts", raw_body=DEEP.decode(), authorizer=principal(), route="/billing/accounts"
    )

    answer = Answer(load_function("accounts").lambda_handler(event, FakeLambdaContext()))

    assert (answer.status, answer.error_code) == (400, "malformed_json")
    assert "nests deeper than 32" in answer.body["error"]["message"]


def test_json_with_brackets_inside_its_strings_is_not_counted_as_deep(catalog: None) -> None:
    name = "[" * 50 + '{"' * 20
    event = http_event(
        "POST",
        "/billing/accounts",
        body={"name": name, "email": "finance@example.co.id"},
        authorizer=principal(),
        route="/billing/accounts",
    )

    answer = Answer(load_function("accounts").lambda_handler(event, FakeLambdaContext()))

    assert answer.status == 201, answer.raw
    assert answer.body["name"] == name
    assert json.loads(answer.raw)["email"] == "finance@example.co.id"


# -- characters no name should carry (issue 16, item 3) ----------------------------------------------
UNSAFE_TEXT = {
    "NUL": "PT Maju\x00 Jaya",
    "right-to-left override": "PT Maju \u202egpj.exe",
    "first-strong isolate": "PT \u2068Maju",
    "escape": "PT \x1b[31mMaju",
    "lone surrogate": "PT Maju \ud800",
    "newline in a name": "PT Maju\nJaya",
}


def _post_json(group: str, path: str, body: Any) -> Answer:
    event = http_event("POST", path, route=path, body=body, authorizer=principal())
    return Answer(load_function(group).lambda_handler(event, FakeLambdaContext()))


@pytest.mark.parametrize("text", UNSAFE_TEXT.values(), ids=UNSAFE_TEXT.keys())
@pytest.mark.parametrize(
    "case",
    [
        ("accounts", "/billing/accounts", {"name": "{}", "email": "ar@example.co.id"}, "name"),
        (
            "accounts",
            "/billing/accounts",
            {
                "name": "PT Maju",
                "email": "ar@example.co.id",
                "address": {"country": "ID", "line1": "{}", "city": "Jakarta", "postal_code": "10110"},
            },
            "address.line1",
        ),
        (
            "payment_methods",
            "/billing/payment-methods",
            {"type": "bank_transfer", "bank": "bca", "label": "{}"},
            "label",
        ),
        (
            "webhooks",
            "/billing/webhooks",
            {"url": "https://example.com/hooks", "events": ["*"], "description": "{}"},
            "description",
        ),
        (
            "usage",
            "/billing/usage/events",
            {"events": [{"id": "e1", "metric": "{}", "quantity": 1}]},
            "events.0.metric",
        ),
    ],
    ids=["account-name", "address-line", "method-label", "webhook-description", "usage-metric"],
)
def test_control_and_bidi_characters_are_422_naming_the_field(
    catalog: None, case: tuple[str, str, dict[str, Any], str], text: str
) -> None:
    group, path, body, field = case
    sent = json.loads(json.dumps(body).replace("{}", json.dumps(text)[1:-1]))
    before = _items()

    answer = _post_json(group, path, sent)

    if field == "description" and "\n" in text:  # free text may span lines; nothing else gets in
        assert answer.status != 422 or field not in answer.fields, answer.raw
        return
    assert answer.status == 422, answer.raw
    assert answer.error_code == "validation_error"
    assert field in answer.fields
    assert _items() == before


def test_a_description_may_span_lines_and_keeps_its_tabs(catalog: None) -> None:
    answer = _post_json(
        "accounts",
        "/billing/accounts",
        {"name": "PT Maju", "email": "ar@example.co.id", "description": "Divisi:\tKeuangan\nLantai 3"},
    )

    assert answer.status == 201, answer.raw
    assert answer.body["description"] == "Divisi:\tKeuangan\nLantai 3"


def test_names_in_other_scripts_and_with_emoji_are_kept(catalog: None) -> None:
    name = "شركة ميزان — PT Maju 株式会社 ✅"
    answer = _post_json("accounts", "/billing/accounts", {"name": name, "email": "ar@example.co.id"})

    assert answer.status == 201, answer.raw
    assert answer.body["name"] == name
