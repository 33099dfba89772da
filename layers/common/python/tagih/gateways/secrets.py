"""The payment gateways' keys, read from Secrets Manager through Powertools parameters.

The stack creates ``StripeSecret`` and ``MidtransSecret`` empty; an operator fills them. Values are
cached per process for ``settings.secrets_max_age_seconds`` (Powertools' cache), so a warm Lambda
makes no Secrets Manager call per request and still sees a rotated key within minutes.

A secret that is missing, empty or incomplete is a deployment fault, not a client's: it surfaces as
``GatewayNotConfigured`` (503 ``gateway_unavailable``) whose message names the secret to fill and
the JSON it must hold. Secret values are never logged or put into an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from botocore.config import Config

from tagih.config import get_settings
from tagih.domain.errors import GatewayUnavailable

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient

logger = logging.getLogger(__name__)

STRIPE_SHAPE = '{"secret_key": "sk_…", "webhook_secret": "whsec_…"}'
MIDTRANS_SHAPE = '{"server_key": "…", "client_key": "…", "is_production": false}'

# Short timeouts: a request waiting on Secrets Manager must still answer well inside API Gateway's 30 s.
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 3, "mode": "standard"})


class GatewayNotConfigured(GatewayUnavailable):
    """The gateway's secret has no usable value yet (503 until an operator fills it)."""


@dataclass(frozen=True)
class StripeKeys:
    secret_key: str
    webhook_secret: str

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return "StripeKeys(secret_key=…, webhook_secret=…)"


@dataclass(frozen=True)
class MidtransKeys:
    server_key: str
    client_key: str
    is_production: bool = False

    def __repr__(self) -> str:
        return f"MidtransKeys(server_key=…, client_key=…, is_production={self.is_production})"


@cache
def _provider() -> SecretsProvider:
    # The default boto3 session (like the table's clients), so AWS_ENDPOINT_URL and test hooks apply.
    client: SecretsManagerClient = boto3.client("secretsmanager", config=_CLIENT_CONFIG)
    return SecretsProvider(boto3_client=client)


def reset_secrets() -> None:
    """Forget the client and every cached value (tests switch moto accounts and secrets)."""
    _provider.cache_clear()


def _read(gateway: str, name: str, shape: str) -> dict[str, Any]:
    if not name:
        raise GatewayNotConfigured(
            f"{gateway} is not configured: the function has no {gateway.upper()}_SECRET_NAME.",
            gateway=gateway.lower(),
        )
    not_filled = GatewayNotConfigured(
        f"{gateway} is not configured: fill the Secrets Manager secret {name!r} with {shape}.",
        gateway=gateway.lower(),
    )
    try:
        value = _provider().get(name, transform="json", max_age=get_settings().secrets_max_age_seconds)
    except TransformParameterError:
        logger.error("secret %s does not hold JSON", name)
        raise not_filled from None
    except GetParameterError as error:
        cause = error.__cause__ or error.__context__  # Powertools raises it inside its except
        code = getattr(cause, "response", {}).get("Error", {}).get("Code", "")
        if code in ("ResourceNotFoundException", "DecryptionFailure", "AccessDeniedException"):
            # A secret created without a value has no AWSCURRENT version: ResourceNotFound too.
            logger.error("secret %s is unreadable: %s", name, code)
            raise not_filled from None
        logger.warning("reading secret %s failed: %s", name, code or type(cause).__name__)
        raise GatewayUnavailable(gateway=gateway.lower(), nothing_charged=True) from None
    if not isinstance(value, dict):
        logger.error("secret %s is not a JSON object", name)
        raise not_filled
    return value


def _text(value: dict[str, Any], field: str) -> str:
    item = value.get(field)
    return item.strip() if isinstance(item, str) else ""


def stripe_keys() -> StripeKeys:
    name = get_settings().stripe_secret_name
    value = _read("Stripe", name, STRIPE_SHAPE)
    keys = StripeKeys(secret_key=_text(value, "secret_key"), webhook_secret=_text(value, "webhook_secret"))
    if not keys.secret_key or not keys.webhook_secret:
        missing = [field for field in ("secret_key", "webhook_secret") if not _text(value, field)]
        logger.error("secret %s lacks %s", name, ", ".join(missing))
        raise GatewayNotConfigured(
            f"Stripe is not configured: the Secrets Manager secret {name!r} lacks {', '.join(missing)}; "
            f"fill it with {STRIPE_SHAPE}.",
            gateway="stripe",
        )
    return keys


def midtrans_keys() -> MidtransKeys:
    name = get_settings().midtrans_secret_name
    value = _read("Midtrans", name, MIDTRANS_SHAPE)
    server_key, client_key = _text(value, "server_key"), _text(value, "client_key")
    if not server_key:
        logger.error("secret %s lacks server_key", name)
        raise GatewayNotConfigured(
            f"Midtrans is not configured: the Secrets Manager secret {name!r} lacks server_key; "
            f"fill it with {MIDTRANS_SHAPE}.",
            gateway="midtrans",
        )
    production = value.get("is_production", False)
    if isinstance(production, str):  # operators type "true" as often as true
        production = production.strip().lower() == "true"
    return MidtransKeys(server_key=server_key, client_key=client_key, is_production=production is True)
