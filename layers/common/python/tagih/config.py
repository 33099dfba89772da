"""One typed settings model, read from the environment once per process.

Nothing reads ``os.environ`` at import time: handlers call ``get_settings()`` inside a request, so
tests and the local stack can set the environment before the first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from tagih.clock import parse_duration

Stage = Literal["local", "dev", "staging", "prod"]
# The settings a timer reads: each is checked when the settings are (see ``check_timer_setting``).
TIMER_SETTINGS = ("trial_duration", "grace_duration", "dunning_schedule")


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
    # Dunning: delays after the first failed charge, comma-separated ISO-8601 durations.
    dunning_schedule: str = "P1D,P3D,P5D,P7D"
    # The timers' state machines; all empty: no timers (test clocks and tests drive time instead).
    trial_state_machine_arn: str = ""
    grace_state_machine_arn: str = ""
    incomplete_state_machine_arn: str = ""
    dunning_state_machine_arn: str = ""
    # How far back the hourly renewal sweep looks for renewals still due (missed or failed sweeps).
    renewal_lookback_hours: int = Field(default=72, ge=1, le=24 * 31)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Tenant webhooks: delivery retries back off exponentially from the base, each wait capped, for
    # the window after the first attempt (24 h); the local stack sets seconds (API.md).
    webhook_delivery_queue_url: str = ""
    webhook_dead_letter_queue_url: str = ""
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=10)
    webhook_retry_base_seconds: int = Field(default=30, ge=1, le=900)
    webhook_retry_max_delay_seconds: int = Field(default=14_400, ge=1)
    webhook_retry_window_seconds: int = Field(default=86_400, ge=1)
    # Only the local stack sets it (never a template parameter), and never on prod: http and loopback
    # for 127.0.0.1/localhost receivers, as API.md allows there.
    webhook_allow_loopback: bool = False
    # The KMS key (alias) webhook signing secrets are encrypted with before they are stored.
    webhook_secrets_key: str = ""

    @property
    def is_prod(self) -> bool:
        return self.stage == "prod"

    # Timer settings are checked when the settings are read, so a function with a bad one refuses
    # every invocation with the setting's name, instead of starting fine and failing each timer.
    @field_validator(*TIMER_SETTINGS)
    @classmethod
    def _timer_setting(cls, value: str, info: ValidationInfo) -> str:
        check_timer_setting(str(info.field_name), value)
        return value

    @property
    def retry_delays(self) -> tuple[timedelta, ...]:
        return retry_delays(self.dunning_schedule)


def retry_delays(schedule: str) -> tuple[timedelta, ...]:
    """``DUNNING_SCHEDULE`` as delays; ``ValueError`` unless they are positive and increasing
    (each retry comes after the one before: dunning counts retries by their position)."""
    parts = [part.strip() for part in schedule.split(",")]
    if not schedule.strip() or not all(parts):
        raise ValueError(f"{schedule!r} is not a comma-separated list of ISO-8601 delays like P1D,P3D")
    delays = tuple(parse_duration(part) for part in parts)
    for number, (part, delay) in enumerate(zip(parts, delays, strict=True), start=1):
        if delay <= timedelta(0):
            raise ValueError(f"{schedule!r}: delay {number} ({part}) is not after the first failed charge")
        if number > 1 and delay <= delays[number - 2]:
            raise ValueError(
                f"{schedule!r}: delays must increase, and delay {number} ({part}) is not after"
                f" delay {number - 1} ({parts[number - 2]})"
            )
    return delays


def env_name(field: str) -> str:
    return _ENV_NAMES[field]


def check_timer_setting(field: str, value: str) -> None:
    """``ValueError`` naming the environment variable when a timer setting would break a timer."""
    env = _ENV_NAMES[field]
    try:
        if field == "dunning_schedule":
            retry_delays(value)
        elif value and parse_duration(value) <= timedelta(0):
            raise ValueError(f"{value!r} is not a positive duration")
    except ValueError as error:
        raise ValueError(f"{env}: {error}") from None


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
    "dunning_schedule": "DUNNING_SCHEDULE",
    "trial_state_machine_arn": "TRIAL_STATE_MACHINE_ARN",
    "grace_state_machine_arn": "GRACE_STATE_MACHINE_ARN",
    "incomplete_state_machine_arn": "INCOMPLETE_STATE_MACHINE_ARN",
    "dunning_state_machine_arn": "DUNNING_STATE_MACHINE_ARN",
    "renewal_lookback_hours": "RENEWAL_LOOKBACK_HOURS",
    "idempotency_ttl_seconds": "IDEMPOTENCY_TTL_SECONDS",
    "max_body_bytes": "MAX_BODY_BYTES",
    "webhook_delivery_queue_url": "WEBHOOK_DELIVERY_QUEUE_URL",
    "webhook_dead_letter_queue_url": "WEBHOOK_DEAD_LETTER_QUEUE_URL",
    "webhook_timeout_seconds": "WEBHOOK_TIMEOUT_SECONDS",
    "webhook_retry_base_seconds": "WEBHOOK_RETRY_BASE_SECONDS",
    "webhook_retry_max_delay_seconds": "WEBHOOK_RETRY_MAX_DELAY_SECONDS",
    "webhook_retry_window_seconds": "WEBHOOK_RETRY_WINDOW_SECONDS",
    "webhook_allow_loopback": "WEBHOOK_ALLOW_LOOPBACK",
    "webhook_secrets_key": "WEBHOOK_SECRETS_KEY",
}


def settings_from(environ: Mapping[str, str]) -> Settings:
    """The settings an environment gives (a function's, or the local stack's view of one)."""
    values = {field: environ[env] for field, env in _ENV_NAMES.items() if environ.get(env)}
    return Settings.model_validate(values)


@cache
def get_settings() -> Settings:
    return settings_from(os.environ)
