"""Who is calling: JWT verification and API keys, with the key source and key directory in memory."""

from __future__ import annotations

import hashlib
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER, LOCAL_KID, jwks, mint_token, signing_key
from tagih.config import Settings
from tagih.domain.api_keys import ApiKeyGrant, hash_api_key, is_api_key, new_api_key
from tagih.identity import (
    Authenticator,
    AuthorizerSettings,
    Principal,
    Refusal,
    authorize,
    memberships,
    scopes_of,
)
from tests.fakes.key_source import InMemoryApiKeys, StaticKeySource, forged_token, public_pem

ORG = "org_1"
TEST_KEY = "tk_test_" + "A" * 43


@pytest.fixture
def api_keys() -> InMemoryApiKeys:
    directory = InMemoryApiKeys()
    directory.add(TEST_KEY, ApiKeyGrant(organization_id=ORG, key_id="key_abc", role="admin"))
    return directory


@pytest.fixture
def authenticator(api_keys: InMemoryApiKeys) -> Authenticator:
    return Authenticator(
        issuer=LOCAL_ISSUER,
        audience=LOCAL_AUDIENCE,
        signing_keys=StaticKeySource(jwks()),
        api_keys=api_keys,
    )


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refusal(result: Principal | Refusal, error: str = "unauthenticated") -> str:
    assert isinstance(result, Refusal), result
    assert result.error == error
    return result.message


# -- valid tokens -------------------------------------------------------------------------------------
def test_valid_token_gives_the_membership_role(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[f"{ORG}:owner", "org_2:member"], subject="user_7", scopes=["billing:read"])
    result = authenticator.authenticate(bearer(token), ORG)
    assert result == Principal(
        organization_id=ORG, role="owner", subject="user_7", scopes=("billing:read",), method="jwt"
    )
    assert result.context() == {
        "organization_id": ORG,
        "role": "owner",
        "subject": "user_7",
        "scopes": "billing:read",
        "method": "jwt",
    }
    other = authenticator.authenticate(bearer(token), "org_2")
    assert isinstance(other, Principal)
    assert other.role == "member"


def test_bearer_scheme_is_case_insensitive(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[f"{ORG}:admin"])
    result = authenticator.authenticate(f"bearer {token}", ORG)
    assert isinstance(result, Principal)
    assert result.role == "admin"


def test_membership_claim_name_is_configurable(api_keys: InMemoryApiKeys) -> None:
    custom = Authenticator(
        issuer=LOCAL_ISSUER,
        audience=LOCAL_AUDIENCE,
        signing_keys=StaticKeySource(jwks()),
        api_keys=api_keys,
        org_claim="https://tagih.example/orgs",
    )
    token = mint_token(org_roles=[f"{ORG}:member"], org_claim="https://tagih.example/orgs")
    result = custom.authenticate(bearer(token), ORG)
    assert isinstance(result, Principal)
    assert result.role == "member"


# -- refused tokens (401) --------------------------------------------------------------------------------
def test_expired_token_is_refused(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[f"{ORG}:owner"], lifetime_seconds=-120)
    assert refusal(authenticator.authenticate(bearer(token), ORG)) == "The token has expired."


def test_expiry_within_the_leeway_is_accepted(authenticator: Authenticator) -> None:
    # A few seconds of clock skew between the identity provider and Lambda must not lock users out.
    token = mint_token(org_roles=[f"{ORG}:owner"], lifetime_seconds=-5)
    assert isinstance(authenticator.authenticate(bearer(token), ORG), Principal)


def test_wrong_audience_is_refused(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[f"{ORG}:owner"], audience="another-api")
    assert "audience" in refusal(authenticator.authenticate(bearer(token), ORG))


def test_wrong_issuer_is_refused(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[f"{ORG}:owner"], issuer="https://evil.example/")
    assert "issuer" in refusal(authenticator.authenticate(bearer(token), ORG))


def test_token_not_valid_yet_is_refused(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[f"{ORG}:owner"], extra_claims={"nbf": int(time.time()) + 600})
    assert refusal(authenticator.authenticate(bearer(token), ORG)) == "The token is not valid yet."


@pytest.mark.parametrize("claim", ["exp", "sub", "iss", "aud"])
def test_required_claims_must_be_present(authenticator: Authenticator, claim: str) -> None:
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": "user_1",
        "exp": int(time.time()) + 600,
        "org_roles": [f"{ORG}:owner"],
    }
    del claims[claim]
    token = jwt.encode(claims, signing_key(), algorithm="RS256", headers={"kid": LOCAL_KID})
    assert claim in refusal(authenticator.authenticate(bearer(token), ORG))


def test_alg_none_is_refused(authenticator: Authenticator) -> None:
    token = forged_token({"alg": "none", "typ": "JWT", "kid": LOCAL_KID})
    assert token.endswith(".")
    assert "RS256" in refusal(authenticator.authenticate(bearer(token), ORG))


def test_hs256_signed_with_the_public_key_is_refused(authenticator: Authenticator) -> None:
    # The classic key-confusion attack: the public key (which anyone can read from the JWKS)
    # used as an HMAC secret.
    token = forged_token({"alg": "HS256", "typ": "JWT", "kid": LOCAL_KID}, key=public_pem())
    assert "RS256" in refusal(authenticator.authenticate(bearer(token), ORG))


def test_unknown_kid_is_refused(authenticator: Authenticator) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": "u",
        "exp": now + 60,
        "org_roles": [f"{ORG}:owner"],
    }
    token = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "someone-else"})
    assert "signing key" in refusal(authenticator.authenticate(bearer(token), ORG))


def test_signature_by_another_key_under_our_kid_is_refused(authenticator: Authenticator) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": "u",
        "exp": now + 60,
        "org_roles": [f"{ORG}:owner"],
    }
    token = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": LOCAL_KID})
    assert "signature" in refusal(authenticator.authenticate(bearer(token), ORG))


def test_missing_kid_is_refused(authenticator: Authenticator) -> None:
    now = int(time.time())
    claims = {"iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE, "sub": "u", "exp": now + 60}
    token = jwt.encode(claims, signing_key(), algorithm="RS256")
    assert "kid" in refusal(authenticator.authenticate(bearer(token), ORG))


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "e30.e30.", "tk_live", "x" * 5000])
def test_garbage_token_is_refused(authenticator: Authenticator, token: str) -> None:
    refusal(authenticator.authenticate(bearer(token), ORG))


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "token-only"]
)
def test_missing_or_non_bearer_authorization_is_refused(
    authenticator: Authenticator, authorization: str | None
) -> None:
    assert "Bearer" in refusal(authenticator.authenticate(authorization, ORG))


def test_unconfigured_issuer_refuses_every_jwt(api_keys: InMemoryApiKeys) -> None:
    unconfigured = Authenticator(
        issuer="", audience="", signing_keys=StaticKeySource(jwks()), api_keys=api_keys
    )
    token = mint_token(org_roles=[f"{ORG}:owner"])
    assert "not configured" in refusal(unconfigured.authenticate(bearer(token), ORG))
    # API keys do not depend on the identity provider.
    assert isinstance(unconfigured.authenticate(bearer(TEST_KEY), ORG), Principal)


# -- organizations ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("organization", [None, "", "   "])
def test_missing_organization_header_is_unauthenticated(
    authenticator: Authenticator, organization: str | None
) -> None:
    token = mint_token(org_roles=[f"{ORG}:owner"])
    assert "X-Organization-ID" in refusal(authenticator.authenticate(bearer(token), organization))


@pytest.mark.parametrize("organization", ["org#1", "ORG#x#SK", "a" * 129, "-org", "org 1"])
def test_organization_header_that_cannot_be_an_id_is_refused(
    authenticator: Authenticator, organization: str
) -> None:
    token = mint_token(org_roles=[f"{organization}:owner"], scopes=["billing:operator"])
    assert "X-Organization-ID" in refusal(authenticator.authenticate(bearer(token), organization))


def test_organization_not_in_the_token_is_forbidden(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=["org_2:owner"])
    assert "org_1" in refusal(authenticator.authenticate(bearer(token), ORG), "forbidden")


def test_operator_scope_acts_on_any_organization_without_a_role(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[], subject="ops_1", scopes=["billing:operator"])
    result = authenticator.authenticate(bearer(token), "org_99")
    assert result == Principal(
        organization_id="org_99", role=None, subject="ops_1", scopes=("billing:operator",), method="jwt"
    )
    assert result.context()["role"] == ""


def test_operator_who_is_a_member_keeps_the_role(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[f"{ORG}:member"], scopes=["billing:operator"])
    result = authenticator.authenticate(bearer(token), ORG)
    assert isinstance(result, Principal)
    assert result.role == "member"


def test_memberships_parse_org_role_pairs() -> None:
    claim = [
        "org_1:owner",
        "org_2:member",
        "org_2:admin",  # listed twice: the higher role wins
        "org_3:superuser",  # unknown role: ignored
        "no-role",
        ":owner",
        42,
        "org.with.dots:admin",
    ]
    assert memberships(claim) == {"org_1": "owner", "org_2": "admin", "org.with.dots": "admin"}
    assert memberships("org_1:member") == {"org_1": "member"}
    assert memberships(None) == {}
    assert memberships({"org_1": "owner"}) == {}


def test_scopes_come_from_scope_or_scp() -> None:
    assert scopes_of({"scope": "a b  c"}) == ("a", "b", "c")
    assert scopes_of({"scp": ["a", "billing:operator", 3, ""]}) == ("a", "billing:operator")
    assert scopes_of({"scope": "a", "scp": ["a", "b"]}) == ("a", "b")
    assert scopes_of({}) == ()


def test_scp_list_grants_the_operator_scope(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=[], extra_claims={"scp": ["billing:operator"]})
    result = authenticator.authenticate(bearer(token), "org_5")
    assert isinstance(result, Principal)
    assert result.scopes == ("billing:operator",)


# -- API keys -----------------------------------------------------------------------------------------------
def test_api_key_acts_for_its_organization_with_its_role(
    authenticator: Authenticator, api_keys: InMemoryApiKeys
) -> None:
    result = authenticator.authenticate(bearer(TEST_KEY), ORG)
    assert result == Principal(
        organization_id=ORG, role="admin", subject="key_abc", scopes=(), method="api_key"
    )
    # Looked up by hash only: the directory never sees the key itself.
    assert api_keys.lookups == [hash_api_key(TEST_KEY)]
    assert TEST_KEY not in api_keys.lookups


def test_unknown_api_key_is_unauthenticated(authenticator: Authenticator) -> None:
    message = refusal(authenticator.authenticate(bearer("tk_live_" + "B" * 43), ORG))
    assert message == "The API key is unknown or revoked."


def test_api_key_of_another_organization_is_forbidden(authenticator: Authenticator) -> None:
    assert "another organization" in refusal(
        authenticator.authenticate(bearer(TEST_KEY), "org_2"), "forbidden"
    )


def test_refusals_never_repeat_the_credential(authenticator: Authenticator) -> None:
    token = mint_token(org_roles=["org_2:owner"], lifetime_seconds=-600)
    for credential in (token, TEST_KEY, "tk_test_unknown"):
        for organization in (ORG, "org_2"):
            result = authenticator.authenticate(bearer(credential), organization)
            assert credential not in json.dumps(result.context())


def test_new_keys_are_prefixed_hashed_and_unique() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 22, tzinfo=UTC)
    live = new_api_key(organization_id=ORG, name="ci", role="admin", live=True, now=now)
    test = new_api_key(organization_id=ORG, name="ci", role="member", live=False, now=now)
    assert live.secret.startswith("tk_live_")
    assert test.secret.startswith("tk_test_")
    assert len(live.secret) == len("tk_live_") + 43  # 32 random bytes, urlsafe base64
    assert live.api_key.key_hash == hashlib.sha256(live.secret.encode()).hexdigest()
    assert live.api_key.prefix == live.secret[: len("tk_live_") + 4]
    assert live.api_key.last4 == live.secret[-4:]
    assert live.api_key.id.startswith("key_")
    assert live.secret != test.secret
    assert live.api_key.id != test.api_key.id
    assert is_api_key(live.secret)
    assert is_api_key(test.secret)
    assert not is_api_key(mint_token(org_roles=[]))


# -- the authorizer's answer --------------------------------------------------------------------------------
def test_authorizer_answer_is_always_authorized_with_principal_or_refusal(
    authenticator: Authenticator,
) -> None:
    token = mint_token(org_roles=[f"{ORG}:owner"])
    allowed = authorize(
        {"headers": {"authorization": bearer(token), "x-organization-id": ORG}}, authenticator
    )
    assert allowed == {
        "isAuthorized": True,
        "context": {
            "organization_id": ORG,
            "role": "owner",
            "subject": "user_local",
            "scopes": "",
            "method": "jwt",
        },
    }
    refused = authorize({"headers": {"x-organization-id": ORG}}, authenticator)
    assert refused["isAuthorized"] is True
    assert refused["context"]["auth_error"] == "unauthenticated"
    assert set(refused["context"]) == {"auth_error", "auth_message"}


# -- configuration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "environ",
    [
        {"TABLE_NAME": "t"},
        {
            "TABLE_NAME": "t",
            "JWKS_URL": "https://idp.example/.well-known/jwks.json",
            "JWT_ISSUER": "https://idp.example/",
            "JWT_AUDIENCE": "tagih",
            "ORG_CLAIM": "orgs",
            "OPERATOR_SCOPE": "ops",
        },
    ],
)
def test_authorizer_settings_read_the_environment_like_settings(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The authorizer skips the pydantic settings model for its cold start; both must agree.
    from tagih.config import get_settings

    for name in ("JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE", "ORG_CLAIM", "OPERATOR_SCOPE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        settings: Settings = get_settings()
        lean = AuthorizerSettings.from_environment()
    finally:
        get_settings.cache_clear()
    assert lean == AuthorizerSettings(
        table_name=settings.table_name,
        jwks_url=settings.jwks_url,
        jwt_issuer=settings.jwt_issuer,
        jwt_audience=settings.jwt_audience,
        org_claim=settings.org_claim,
        operator_scope=settings.operator_scope,
    )
