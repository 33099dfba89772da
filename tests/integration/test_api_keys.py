"""Organization API keys end to end: owners create, list and revoke them; a key authenticates
through the real authorizer until it is revoked; the table never holds the key itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER, jwks, mint_token
from tests.conftest import TABLE_NAME
from tests.fakes.aws_calls import count_calls
from tests.fakes.key_source import authorizer_event, serve_jwks
from tests.fakes.lambda_runtime import Answer, FakeLambdaContext, http_event, load_function

ORG = "org_1"
OTHER_ORG = "org_2"
KEYS = "/billing/api-keys"


def handler(group: str) -> Any:
    # Loaded on first use, once the aws fixture has set Lambda's environment.
    return load_function(group).lambda_handler


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    with serve_jwks(jwks()) as url:
        yield url


@pytest.fixture(autouse=True)
def identity_provider(aws: None, catalog: None, jwks_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWKS_URL", jwks_url)
    monkeypatch.setenv("JWT_ISSUER", LOCAL_ISSUER)
    monkeypatch.setenv("JWT_AUDIENCE", LOCAL_AUDIENCE)


def call(
    credential: str,
    method: str,
    path: str,
    *,
    organization: str = ORG,
    body: Any = None,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
    route: str | None = None,
    path_parameters: dict[str, str] | None = None,
) -> Answer:
    """The real authorizer, then the real function, as API Gateway chains them."""
    request_headers = {
        "Authorization": f"Bearer {credential}",
        "X-Organization-ID": organization,
        **(headers or {}),
    }
    answer = handler("authorizer")(
        authorizer_event(request_headers, method=method, path=path), FakeLambdaContext()
    )
    event = http_event(
        method,
        path,
        route=route,
        body=body,
        raw_body=raw_body,
        headers=request_headers,
        path_parameters=path_parameters,
        authorizer=answer["context"],
    )
    group = "catalog" if path == "/billing/plans" else "api_keys"
    return Answer(handler(group)(event, FakeLambdaContext()))


def owner(organization: str = ORG) -> str:
    return mint_token(org_roles=[f"{organization}:owner"], subject=f"owner_of_{organization}")


def create(credential: str, body: Any, **kwargs: Any) -> Answer:
    return call(credential, "POST", KEYS, body=body, **kwargs)


def revoke(credential: str, key_id: str, organization: str = ORG) -> Answer:
    return call(
        credential,
        "DELETE",
        f"{KEYS}/{key_id}",
        organization=organization,
        route=f"{KEYS}/{{key_id}}",
        path_parameters={"key_id": key_id},
    )


def all_items() -> list[dict[str, Any]]:
    # A Scan is fine in a test: it reads what a thief of the table would read.
    return boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]


def test_owner_creates_a_key_that_is_shown_once_and_authenticates() -> None:
    created = create(owner(), {"name": "CI deploys"})
    assert created.status == 201, created.raw
    key = created.body
    assert set(key) == {"id", "name", "role", "prefix", "last4", "key", "created_at"}
    assert key["id"].startswith("key_")
    assert (key["name"], key["role"]) == ("CI deploys", "admin")
    assert key["key"].startswith("tk_test_")  # not the prod stage
    assert key["key"].startswith(key["prefix"])
    assert key["key"].endswith(key["last4"])
    assert key["created_at"].endswith("Z")

    listed = call(owner(), "GET", KEYS)
    assert listed.status == 200
    assert listed.body["total"] == 1
    assert listed.body["items"] == [{k: v for k, v in key.items() if k != "key"}]
    assert key["key"] not in listed.raw

    plans = call(key["key"], "GET", "/billing/plans")
    assert plans.status == 200
    assert plans.body["total"] == 4


def test_key_acts_with_its_role_and_its_id_as_subject() -> None:
    key = create(owner(), {"name": "reporting", "role": "member"}).body
    answer = handler("authorizer")(
        authorizer_event({"Authorization": f"Bearer {key['key']}", "X-Organization-ID": ORG}),
        FakeLambdaContext(),
    )
    assert answer["context"] == {
        "organization_id": ORG,
        "role": "member",
        "subject": key["id"],
        "scopes": "",
        "method": "api_key",
    }


def test_a_key_cannot_manage_keys() -> None:
    # Keys are admin at most, and key management is for owners: a leaked key cannot mint more.
    key = create(owner(), {"name": "ci"}).body["key"]
    assert create(key, {"name": "another"}).status == 403
    assert call(key, "GET", KEYS).status == 403


def test_key_of_another_organization_is_forbidden() -> None:
    key = create(owner(), {"name": "ci"}).body["key"]
    refused = call(key, "GET", "/billing/plans", organization=OTHER_ORG)
    assert refused.status == 403
    assert refused.error_code == "forbidden"


def test_revoked_key_is_refused_at_once() -> None:
    key = create(owner(), {"name": "ci"}).body
    assert call(key["key"], "GET", "/billing/plans").status == 200

    revoked = revoke(owner(), key["id"])
    assert revoked.status == 200, revoked.raw
    assert revoked.body == {"id": key["id"], "deleted": True}

    refused = call(key["key"], "GET", "/billing/plans")
    assert refused.status == 401
    assert refused.error_code == "unauthenticated"
    assert refused.body["error"]["message"] == "The API key is unknown or revoked."
    assert call(owner(), "GET", KEYS).body["items"] == []
    assert all_items_for_key(key["id"]) == []


def authorize(credential: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {credential}", "X-Organization-ID": ORG}
    answer: dict[str, Any] = handler("authorizer")(
        authorizer_event(headers, method="GET", path="/billing/plans"), FakeLambdaContext()
    )
    return answer


def test_each_request_with_an_api_key_reads_its_grant_once_and_a_jwt_reads_nothing() -> None:
    """The cost of revocation taking effect at once (template: ReauthorizeEvery 0, the authorizer
    runs on every request): one strongly consistent GetItem per API-key request, and none for a
    JWT (the JWKS is cached in the process). No in-process cache of grants either, or a warm
    authorizer would go on admitting a revoked key."""
    key = create(owner(), {"name": "ci"}).body
    token = owner()
    with count_calls() as calls:
        load_function("authorizer").authenticator.cache_clear()  # its client is counted from here
        for _ in range(3):
            assert "organization_id" in authorize(key["key"])["context"]
        assert calls == {"GetItem": 3}
        assert "organization_id" in authorize(token)["context"]
        assert calls == {"GetItem": 3}
    revoke(owner(), key["id"])
    assert authorize(key["key"])["context"]["auth_error"] == "unauthenticated"


def all_items_for_key(key_id: str) -> list[dict[str, Any]]:
    return [item for item in all_items() if key_id in json.dumps(item, default=str)]


def test_revoking_twice_is_not_found() -> None:
    key_id = create(owner(), {"name": "ci"}).body["id"]
    assert revoke(owner(), key_id).status == 200
    again = revoke(owner(), key_id)
    assert again.status == 404
    assert again.error_code == "api_key_not_found"


def test_another_organizations_key_id_is_not_found_and_stays_usable() -> None:
    theirs = create(owner(OTHER_ORG), {"name": "theirs"}, organization=OTHER_ORG).body
    attempt = revoke(owner(), theirs["id"])
    assert attempt.status == 404
    assert attempt.error_code == "api_key_not_found"
    assert call(theirs["key"], "GET", "/billing/plans", organization=OTHER_ORG).status == 200
    assert call(owner(), "GET", KEYS).body["items"] == []  # nor is it listed to org_1


def test_unknown_key_id_is_not_found() -> None:
    missing = revoke(owner(), "key_doesnotexist")
    assert missing.status == 404
    assert missing.error_code == "api_key_not_found"


def test_list_is_the_envelope_newest_first() -> None:
    ids = [create(owner(), {"name": f"key {n}"}).body["id"] for n in range(3)]
    listed = call(owner(), "GET", KEYS).body
    assert [k["id"] for k in listed["items"]] == ids[::-1]
    assert {k: v for k, v in listed.items() if k != "items"} == {
        "total": 3,
        "page": 1,
        "page_size": 20,
        "has_next": False,
        "has_prev": False,
    }


def test_list_is_one_query_and_create_is_one_transaction() -> None:
    credential = owner()
    with count_calls() as calls:
        created = create(credential, {"name": "ci"})
        assert created.status == 201
        # Reads: is the organization suspended (every write asks), and, outside prod only, its test
        # clock (every request asks); one write: the key.
        assert calls == {"GetItem": 2, "TransactWriteItems": 1}
        call(credential, "GET", KEYS)
        assert calls == {"GetItem": 3, "TransactWriteItems": 1, "Query": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ci", "organization_id": "org_2"}, "organization_id"),
        ({"name": "ci", "key": "tk_test_chosen"}, "key"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ci", "role": "owner"}, "role"),
        ({}, "name"),
    ],
)
def test_invalid_create_body_is_422_naming_the_field(body: dict[str, Any], field: str) -> None:
    refused = create(owner(), body)
    assert refused.status == 422
    assert refused.error_code == "validation_error"
    assert [d["field"] for d in refused.body["error"]["details"]] == [field]
    assert call(owner(), "GET", KEYS).body["total"] == 0


def test_malformed_json_is_400() -> None:
    refused = create(owner(), None, raw_body='{"name": ')
    assert refused.status == 400
    assert refused.error_code == "malformed_json"


def test_idempotent_create_replays_the_same_key() -> None:
    first = create(owner(), {"name": "ci"}, headers={"Idempotency-Key": "create-ci-1"})
    replay = create(owner(), {"name": "ci"}, headers={"Idempotency-Key": "create-ci-1"})
    assert first.status == replay.status == 201
    assert replay.body["id"] == first.body["id"]
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert first.body["key"].startswith("tk_test_")
    assert replay.body["key"] is None  # shown once: a replay does not show it again
    assert call(owner(), "GET", KEYS).body["total"] == 1

    reused = create(owner(), {"name": "other"}, headers={"Idempotency-Key": "create-ci-1"})
    assert reused.status == 422
    assert reused.error_code == "idempotency_key_reused"
    assert call(owner(), "GET", KEYS).body["total"] == 1


def test_table_never_holds_a_key_in_plaintext() -> None:
    secrets = [create(owner(), {"name": f"k{n}"}).body["key"] for n in range(2)]
    stored = json.dumps(all_items(), default=str)
    for secret in secrets:
        assert secret not in stored
        assert secret.removeprefix("tk_test_") not in stored


def test_idempotency_record_does_not_hold_the_key() -> None:
    secret = create(owner(), {"name": "ci"}, headers={"Idempotency-Key": "create-ci-2"}).body["key"]
    assert secret.removeprefix("tk_test_") not in json.dumps(all_items(), default=str)
