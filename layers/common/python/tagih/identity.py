"""Who is calling: RS256 JWTs from the identity provider and organization API keys.

Only the authorizer imports this module (it brings PyJWT and cryptography). Its result is the
authorizer context of ``tagih.api.auth``: a principal ``{organization_id, role, subject, scopes,
method}`` or a refusal ``{auth_error, auth_message}``. The authorizer always allows and lets the
resolver answer refusals, because API Gateway's own deny bodies cannot carry API.md's error format.

Never log or echo a token or a key: messages name what was wrong, not the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWKClientConnectionError,
    PyJWKClientError,
)

from tagih.domain.api_keys import ApiKeyGrant, hash_api_key, is_api_key

ALGORITHM = "RS256"  # the only one: no "none", no HS* (a public key must never become an HMAC secret)
LEEWAY_SECONDS = 30  # clock skew between the identity provider and Lambda
JWKS_TIMEOUT_SECONDS = 3.0  # PyJWKClient's default is 30 s, longer than the authorizer may run
JWKS_LIFESPAN_SECONDS = 300  # the key set is re-read every 5 min, so a removed key stops working
REQUIRED_CLAIMS = ("exp", "iss", "aud", "sub")
ROLES = ("member", "admin", "owner")  # lowest to highest
# What an organization id may look like: it becomes part of table keys ("ORG#<org>").
ORGANIZATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

AuthError = Literal["unauthenticated", "forbidden"]


# -- ports -------------------------------------------------------------------------------------------
class UnknownSigningKey(Exception):
    """The key set has no key with the token's ``kid``."""


class SigningKeysUnavailable(Exception):
    """The key set could not be fetched (a fault to retry, not the caller's mistake)."""


class SigningKeySource(Protocol):
    def signing_key(self, kid: str) -> Any:
        """The public key for ``kid``; raises ``UnknownSigningKey`` or ``SigningKeysUnavailable``."""
        ...


class ApiKeyDirectory(Protocol):
    def grant_for_hash(self, key_hash: str) -> ApiKeyGrant | None: ...


class JwksKeySource:
    """The identity provider's JWKS over HTTPS, cached per process (PyJWKClient)."""

    def __init__(self, url: str, *, timeout: float = JWKS_TIMEOUT_SECONDS) -> None:
        self._url = url
        self._timeout = timeout
        self._client: jwt.PyJWKClient | None = None

    def _jwks(self) -> jwt.PyJWKClient:
        # Built on first use: an API-key request never needs it, and a bad URL fails only JWTs.
        if self._client is None:
            try:
                self._client = jwt.PyJWKClient(
                    self._url,
                    cache_jwk_set=True,
                    lifespan=JWKS_LIFESPAN_SECONDS,
                    timeout=self._timeout,
                )
            except PyJWKClientError as error:
                raise SigningKeysUnavailable(f"JWKS URL not usable: {error}") from error
        return self._client

    def signing_key(self, kid: str) -> Any:
        try:
            return self._jwks().get_signing_key(kid).key
        except PyJWKClientConnectionError as error:
            raise SigningKeysUnavailable(str(error)) from error
        except PyJWKClientError as error:
            raise UnknownSigningKey(kid) from error


# -- results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    organization_id: str
    role: str | None  # None: an operator acting on an organization it is not a member of
    subject: str
    scopes: tuple[str, ...]
    method: Literal["jwt", "api_key"]

    def context(self) -> dict[str, str]:
        # Context values are strings: API Gateway passes only scalars through.
        return {
            "organization_id": self.organization_id,
            "role": self.role or "",
            "subject": self.subject,
            "scopes": " ".join(self.scopes),
            "method": self.method,
        }


@dataclass(frozen=True)
class Refusal:
    error: AuthError
    message: str

    def context(self) -> dict[str, str]:
        return {"auth_error": self.error, "auth_message": self.message}


class _Refused(Exception):
    def __init__(self, error: AuthError, message: str) -> None:
        super().__init__(message)
        self.refusal = Refusal(error, message)


def _unauthenticated(message: str) -> _Refused:
    return _Refused("unauthenticated", message)


# -- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuthorizerSettings:
    """The authorizer's slice of ``tagih.config.Settings``, read without pydantic (cold start).

    Same environment variables and defaults as ``Settings``; a unit test keeps the two in step.
    """

    table_name: str
    jwks_url: str
    jwt_issuer: str
    jwt_audience: str
    org_claim: str = "org_roles"
    operator_scope: str = "billing:operator"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AuthorizerSettings:
        env = os.environ if environ is None else environ
        return cls(
            table_name=env.get("TABLE_NAME", ""),
            jwks_url=env.get("JWKS_URL", ""),
            jwt_issuer=env.get("JWT_ISSUER", ""),
            jwt_audience=env.get("JWT_AUDIENCE", ""),
            org_claim=env.get("ORG_CLAIM") or cls.org_claim,
            operator_scope=env.get("OPERATOR_SCOPE") or cls.operator_scope,
        )


# -- verification ------------------------------------------------------------------------------------
def memberships(value: Any) -> dict[str, str]:
    """``["org_1:owner", "org_2:member"]`` → ``{"org_1": "owner", "org_2": "member"}``.

    Entries that are not ``<org>:<role>`` with a known role are ignored; an organization listed
    twice keeps its highest role.
    """
    entries = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    roles: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, str) or ":" not in entry:
            continue
        organization_id, role = entry.rsplit(":", 1)
        if not organization_id or role not in ROLES:
            continue
        if organization_id not in roles or ROLES.index(role) > ROLES.index(roles[organization_id]):
            roles[organization_id] = role
    return roles


def scopes_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """OAuth ``scope`` (space-separated) or ``scp`` (a list, as some providers send it)."""
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found += value.split()
        elif isinstance(value, list):
            found += [s for s in value if isinstance(s, str) and s and " " not in s]
    return tuple(dict.fromkeys(found))


# Most specific first: what the caller is told when PyJWT refuses a token.
_DECODE_REFUSALS: tuple[tuple[type[InvalidTokenError], str], ...] = (
    (ExpiredSignatureError, "The token has expired."),
    (ImmatureSignatureError, "The token is not valid yet."),
    (InvalidAudienceError, "The token was issued for another audience."),
    (InvalidIssuerError, "The token was issued by an untrusted issuer."),
    (InvalidSignatureError, "The token's signature is invalid."),
    (InvalidIssuedAtError, "The token's iat claim is invalid."),
)


def _decode_refusal(error: InvalidTokenError) -> str:
    if isinstance(error, MissingRequiredClaimError):
        return f"The token lacks the {error.claim!r} claim."
    for kind, message in _DECODE_REFUSALS:
        if isinstance(error, kind):
            return message
    return "The bearer token is invalid."


class Authenticator:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        signing_keys: SigningKeySource,
        api_keys: ApiKeyDirectory,
        org_claim: str = "org_roles",
        operator_scope: str = "billing:operator",
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.signing_keys = signing_keys
        self.api_keys = api_keys
        self.org_claim = org_claim
        self.operator_scope = operator_scope

    def authenticate(self, authorization: str | None, organization_id: str | None) -> Principal | Refusal:
        """Raises only ``SigningKeysUnavailable`` and storage errors: faults, not refusals."""
        try:
            token = self._bearer(authorization)
            organization = self._organization(organization_id)
            if is_api_key(token):
                return self._api_key_principal(token, organization)
            return self._jwt_principal(self.verify_jwt(token), organization)
        except _Refused as refused:
            return refused.refusal

    # -- request parts ---------------------------------------------------------------------------
    @staticmethod
    def _bearer(authorization: str | None) -> str:
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated("Send Authorization: Bearer <token or API key>.")
        return token

    @staticmethod
    def _organization(organization_id: str | None) -> str:
        value = (organization_id or "").strip()
        if not value:
            raise _unauthenticated("The X-Organization-ID header is required.")
        if not ORGANIZATION_ID.fullmatch(value):
            raise _unauthenticated("The X-Organization-ID header is not a valid organization id.")
        return value

    # -- API keys --------------------------------------------------------------------------------
    def _api_key_principal(self, key: str, organization_id: str) -> Principal:
        grant = self.api_keys.grant_for_hash(hash_api_key(key))
        if grant is None:
            raise _unauthenticated("The API key is unknown or revoked.")
        if grant.organization_id != organization_id:
            raise _Refused("forbidden", "This API key belongs to another organization.")
        return Principal(
            organization_id=organization_id,
            role=grant.role,
            subject=grant.key_id,
            scopes=(),
            method="api_key",
        )

    # -- JWTs ------------------------------------------------------------------------------------
    def verify_jwt(self, token: str) -> dict[str, Any]:
        """The token's claims once signature, algorithm, ``iss``, ``aud``, ``exp``, ``nbf`` hold."""
        if not (self.issuer and self.audience):
            raise _unauthenticated("JWT sign-in is not configured for this deployment.")
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError as error:
            raise _unauthenticated("The bearer token is not a well-formed JWT.") from error
        # Refuse other algorithms before any key lookup; jwt.decode below enforces it again.
        if header.get("alg") != ALGORITHM:
            raise _unauthenticated(f"Only {ALGORITHM}-signed tokens are accepted.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthenticated("The token does not name its signing key (kid).")
        try:
            key = self.signing_keys.signing_key(kid)
        except UnknownSigningKey as error:
            raise _unauthenticated("The token's signing key is unknown.") from error
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except InvalidTokenError as error:
            raise _unauthenticated(_decode_refusal(error)) from error
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise _unauthenticated("The token's sub claim must be a non-empty string.")
        return claims

    def _jwt_principal(self, claims: Mapping[str, Any], organization_id: str) -> Principal:
        scopes = scopes_of(claims)
        role = memberships(claims.get(self.org_claim)).get(organization_id)
        if role is None and self.operator_scope not in scopes:
            raise _Refused("forbidden", f"You are not a member of organization {organization_id}.")
        return Principal(
            organization_id=organization_id,
            role=role,
            subject=str(claims["sub"]),
            scopes=scopes,
            method="jwt",
        )


# -- the authorizer's answer ---------------------------------------------------------------------------
def header(event: Mapping[str, Any], name: str) -> str | None:
    """A request header from an HTTP API v2 event (names arrive lower-cased; be lenient anyway)."""
    headers = event.get("headers") or {}
    wanted = name.lower()
    for key, value in headers.items():
        if str(key).lower() == wanted:
            return str(value)
    return None


def authorize(event: Mapping[str, Any], authenticator: Authenticator) -> dict[str, Any]:
    """The simple response of an HTTP API Lambda authorizer (payload 2.0): always authorized,
    with either the principal or the refusal in the context for the resolver to answer."""
    result = authenticator.authenticate(header(event, "authorization"), header(event, "x-organization-id"))
    return {"isAuthorized": True, "context": result.context()}
