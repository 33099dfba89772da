"""Prefixed identifiers (``sub_…``, ``inv_…``): 20 base62 characters, about 119 bits; random, or
derived from what they identify (``derived_id``)."""

from __future__ import annotations

import hashlib
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
PREFIXES = frozenset({"sub", "inv", "pm", "acct", "evt", "wh", "txn", "key", "si", "whd"})


def new_id(prefix: str, length: int = 20) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def derived_id(prefix: str, *parts: str, length: int = 20) -> str:
    """An identifier that is the same every time for the same ``parts`` (an organization, an
    operation and its ``Idempotency-Key``), so a retried request finds what its first try wrote
    instead of starting a second one. Shaped like ``new_id``'s (SHA-256, in base62)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    number = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest(), "big")
    digits = []
    for _ in range(length):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return f"{prefix}_" + "".join(digits)


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
