"""Fakes of the authorizer's ports (signing keys from a JWKS in memory or on loopback HTTP, an
in-memory API key directory) and the hostile tokens an attacker would send."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER, signing_key
from tagih.domain.api_keys import ApiKeyGrant, hash_api_key
from tagih.identity import UnknownSigningKey
from tests.fakes.lambda_runtime import http_event


class StaticKeySource:
    """The keys of a JWKS document held in memory (``local.tokens.jwks()`` in the tests)."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = {key.key_id: key.key for key in jwt.PyJWKSet.from_dict(dict(jwks)).keys if key.key_id}

    def signing_key(self, kid: str) -> Any:
        if kid not in self._keys:
            raise UnknownSigningKey(kid)
        return self._keys[kid]


class InMemoryApiKeys:
    """Grants by key hash, as the lookup items would hold them."""

    def __init__(self) -> None:
        self.grants: dict[str, ApiKeyGrant] = {}
        self.lookups: list[str] = []

    def add(self, secret: str, grant: ApiKeyGrant) -> None:
        self.grants[hash_api_key(secret)] = grant

    def grant_for_hash(self, key_hash: str) -> ApiKeyGrant | None:
        self.lookups.append(key_hash)
        return self.grants.get(key_hash)


@contextmanager
def serve_jwks(jwks: Mapping[str, Any], path: str = "/.well-known/jwks.json") -> Iterator[str]:
    """Serve a JWKS on 127.0.0.1 (ephemeral port) and yield its URL; counts nothing, logs nothing."""
    body = json.dumps(dict(jwks)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != path:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def authorizer_event(
    headers: Mapping[str, str], *, method: str = "GET", path: str = "/billing/plans", route: str | None = None
) -> dict[str, Any]:
    """The REQUEST event (payload 2.0) API Gateway sends a Lambda authorizer for this request."""
    event = http_event(method, path, route=route, headers=dict(headers))
    lower = event["headers"]
    event.update(
        {
            "type": "REQUEST",
            "routeArn": f"arn:aws:execute-api:us-east-1:123456789012:local/$default/{method}{path}",
            "identitySource": [lower[h] for h in ("authorization", "x-organization-id") if h in lower],
        }
    )
    return event


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_token(
    header: dict[str, Any], key: bytes | None = None, org_roles: tuple[str, ...] = ("org_1:owner",)
) -> str:
    """A token with otherwise valid claims, built by hand for what PyJWT refuses to produce: no
    signature (``alg: none``), or an HMAC whose secret is ``key`` (e.g. the public key's PEM)."""
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": "user_forger",
        "iat": now,
        "exp": now + 3600,
        "org_roles": list(org_roles),
    }
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def public_pem() -> bytes:
    """The local signing key's public half, as anyone could rebuild it from the JWKS."""
    return (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
