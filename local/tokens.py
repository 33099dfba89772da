"""The local identity provider: an RS256 key pair, its JWKS, and tokens signed with it.

Only the local stack and the tests use this; the deployed authorizer trusts the JWKS URL it is
configured with. The key is made once per process and never written to disk.
"""

from __future__ import annotations

import json
import time
import uuid
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

LOCAL_ISSUER = "https://tagih.local/"
LOCAL_AUDIENCE = "tagih-api"
LOCAL_KID = "tagih-local-1"


@cache
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> dict[str, Any]:
    public = json.loads(RSAAlgorithm.to_jwk(signing_key().public_key()))
    return {"keys": [{**public, "kid": LOCAL_KID, "use": "sig", "alg": "RS256"}]}


def mint_token(
    *,
    org_roles: list[str],
    subject: str = "user_local",
    scopes: list[str] | None = None,
    issuer: str = LOCAL_ISSUER,
    audience: str = LOCAL_AUDIENCE,
    lifetime_seconds: int = 3600,
    org_claim: str = "org_roles",
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """A token as the local identity provider would issue it (claims overridable for tests)."""
    issued = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_seconds,
        "jti": uuid.uuid4().hex,
        org_claim: org_roles,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    claims.update(extra_claims or {})
    return jwt.encode(claims, signing_key(), algorithm="RS256", headers={"kid": LOCAL_KID})
