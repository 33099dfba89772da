"""The one table from error to HTTP status and ``error.code``, and the API.md error body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import Response

from tagih.domain import errors as e

JSON = "application/json"

# Ordered from specific to general: the first class an error is an instance of wins.
ERROR_TABLE: tuple[tuple[type[e.BillingError], int, str | None], ...] = (
    (e.Unauthenticated, 401, "unauthenticated"),
    (e.OrganizationSuspended, 403, "organization_suspended"),
    (e.Forbidden, 403, "forbidden"),
    (e.MalformedJson, 400, "malformed_json"),
    (e.PayloadTooLarge, 413, "payload_too_large"),
    (e.InvalidSignature, 401, "invalid_signature"),
    (e.PaymentDeclined, 402, "payment_failed"),
    (e.GatewayUnavailable, 503, "gateway_unavailable"),
    (e.ServiceUnavailable, 503, "service_unavailable"),
    (e.NotFound, 404, None),  # code from the class: plan_not_found, api_key_not_found, …
    (e.Conflict, 409, None),
    (e.InvalidRequest, 422, None),
)


def status_and_code(error: e.BillingError) -> tuple[int, str]:
    for cls, status, code in ERROR_TABLE:
        if isinstance(error, cls):
            return status, code or str(getattr(error, "code", "error"))
    return 500, "internal_error"


def error_body(code: str, message: str, request_id: str, details: list[dict[str, Any]] | None = None) -> str:
    return json.dumps(
        {"error": {"code": code, "message": message, "details": details or [], "request_id": request_id}}
    )


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[str]:
    return Response(
        status_code=status,
        content_type=JSON,
        body=error_body(code, message, request_id, details),
        headers=dict(headers or {}),
    )


def proxy_error(status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
    """The same error as a raw HTTP API v2 proxy result, for answers given before routing."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": JSON},
        "body": error_body(code, message, request_id),
        "isBase64Encoded": False,
    }


def from_billing_error(error: e.BillingError, request_id: str) -> Response[str]:
    status, code = status_and_code(error)
    return error_response(status, code, error.message, request_id, details=error.details)


def validation_details(errors: list[dict[str, Any]] | Any) -> list[dict[str, Any]]:
    """Pydantic/Powertools validation errors → one entry per field: ``{field, message, type}``."""
    details = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body",)] or ["body"]
        kind = err.get("type", "value_error")
        message = "Unknown field." if kind == "extra_forbidden" else str(err.get("msg", "Invalid value."))
        details.append({"field": ".".join(loc), "message": message, "type": kind})
    return details
