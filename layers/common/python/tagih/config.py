"""One typed settings model, read from the environment once per process.

Nothing reads ``os.environ`` at import time: handlers call ``get_settings()`` inside a request, so
tests and the local stack can set the environment before the first call.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["local", "dev", "staging", "prod"]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    stage: Stage = "dev"
    table_name: str = Field(min_length=1)
    event_bus_name: str = "default"
    invoice_bucket: str = ""
    jwks_url: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    org_claim: str = "org_roles"
    operator_scope: str = "billing:operator"
    stripe_secret_name: str = ""
    midtrans_secret_name: str = ""
    # Gateways. Base URLs are overridden only by the local stack (localstripe, the Midtrans fake).
    stripe_api_base: str = ""
    midtrans_api_base: str = "https://api.sandbox.midtrans.com"
    midtrans_snap_base: str = "https://app.sandbox.midtrans.com/snap"
    gateway_timeout_seconds: float = Field(default=8.0, gt=0, le=20)
    secrets_max_age_seconds: int = Field(default=300, ge=0)
    public_base_url: str = ""  # where /webhooks/* and hosted pages are reached (notification URLs)
    # Timer lengths (ISO-8601 durations); empty: the plan's trial_days and 7 days of grace.
    trial_duration: str = ""
    grace_duration: str = ""
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    @property
    def is_prod(self) -> bool:
        return self.stage == "prod"


_ENV_NAMES = {
    "stage": "STAGE",
    "table_name": "TABLE_NAME",
    "event_bus_name": "EVENT_BUS_NAME",
    "invoice_bucket": "INVOICE_BUCKET",
    "jwks_url": "JWKS_URL",
    "jwt_issuer": "JWT_ISSUER",
    "jwt_audience": "JWT_AUDIENCE",
    "org_claim": "ORG_CLAIM",
    "operator_scope": "OPERATOR_SCOPE",
    "stripe_secret_name": "STRIPE_SECRET_NAME",
    "midtrans_secret_name": "MIDTRANS_SECRET_NAME",
    "stripe_api_base": "STRIPE_API_BASE",
    "midtrans_api_base": "MIDTRANS_API_BASE",
    "midtrans_snap_base": "MIDTRANS_SNAP_BASE",
    "gateway_timeout_seconds": "GATEWAY_TIMEOUT_SECONDS",
    "secrets_max_age_seconds": "SECRETS_MAX_AGE_SECONDS",
    "public_base_url": "PUBLIC_BASE_URL",
    "trial_duration": "TRIAL_DURATION",
    "grace_duration": "GRACE_DURATION",
    "idempotency_ttl_seconds": "IDEMPOTENCY_TTL_SECONDS",
    "max_body_bytes": "MAX_BODY_BYTES",
}


@cache
def get_settings() -> Settings:
    values = {field: os.environ[env] for field, env in _ENV_NAMES.items() if os.environ.get(env)}
    return Settings.model_validate(values)
