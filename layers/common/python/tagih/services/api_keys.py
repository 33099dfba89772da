"""Organization API keys' services: issuing (shown once), listing and revoking. Keys, their hash
and prefixes are ``domain.api_keys``."""

from __future__ import annotations

from datetime import datetime

from tagih.domain.api_keys import ApiKey, ApiKeyRole, ApiKeyStore, IssuedApiKey, new_api_key


# -- services: what the API key routes do ---------------------------------------------------------
def issue_api_key(
    store: ApiKeyStore,
    *,
    organization_id: str,
    name: str,
    role: ApiKeyRole,
    live: bool,
    now: datetime,
) -> IssuedApiKey:
    issued = new_api_key(organization_id=organization_id, name=name, role=role, live=live, now=now)
    store.create(issued.api_key)
    return issued


def list_api_keys(store: ApiKeyStore, organization_id: str) -> list[ApiKey]:
    """The organization's keys, newest first."""
    keys = store.list_for_organization(organization_id)
    return sorted(keys, key=lambda k: (k.created_at, k.id), reverse=True)


def revoke_api_key(store: ApiKeyStore, organization_id: str, key_id: str) -> None:
    store.revoke(organization_id, key_id)
