"""The resolver every HTTP function uses: validation, auth, roles, idempotency, errors.

Order of a request: body size → authorizer context → the route's role or scope → suspension
(writes) → Idempotency-Key (POST) → Powertools validation → route. Everything that can refuse a
request before routing runs first, so an unauthenticated caller learns nothing from a 422.

Test clocks (DESIGN.md "Time and test clocks"): outside prod, the route of an authenticated request
runs inside ``clock.frozen(<the organization's frozen time>)`` when the organization owns a test
clock. That costs one extra GetItem (``ORG#<org>``/``TESTCLOCK``) per request outside prod only; on
prod nothing is read. Idempotency records keep wall time (the override wraps the route alone).
Functions that never ask the time opt out (``test_clock=False``), as do operator routes (a scope):
they act on another organization than the caller's.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from itertools import accumulate
from typing import Any, cast

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih import clock
from tagih.api.auth import AuthContext, Role, auth_from_event
from tagih.api.errors import (
    error_response,
    from_billing_error,
    proxy_error,
    status_and_code,
    validation_details,
)
from tagih.api.idempotency import MAX_KEY_LENGTH, run_idempotent
from tagih.config import get_settings
from tagih.domain.errors import (
    BillingError,
    MalformedJson,
    OrganizationSuspended,
    PayloadTooLarge,
    RouteNotFound,
)
from tagih.store.organizations import is_suspended
from tagih.store.test_clocks import frozen_time_of

# Same service (from POWERTOOLS_SERVICE_NAME) as the handler's Logger, so both share one formatter and keys.
logger = Logger()

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPE = "application/json"
# No request of this API nests deeper than a handful of levels; 32 leaves room and stays far below
# what the JSON parser and pydantic recurse through safely.
MAX_JSON_DEPTH = 32


class RoutePolicy:
    """Who may call a route: a minimum role, or an operator scope. Keyed by the HTTP API routeKey.

    ``secret_fields`` name top-level response fields shown once (never kept for idempotent replay).
    """

    def __init__(
        self, role: Role | None = None, scope: str | None = None, secret_fields: tuple[str, ...] = ()
    ) -> None:
        self.role = role
        self.scope = scope
        self.secret_fields = secret_fields

    def check(self, auth: AuthContext) -> None:
        if self.scope:
            auth.require_scope(self.scope)
        if self.role:
            auth.require_role(self.role)


class TagihResolver(APIGatewayHttpResolver):
    def __init__(
        self,
        *,
        service: str,
        authenticated: bool = True,
        policies: Mapping[str, RoutePolicy] | None = None,
        test_clock: bool = True,
    ) -> None:
        super().__init__(enable_validation=True)
        self.service = service
        self.authenticated = authenticated
        self.test_clock = test_clock
        self.policies = dict(policies or {})
        self.exception_handler(RequestValidationError)(self._on_validation_error)
        self.exception_handler(BillingError)(self._on_billing_error)
        self.exception_handler(Exception)(self._on_unexpected_error)
        self.not_found()(self._on_route_not_found)

    # -- the request's principal, for route code -------------------------------------------------
    @property
    def auth(self) -> AuthContext:
        return cast(AuthContext, self.context["auth"])

    @property
    def idempotency_key(self) -> str | None:
        """The POST's ``Idempotency-Key`` (the kernel checked it), for a route whose retry after a
        crash must find what its first try wrote (``services.wallet.top_up``)."""
        if self.current_event.http_method != "POST":
            return None
        return self.current_event.headers.get("idempotency-key") or None

    @property
    def request_id(self) -> str:
        return str(self.current_event.request_context.request_id or "")

    # -- entry point ----------------------------------------------------------------------------
    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        event = _as_json_request(dict(event))
        request_id = str((event.get("requestContext") or {}).get("requestId", ""))
        method = str(((event.get("requestContext") or {}).get("http") or {}).get("method", "")).upper()
        try:
            self._check_body_size(event)
            auth = self._authorize(event, method) if self.authenticated else None
            event = _as_text_body(event)
        except BillingError as error:
            status, code = status_and_code(error)
            return proxy_error(status, code, error.message, request_id)

        def dispatch() -> dict[str, Any]:
            if auth is not None:
                self.context["auth"] = auth
                logger.append_keys(organization_id=auth.organization_id)
                frozen = self._frozen_time(auth, str(event.get("routeKey", "")))
                if frozen is not None:
                    with clock.frozen(frozen):
                        return super(TagihResolver, self).resolve(event, context)
            return super(TagihResolver, self).resolve(event, context)

        key = (event.get("headers") or {}).get("idempotency-key")
        if method != "POST" or key is None or auth is None:
            return dispatch()
        if not key or len(key) > MAX_KEY_LENGTH:
            result = error_response(
                422,
                "validation_error",
                "The request is invalid.",
                request_id,
                details=[
                    {
                        "field": "header.Idempotency-Key",
                        "message": "1 to 255 characters.",
                        "type": "string_length",
                    }
                ],
            )
            return self._build_response_dict(result)
        policy = self.policies.get(str(event.get("routeKey", "")))
        try:
            return run_idempotent(
                key=key,
                organization_id=auth.organization_id,
                function_name=self.service,
                event=event,
                context=context,
                call=dispatch,
                secret_fields=policy.secret_fields if policy else (),
            )
        except BillingError as error:
            status, code = status_and_code(error)
            return proxy_error(status, code, error.message, request_id)

    # -- pre-flight -----------------------------------------------------------------------------
    def _check_body_size(self, event: Mapping[str, Any]) -> None:
        body = event.get("body") or ""
        size = len(body.encode()) if isinstance(body, str) else len(body)
        if event.get("isBase64Encoded"):
            try:
                size = len(base64.b64decode(body, validate=False))
            except (binascii.Error, ValueError):
                size = len(body)
        if size > get_settings().max_body_bytes:
            raise PayloadTooLarge(f"The request body must be at most {get_settings().max_body_bytes} bytes.")

    def _authorize(self, event: Mapping[str, Any], method: str) -> AuthContext:
        auth = auth_from_event(event)
        route_key = str(event.get("routeKey", ""))
        policy = self.policies.get(route_key) or RoutePolicy(
            role="member" if method in READ_METHODS else "admin"
        )
        policy.check(auth)
        # A suspended organization reads but changes nothing (API.md); operator routes (a scope,
        # not a role) are how it is unsuspended, so they are not refused.
        if method not in READ_METHODS and policy.scope is None and is_suspended(auth.organization_id):
            raise OrganizationSuspended()
        return auth

    def _frozen_time(self, auth: AuthContext, route_key: str) -> datetime | None:
        """The organization's test clock time, or None for wall time (always None on prod)."""
        policy = self.policies.get(route_key)
        if not self.test_clock or get_settings().is_prod or (policy is not None and policy.scope):
            return None
        return frozen_time_of(auth.organization_id)

    def _build_response_dict(self, response: Response[Any]) -> dict[str, Any]:
        return {
            "statusCode": response.status_code,
            "headers": {"Content-Type": response.headers.get("Content-Type", "application/json")},
            "body": response.body,
            "isBase64Encoded": False,
        }

    # -- errors -----------------------------------------------------------------------------------
    def _on_validation_error(self, exc: RequestValidationError) -> Response[str]:
        errors = list(exc.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            return error_response(
                400, "malformed_json", "The request body is not valid JSON.", self.request_id
            )
        return error_response(
            422,
            "validation_error",
            "The request is invalid.",
            self.request_id,
            details=validation_details(errors),
        )

    def _on_billing_error(self, exc: BillingError) -> Response[str]:
        return from_billing_error(exc, self.request_id)

    def _on_unexpected_error(self, exc: Exception) -> Response[str]:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "An internal error occurred.", self.request_id)

    def _on_route_not_found(self, exc: Exception) -> Response[str]:
        return from_billing_error(RouteNotFound(), self.request_id)


def _as_text_body(event: dict[str, Any]) -> dict[str, Any]:
    """The body as the text every route reads, or 400 ``malformed_json`` before anything runs.

    API Gateway hands over a body it does not take for text base64-encoded; undecodable UTF-8 and
    JSON nested deeper than any request of this API would otherwise surface later as a
    ``UnicodeDecodeError`` or ``RecursionError`` (a 500) in whatever parses it first, the gateway
    notification routes included.
    """
    body = event.get("body")
    if not body:
        return event
    try:
        raw = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else None
        text = raw.decode("utf-8") if raw is not None else str(body)
        text.encode("utf-8")  # a lone surrogate (from a caller's own decoding) is not UTF-8 either
    except (binascii.Error, ValueError) as error:
        raise MalformedJson("The request body is not valid UTF-8.") from error
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        raise MalformedJson(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
    return {**event, "body": text, "isBase64Encoded": False}


def _nesting_depth(text: str) -> int:
    """How deep ``[``/``{`` nest outside strings, counted before parsing (the parser itself is what
    a deep body crashes); regular expressions keep the scan in C for large usage batches."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    brackets = _BRACKETS.findall(_STRING_LITERALS.sub("", text))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


_STRING_LITERALS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def _as_json_request(event: dict[str, Any]) -> dict[str, Any]:
    """The API speaks JSON only (API.md): a body sent untyped or as a form (``curl -d`` sends
    ``application/x-www-form-urlencoded``) is read as JSON, so it gets the same answer as one
    labelled right, and a body that is not JSON is 400 ``malformed_json`` whatever its label."""
    headers = event.get("headers") or {}
    content_type = str(headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if not event.get("body") or content_type == JSON_TYPE or content_type.endswith("+json"):
        return event
    return {**event, "headers": {**headers, "content-type": JSON_TYPE}}


def create_resolver(
    service: str,
    *,
    authenticated: bool = True,
    policies: Mapping[str, RoutePolicy] | None = None,
    test_clock: bool = True,
) -> TagihResolver:
    return TagihResolver(
        service=service, authenticated=authenticated, policies=policies, test_clock=test_clock
    )
