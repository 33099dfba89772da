"""Prefixed random identifiers (``sub_…``, ``inv_…``): 20 base62 characters, about 119 bits."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
PREFIXES = frozenset({"sub", "inv", "pm", "acct", "evt", "wh", "txn", "key", "si", "whd"})


def new_id(prefix: str, length: int = 20) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
