"""Webhook signing secrets at rest: encrypted with the stack's KMS key before they are written.

Each secret is encrypted directly (``kms:Encrypt``; a ``whsec_`` secret is far below its 4 KB limit)
with an encryption context naming its organization and endpoint, so a ciphertext copied onto
another endpoint's item does not decrypt, and the IAM policies grant the key's use only to calls
that carry that context. Stored form: ``kms:<base64 ciphertext>``.

Items written before encryption hold the secret in clear (``whsec_…``): they are still read as
they are, so their deliveries go on, and are encrypted the next time the endpoint is written; a
rotation writes both the new secret and the rotated-out one encrypted (README "Webhook secrets").

Decrypted secrets are kept in memory by ciphertext for the life of the process: a warm dispatcher
signs every delivery of an endpoint with one ``kms:Decrypt``, not one per attempt.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from functools import cache
from threading import Lock
from typing import Any, Protocol

import boto3

from tagih.config import get_settings

SEALED_PREFIX = "kms:"
CLEAR_PREFIX = "whsec_"
OPENED_CACHE_SIZE = 512


class SecretNotSealable(Exception):
    """No key is configured (``WEBHOOK_SECRETS_KEY``), or a stored value is neither form."""


class SecretSealer(Protocol):
    """Encrypts a secret for one endpoint, and decrypts it for that endpoint only."""

    def seal(self, secret: str, *, organization_id: str, webhook_id: str) -> str: ...

    def open(self, stored: str, *, organization_id: str, webhook_id: str) -> str: ...


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


def _context(organization_id: str, webhook_id: str) -> dict[str, str]:
    return {"organization_id": organization_id, "webhook_id": webhook_id}


class KmsSecretSealer:
    """``SecretSealer`` with one KMS key (its alias or ARN); ``client`` is a boto3 KMS client."""

    def __init__(self, client: Any, key_id: str) -> None:
        if not key_id:
            raise SecretNotSealable("WEBHOOK_SECRETS_KEY names no KMS key.")
        self._client = client
        self._key_id = key_id
        self._opened: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._lock = Lock()

    def seal(self, secret: str, *, organization_id: str, webhook_id: str) -> str:
        blob = self._client.encrypt(
            KeyId=self._key_id,
            Plaintext=secret.encode(),
            EncryptionContext=_context(organization_id, webhook_id),
        )["CiphertextBlob"]
        return SEALED_PREFIX + base64.b64encode(blob).decode()

    def open(self, stored: str, *, organization_id: str, webhook_id: str) -> str:
        if stored.startswith(CLEAR_PREFIX):
            return stored  # written before encryption; sealed on the endpoint's next write
        if not is_sealed(stored):
            raise SecretNotSealable(f"webhook {webhook_id}: a stored secret is in no known form")
        cache_key = (organization_id, webhook_id, stored)
        with self._lock:
            if cache_key in self._opened:
                self._opened.move_to_end(cache_key)
                return self._opened[cache_key]
        plaintext: str = self._client.decrypt(
            CiphertextBlob=base64.b64decode(stored[len(SEALED_PREFIX) :]),
            EncryptionContext=_context(organization_id, webhook_id),
            KeyId=self._key_id,  # only this key's ciphertexts are accepted
        )["Plaintext"].decode()
        with self._lock:
            self._opened[cache_key] = plaintext
            while len(self._opened) > OPENED_CACHE_SIZE:
                self._opened.popitem(last=False)
        return plaintext


@cache
def default_secret_sealer() -> KmsSecretSealer:
    return KmsSecretSealer(boto3.client("kms"), get_settings().webhook_secrets_key)


def reset_secret_sealer() -> None:
    """Forget the cached client and opened secrets (tests switch moto accounts)."""
    default_secret_sealer.cache_clear()
