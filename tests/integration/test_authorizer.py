"""The authorizer in front of real handlers: its context decides what the caller gets (API.md).

Each request runs the real authorizer handler on a REQUEST event, puts its context into the HTTP
API event as API Gateway would, and runs the real route handler. The JWKS is served on loopback,
so the production key source (PyJWKClient over HTTP) is what verifies every token here.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER, LOCAL_KID, jwks, mint_token, signing_key
from tagih.identity import JwksKeySource, SigningKeysUnavailable, UnknownSigningKey
from tests.fakes.key_source import authorizer_event, forged_token, public_pem, serve_jwks
from tests.fakes.lambda_runtime import FakeLambdaContext, http_event, load_function

ORG = "org_1"


def handler(group: str) -> Any:
    # Loaded on first use, once the aws fixture has set Lambda's environment (Powertools reads it
    # when the module creates its Logger and Metrics, as it does in Lambda).
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
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "authorizer")


def authorize(headers: dict[str, str], method: str = "GET", path: str = "/billing/plans") -> dict[str, Any]:
    answer = handler("authorizer")(authorizer_event(headers, method=method, path=path), FakeLambdaContext())
    assert answer["isAuthorized"] is True  # always: refusals travel in the context
    return dict(answer["context"])


def request(
    headers: dict[str, str],
    method: str = "GET",
    path: str = "/billing/plans",
    body: Any = None,
) -> tuple[int, dict[str, Any]]:
    """Authorizer, then the route's function, as API Gateway chains them."""
    context = authorize(headers, method, path)
    group = "catalog" if path.startswith(("/billing/plans", "/billing/addons")) else "api_keys"
    event = http_event(method, path, body=body, headers=headers, authorizer=context)
    result = handler(group)(event, FakeLambdaContext())
    return result["statusCode"], json.loads(result["body"])


def jwt_headers(token: str, organization: str | None = ORG) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if organization is not None:
        headers["X-Organization-ID"] = organization
    return headers


def assert_api_error(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert error["message"]
    assert error["details"] == []
    assert error["request_id"].startswith("req-")


def test_valid_jwt_reads_plans() -> None:
    status, body = request(jwt_headers(mint_token(org_roles=[f"{ORG}:member"])))
    assert status == 200
    assert [p["slug"] for p in body["items"]] == ["free", "pro", "business", "enterprise"]


def test_context_is_the_principal_api_gateway_passes_on() -> None:
    context = authorize(
        jwt_headers(mint_token(org_roles=[f"{ORG}:owner"], subject="user_9", scopes=["a", "b"]))
    )
    assert context == {
        "organization_id": ORG,
        "role": "owner",
        "subject": "user_9",
        "scopes": "a b",
        "method": "jwt",
    }


def _other_key_token() -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE, "sub": "u", "exp": int(time.time()) + 60}
    return jwt.encode(
        {**claims, "org_roles": [f"{ORG}:owner"]}, stranger, algorithm="RS256", headers={"kid": "k2"}
    )


UNAUTHENTICATED = {
    "expired": lambda: jwt_headers(mint_token(org_roles=[f"{ORG}:owner"], lifetime_seconds=-3600)),
    "wrong aud": lambda: jwt_headers(mint_token(org_roles=[f"{ORG}:owner"], audience="someone-else")),
    "wrong iss": lambda: jwt_headers(mint_token(org_roles=[f"{ORG}:owner"], issuer="https://evil.example/")),
    "alg none": lambda: jwt_headers(forged_token({"alg": "none", "typ": "JWT", "kid": LOCAL_KID})),
    "HS256 with the public key": lambda: jwt_headers(
        forged_token({"alg": "HS256", "kid": LOCAL_KID}, key=public_pem())
    ),
    "unknown signing key": lambda: jwt_headers(_other_key_token()),
    "missing org header": lambda: jwt_headers(mint_token(org_roles=[f"{ORG}:owner"]), organization=None),
    "missing authorization": lambda: {"X-Organization-ID": ORG},
    "unknown API key": lambda: jwt_headers("tk_test_" + "Z" * 43),
}


@pytest.mark.parametrize("case", list(UNAUTHENTICATED))
@pytest.mark.parametrize(("method", "path"), [("GET", "/billing/plans"), ("POST", "/billing/api-keys")])
def test_refused_credentials_are_401_unauthenticated(case: str, method: str, path: str) -> None:
    status, body = request(
        UNAUTHENTICATED[case](), method, path, body={"name": "x"} if method == "POST" else None
    )
    assert status == 401
    assert_api_error(body, "unauthenticated")


def test_refusal_message_says_what_was_wrong() -> None:
    _, body = request(jwt_headers(mint_token(org_roles=[f"{ORG}:owner"], lifetime_seconds=-3600)))
    assert body["error"]["message"] == "The token has expired."


def test_organization_not_in_the_token_is_403() -> None:
    status, body = request(jwt_headers(mint_token(org_roles=["org_2:owner"])))
    assert status == 403
    assert_api_error(body, "forbidden")


def test_member_may_not_create_api_keys() -> None:
    token = mint_token(org_roles=[f"{ORG}:member"])
    status, body = request(jwt_headers(token), "POST", "/billing/api-keys", body={"name": "ci"})
    assert status == 403
    assert_api_error(body, "forbidden")


@pytest.mark.parametrize("role", ["member", "admin"])
def test_only_owners_list_api_keys(role: str) -> None:
    status, body = request(jwt_headers(mint_token(org_roles=[f"{ORG}:{role}"])), "GET", "/billing/api-keys")
    assert status == 403
    assert_api_error(body, "forbidden")


def test_operator_without_membership_reads_but_has_no_role() -> None:
    token = mint_token(org_roles=[], scopes=["billing:operator"])
    assert authorize(jwt_headers(token, "org_42"))["role"] == ""
    status, _ = request(jwt_headers(token, "org_42"), "GET", "/billing/api-keys")
    assert status == 403  # operator routes check the scope; owner routes still need the role


# -- the production key source against a JWKS over HTTP ------------------------------------------------
def test_jwks_key_source_fetches_keys_over_http(jwks_url: str) -> None:
    source = JwksKeySource(jwks_url)
    assert source.signing_key(LOCAL_KID).public_numbers() == signing_key().public_key().public_numbers()
    with pytest.raises(UnknownSigningKey):
        source.signing_key("rotated-away")


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks.json"  # nothing listens there any more: refused at once


def test_unreachable_jwks_fails_the_invocation_rather_than_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    # API Gateway answers 500 and caches nothing; a cached refusal would lock the token out.
    monkeypatch.setenv("JWKS_URL", closed_port_url())
    headers = jwt_headers(mint_token(org_roles=[f"{ORG}:owner"]))
    with pytest.raises(SigningKeysUnavailable):
        handler("authorizer")(authorizer_event(headers), FakeLambdaContext())
