"""Webhook secrets and the ``Tagih-Signature`` header (API.md "Tenant webhooks").

``Tagih-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``. The HMAC key is the
whole secret string (``whsec_…``) as UTF-8. While a rotated-out secret is still valid (24 h after
the rotation) the header carries one ``v1`` per valid secret, newest first, so a receiver that
still holds the old secret keeps verifying during the overlap, as Stripe's header does.

``verify`` is what a receiver does; Tagih's tests and the README's guide use it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 — the prefix of every secret, not a secret
SECRET_BYTES = 32
HEADER = "Tagih-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secrets_in_force: Sequence[str], timestamp: int, body: bytes) -> str:
    """``t=…,v1=…[,v1=…]``: one signature per secret in force, the current secret's first."""
    parts = [f"t={timestamp}"] + [f"v1={signature(s, timestamp, body)}" for s in secrets_in_force]
    return ",".join(parts)


def verify(
    header: str,
    body: bytes,
    secret: str,
    *,
    now: int,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_seconds`` of ``now``."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or abs(now - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
