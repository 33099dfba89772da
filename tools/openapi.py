"""docs/openapi.json: the OpenAPI documents of every HTTP function's resolver, merged into one.

    python -m tools.openapi            print the document
    python -m tools.openapi --write    write docs/openapi.json
    python -m tools.openapi --check    exit 1 when docs/openapi.json is stale

Each function's routes, parameters and response models come from its Powertools resolver
(``app.get_openapi_schema``); this module adds what is the same for every operation and lives in
the kernel rather than in a route: the bearer + ``X-Organization-ID`` security of the authorizer,
the API.md error envelope for 400/401/403/404/409/413/422, and the answers API Gateway gives itself
before or instead of a function (401 without an identity header, 413 over its payload limit, 429
throttled, 503 when the function does not answer in time) with their ``{"message": …}`` body: an
HTTP API has no gateway responses to customise (those are REST API only), so that body is what a
client gets and is documented beside the envelope. Powertools' own 422 body
(``HTTPValidationError``) is replaced, since the kernel answers validation errors in the API.md
envelope. Output is deterministic (sorted keys, indent 2, trailing newline) so a stale file is
a plain text difference.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from tests.fakes.lambda_runtime import ROOT
from tools.functions import Function, import_handler_module, load_functions

OUTPUT = ROOT / "docs" / "openapi.json"
TITLE = "Tagih billing API"
OPENAPI_VERSION = "3.1.0"
LOCAL_ONLY_PREFIXES = ("/_local", "/docs")  # served by the local stack only, never deployed

DESCRIPTION = (
    "Tagih's HTTP API. The conventions shared by every route are in API.md (section "
    "*Conventions*): `Authorization: Bearer <JWT or org API key>` plus `X-Organization-ID`; one "
    'list envelope `{"items", "total", "page", "page_size", "has_next", "has_prev"}`; '
    "`Idempotency-Key` on every POST (replays carry `Idempotent-Replayed: true`); amounts are "
    "integers in the currency's unit; errors are "
    '`{"error": {"code", "message", "details", "request_id"}}`.'
)

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An RS256 JWT from the configured identity provider, or an org API key "
        "(`tk_live_…`, `tk_test_…`).",
    },
    "organizationId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Organization-ID",
        "description": "The organization the request acts for; a JWT must list it in its "
        "membership claim, an API key is bound to it.",
    },
}
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": [], "organizationId": []}]

ERROR_SCHEMAS: dict[str, Any] = {
    "Error": {
        "title": "Error",
        "description": "The error envelope of every non-2xx answer (API.md, Conventions).",
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details", "request_id"],
                "properties": {
                    "code": {"type": "string", "examples": ["plan_not_found", "validation_error"]},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
                    "request_id": {"type": "string"},
                },
            }
        },
    },
    "GatewayMessage": {
        "title": "GatewayMessage",
        "description": "API Gateway's own answer, given without calling a function: "
        '`{"message": "Unauthorized"}` (401: the `Authorization` or `X-Organization-ID` header is '
        'missing), `{"message": "Request Entity Too Large"}` (413: over the gateway\'s payload limit), '
        '`{"message": "Too Many Requests"}` (429: throttled), `{"message": "Service Unavailable"}` '
        "(503: the function did not answer in time).",
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string", "examples": ["Unauthorized", "Too Many Requests"]}},
    },
    "ErrorDetail": {
        "title": "ErrorDetail",
        "description": "For validation errors, one entry per offending field.",
        "type": "object",
        "properties": {
            "field": {"type": "string", "examples": ["query.page_size", "body.plan"]},
            "message": {"type": "string"},
            "type": {"type": "string", "examples": ["less_than_equal", "extra_forbidden"]},
        },
    },
}

ERROR_REF = {"$ref": "#/components/schemas/Error"}
GATEWAY_REF = {"$ref": "#/components/schemas/GatewayMessage"}
# The kernel's envelope, or API Gateway's own body for the same status.
ERROR_OR_GATEWAY = {"anyOf": [ERROR_REF, GATEWAY_REF]}
POWERTOOLS_422 = "#/components/schemas/HTTPValidationError"  # Powertools' body, replaced by the kernel's
IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Replays the first response for 24 h (`Idempotent-Replayed: true`); the same key "
    "with another body is a 422 `idempotency_key_reused`, while the first runs a 409 `request_in_progress`.",
}

# status → (components/responses name, description, body schema); every operation references all
# of them (a route's own words for a status replace the description, never the body).
ERROR_RESPONSES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "400": (
        "BadRequest",
        "`malformed_json`: the body is not valid JSON or UTF-8, or nests deeper than 32 levels.",
        ERROR_REF,
    ),
    "401": (
        "Unauthenticated",
        "`unauthenticated`: the bearer token or API key is not valid (the envelope); API Gateway's "
        '`{"message": "Unauthorized"}` when `Authorization` or `X-Organization-ID` is missing.',
        ERROR_OR_GATEWAY,
    ),
    "403": ("Forbidden", "`forbidden` (role or scope) or `organization_suspended`.", ERROR_REF),
    "404": ("NotFound", "`*_not_found`, also for another organization's objects.", ERROR_REF),
    "409": ("Conflict", "A conflict such as `version_conflict` or `request_in_progress`.", ERROR_REF),
    "413": (
        "PayloadTooLarge",
        "`payload_too_large`: the body exceeds the function's size limit; API Gateway's "
        '`{"message": "Request Entity Too Large"}` over its own.',
        ERROR_OR_GATEWAY,
    ),
    "422": (
        "ValidationError",
        "`validation_error` with `details` naming each field, or another "
        "refusal of the request's content such as `idempotency_key_reused`.",
        ERROR_REF,
    ),
    "429": ("TooManyRequests", 'API Gateway\'s `{"message": "Too Many Requests"}`: throttled.', GATEWAY_REF),
    "503": (
        "ServiceUnavailable",
        "`gateway_unavailable` or `service_unavailable` (try again); API Gateway's "
        '`{"message": "Service Unavailable"}` when the function did not answer in time.',
        ERROR_OR_GATEWAY,
    ),
}
# What every path id is made of: Tagih's ids (prefix, `_`, base62: tagih/ids.py), organization ids
# (``ORGANIZATION_ID_PATTERN`` in tagih/domain/text.py) and metric names. The code measures an id's
# 64 characters on the raw, percent-encoded path (Powertools matches rawPath), so an id with any other
# character is longer than it looks; stating the alphabet makes the documented limit the real one.
PATH_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
SUCCESS_DESCRIPTION = "Successful Response"  # Powertools' words for a route that names no responses


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def function_document(function: Function) -> dict[str, Any]:
    """The OpenAPI document Powertools builds for one function's resolver, as plain JSON."""
    module = import_handler_module(function)
    app = getattr(module, "app", None)
    if app is None or not hasattr(app, "get_openapi_schema"):
        raise ValueError(f"{function.logical_id} has HttpApi routes but no Powertools resolver named app")
    _document_success(app)
    schema = app.get_openapi_schema(title=TITLE, version=project_version(), openapi_version=OPENAPI_VERSION)
    return dict(json.loads(schema.model_dump_json(by_alias=True, exclude_none=True)))


def _document_success(app: Any) -> None:
    """A route that lists its own ``responses=`` (a 402, a 409 code) gets no success response from
    Powertools, which adds the ``status_code`` answer only when ``responses`` is empty: add it, with
    no ``content``, so Powertools fills it from the route's return annotation as for any other."""
    for route in [*app._static_routes, *app._dynamic_routes]:
        if route.responses and route.status_code not in route.responses:
            success = {"description": route.response_description or SUCCESS_DESCRIPTION}
            route.responses = {route.status_code: success, **route.responses}


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _reachable_schemas(paths: Mapping[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """Drop schemas nothing refers to any more (Powertools' HTTPValidationError and its parts)."""
    prefix = "#/components/schemas/"
    seen: set[str] = set()
    pending = [ref.removeprefix(prefix) for ref in _refs(paths) if ref.startswith(prefix)]
    while pending:
        name = pending.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        pending.extend(ref.removeprefix(prefix) for ref in _refs(schemas[name]) if ref.startswith(prefix))
    return {name: schemas[name] for name in sorted(seen)}


def _kernel_responses(operation: dict[str, Any]) -> None:
    """Every error status answers the API.md envelope: the shared responses, or a route's own."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, response in responses.items():
        # A route may document its own error (a 409 code, a 402): keep its words, not its body.
        if status[0] in "45" and POWERTOOLS_422 not in json.dumps(response):
            shared = ERROR_RESPONSES.get(status)
            response["content"] = {"application/json": {"schema": shared[2] if shared else ERROR_REF}}
    for status, (name, _, _) in ERROR_RESPONSES.items():
        own = responses.get(status)
        if own is None or POWERTOOLS_422 in json.dumps(own):
            responses[status] = {"$ref": f"#/components/responses/{name}"}


def _kernel_parameters(method: str, operation: dict[str, Any]) -> None:
    """Every POST accepts Idempotency-Key (API.md): the kernel handles it, so no route declares it.
    Every path id states its alphabet (``PATH_ID_PATTERN``) unless its route gave a pattern."""
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if parameter.get("in") == "path" and schema.get("type") == "string" and "pattern" not in schema:
            schema["pattern"] = PATH_ID_PATTERN
    if method != "post":
        return
    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    if not any(p.get("name", "").lower() == "idempotency-key" for p in parameters):
        parameters.append(IDEMPOTENCY_KEY)


def build_document(functions: list[Function] | None = None) -> dict[str, Any]:
    functions = load_functions() if functions is None else functions
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = dict(ERROR_SCHEMAS)
    schema_owner: dict[str, str] = dict.fromkeys(ERROR_SCHEMAS, "tools.openapi")
    tags: set[str] = set()
    for function in functions:
        if not function.routes:
            continue
        document = function_document(function)
        public = {(r.method.lower(), r.path) for r in function.routes if not r.authorized}
        for path, item in document.get("paths", {}).items():
            if path.startswith(LOCAL_ONLY_PREFIXES):
                continue
            for method, operation in item.items():
                if method in paths.get(path, {}):
                    raise ValueError(f"{method.upper()} {path} is defined by two functions")
                _kernel_responses(operation)
                _kernel_parameters(method, operation)
                if (method, path) in public:
                    operation["security"] = []  # no authorizer: signature-checked or token-in-URL
                tags.update(operation.get("tags", []))
                paths.setdefault(path, {})[method] = operation
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            if name in schemas and schemas[name] != schema:
                raise ValueError(
                    f"schema {name!r} differs between {schema_owner[name]} and {function.logical_id}; "
                    "rename one of the models"
                )
            schemas.setdefault(name, schema)
            schema_owner.setdefault(name, function.logical_id)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": project_version(), "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": SECURITY,
        "tags": [{"name": tag} for tag in sorted(tags)],
        "paths": paths,
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "responses": {
                name: {"description": description, "content": {"application/json": {"schema": schema}}}
                for name, description, schema in ERROR_RESPONSES.values()
            },
            "schemas": {**_reachable_schemas(paths, schemas), **ERROR_SCHEMAS},
        },
    }


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.openapi", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {OUTPUT.relative_to(ROOT)}")
    mode.add_argument("--check", action="store_true", help="exit 1 when the committed file is stale")
    args = parser.parse_args(argv)
    text = render(build_document())
    if args.write:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
        return 0
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(), text.splitlines(), "docs/openapi.json (committed)", "generated", lineterm=""
        )
        print("\n".join(list(diff)[:60]), file=sys.stderr)
        print("docs/openapi.json is stale: run `make openapi` and commit it.", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
