"""Organization API keys: the keys owners give to their servers, how they are made and hashed.

A key is ``tk_live_…`` (stage prod) or ``tk_test_…`` (any other stage) followed by 32 random
bytes, urlsafe. Tagih stores only its SHA-256 hash, so the full key exists once: in the response
that creates it. A key acts for one organization with the role chosen at creation (admin or
member, never owner, so a leaked key cannot mint more keys).

Plain Python on purpose (no pydantic): the authorizer imports this module on its cold path.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from tagih.ids import new_id

LIVE_PREFIX = "tk_live_"
TEST_PREFIX = "tk_test_"
API_KEY_PREFIXES = (LIVE_PREFIX, TEST_PREFIX)
SECRET_BYTES = 32
SHOWN_CHARACTERS = 4  # of the random part, in the display prefix and as last4
MAX_KEY_LENGTH = 200  # far above a real key; longer bearer values are not worth hashing

ApiKeyRole = Literal["admin", "member"]


def key_prefix(*, live: bool) -> str:
    return LIVE_PREFIX if live else TEST_PREFIX


def is_api_key(token: str) -> bool:
    """Whether a bearer value is shaped like an organization API key (rather than a JWT)."""
    return token.startswith(API_KEY_PREFIXES) and len(token) <= MAX_KEY_LENGTH


def hash_api_key(secret: str) -> str:
    """The only form in which a key is stored and looked up (SHA-256, hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """An issued key as its organization sees it: never the secret, only what identifies it."""

    id: str
    organization_id: str
    name: str
    role: ApiKeyRole
    prefix: str  # "tk_test_" + the first characters of the random part
    last4: str
    created_at: datetime
    key_hash: str


@dataclass(frozen=True)
class IssuedApiKey:
    api_key: ApiKey
    secret: str  # the full key; handed to the caller once and then forgotten


@dataclass(frozen=True)
class ApiKeyGrant:
    """What a presented key allows: the authorizer's view of the lookup item."""

    organization_id: str
    key_id: str
    role: ApiKeyRole


class ApiKeyStore(Protocol):
    def create(self, api_key: ApiKey) -> None: ...

    def list_for_organization(self, organization_id: str) -> list[ApiKey]: ...

    def revoke(self, organization_id: str, key_id: str) -> None:
        """Remove the key at once; ``ApiKeyNotFound`` for an unknown or another organization's id."""
        ...


def new_api_key(
    *, organization_id: str, name: str, role: ApiKeyRole, live: bool, now: datetime
) -> IssuedApiKey:
    random_part = secrets.token_urlsafe(SECRET_BYTES)
    prefix = key_prefix(live=live)
    secret = prefix + random_part
    api_key = ApiKey(
        id=new_id("key"),
        organization_id=organization_id,
        name=name,
        role=role,
        prefix=prefix + random_part[:SHOWN_CHARACTERS],
        last4=random_part[-SHOWN_CHARACTERS:],
        created_at=now,
        key_hash=hash_api_key(secret),
    )
    return IssuedApiKey(api_key=api_key, secret=secret)
