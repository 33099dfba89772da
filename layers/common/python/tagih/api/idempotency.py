"""``Idempotency-Key`` on every POST (API.md): Powertools idempotency, records in the single table.

The record key is ``IDEMPOTENCY#<org>`` / ``<function>#<hash of key>``, so keys are scoped to the
organization. The stored payload is the whole proxy result, replayed with
``Idempotent-Replayed: true``. The method, path and body are the payload that must match.
Responses that say the request itself was unusable (400, 413, 422 validation) and server errors
are not kept, so the client may retry the same key with a corrected request. A route's secret
fields (an API key shown once) are nulled in the stored record: the first response has them, a
replay says ``null`` instead of keeping a usable secret in the table for 24 h.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, cast

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih.config import get_settings
from tagih.domain.errors import IdempotencyKeyReused, RequestInProgress
from tagih.store.table import dynamodb_client

MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"
_UNKEPT_CODES = frozenset({"malformed_json", "payload_too_large", "validation_error"})


class _NotKept(Exception):
    """Control flow only: a result that must not be stored. Never leaves this module."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result


def _keep(result: Mapping[str, Any]) -> bool:
    status = int(result.get("statusCode", 500))
    if status >= 500 or status == 429:
        return False
    if status >= 400:
        try:
            code = json.loads(result.get("body") or "{}").get("error", {}).get("code")
        except (ValueError, AttributeError):
            return False
        return code not in _UNKEPT_CODES
    return True


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    headers = dict(response.get("headers") or {})
    headers[REPLAYED_HEADER] = "true"
    return {**response, "headers": headers}


def _without_secrets(result: dict[str, Any], secret_fields: tuple[str, ...]) -> dict[str, Any]:
    if not secret_fields:
        return result
    try:
        body = json.loads(result.get("body") or "")
    except ValueError:
        return result
    if not isinstance(body, dict):
        return result
    return {**result, "body": json.dumps({k: None if k in secret_fields else v for k, v in body.items()})}


def request_fingerprint(event: Mapping[str, Any]) -> dict[str, str]:
    http = (event.get("requestContext") or {}).get("http") or {}
    body = event.get("body") or ""
    return {
        "method": str(http.get("method", "")),
        "path": str(http.get("path", event.get("rawPath", ""))),
        "body_sha256": hashlib.sha256(body.encode()).hexdigest(),
    }


def run_idempotent(
    *,
    key: str,
    organization_id: str,
    function_name: str,
    event: Mapping[str, Any],
    context: LambdaContext | None,
    call: Callable[[], dict[str, Any]],
    secret_fields: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run ``call`` at most once per (organization, function, key); replay its kept result."""
    settings = get_settings()
    persistence = DynamoDBPersistenceLayer(
        table_name=settings.table_name,
        key_attr="PK",
        sort_key_attr="SK",
        static_pk_value=f"IDEMPOTENCY#{organization_id}",
        expiry_attr="ttl",
        boto3_client=dynamodb_client(),
    )
    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="request",
        expires_after_seconds=settings.idempotency_ttl_seconds,
        raise_on_no_idempotency_key=True,
        response_hook=_mark_replayed,
    )
    if context is not None:
        config.register_lambda_context(context)

    first: list[dict[str, Any]] = []  # the unredacted result, when this call ran the route

    def execute(request: dict[str, Any]) -> dict[str, Any]:
        result = call()
        if not _keep(result):
            raise _NotKept(result)
        first.append(result)
        return _without_secrets(result, secret_fields)

    once = idempotent_function(
        execute,
        data_keyword_argument="request",
        persistence_store=persistence,
        config=config,
        key_prefix=function_name,
    )
    try:
        stored = cast(dict[str, Any], once(request={"key": key, "request": request_fingerprint(event)}))
        return first[0] if first else stored
    except _NotKept as not_kept:
        return not_kept.result
    except IdempotencyValidationError as exc:
        raise IdempotencyKeyReused() from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise RequestInProgress() from exc
