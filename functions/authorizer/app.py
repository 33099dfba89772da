"""HTTP API Lambda authorizer (payload 2.0, simple responses): RS256 JWTs and organization API keys.

Always answers ``isAuthorized: true`` with the principal or the refusal in the context; the
resolver of each function turns a refusal into API.md's 401/403. No resolver and no pydantic
here: this runs before every uncached request, so its cold start is kept small.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih.identity import (
    Authenticator,
    AuthorizerSettings,
    JwksKeySource,
    SigningKeysUnavailable,
    authorize,
)
from tagih.observability import TRACED_LIBRARIES
from tagih.store.api_keys import api_key_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()


@cache
def authenticator(settings: AuthorizerSettings) -> Authenticator:
    """One per configuration, kept for the life of the process (JWKS cache, DynamoDB client)."""
    return Authenticator(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        org_claim=settings.org_claim,
        operator_scope=settings.operator_scope,
        signing_keys=JwksKeySource(settings.jwks_url),
        api_keys=api_key_items(settings.table_name),
    )


# log_event=False whatever the environment says: the event carries the bearer token.
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        answer = authorize(event, authenticator(AuthorizerSettings.from_environment()))
    except SigningKeysUnavailable:
        # Raising makes API Gateway answer 500 without caching it; a refusal would be cached
        # for the token and lock its holder out while the identity provider recovers.
        logger.exception("JWKS unavailable")
        raise
    decision = answer["context"]
    if "auth_error" in decision:
        metrics.add_metric(name="AuthorizerRefusals", unit=MetricUnit.Count, value=1)
        logger.info(
            "refused", extra={"auth_error": decision["auth_error"], "reason": decision["auth_message"]}
        )
    else:
        logger.info(
            "authorized",
            extra={k: decision[k] for k in ("organization_id", "role", "subject", "method")},
        )
    return answer
