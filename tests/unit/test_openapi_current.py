"""docs/openapi.json is what the handlers generate, covers exactly the template's routes, and
documents the API.md error envelope on every operation."""

from __future__ import annotations

import difflib
import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from tools.functions import load_functions
from tools.openapi import OUTPUT, build_document, render

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_committed_document_is_what_the_handlers_generate(document: dict[str, Any]) -> None:
    committed = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    fresh = render(document)
    if committed != fresh:
        lines = difflib.unified_diff(
            committed.splitlines(), fresh.splitlines(), "committed", "generated", lineterm=""
        )
        diff = "\n".join(list(lines)[:40])
        pytest.fail(f"docs/openapi.json is stale: run `make openapi` and commit it.\n{diff}")


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def test_operations_are_exactly_the_template_routes(document: dict[str, Any]) -> None:
    template_routes = {(r.method, r.path) for f in load_functions() for r in f.routes}
    documented = {(method, path) for method, path, _ in operations(document)}
    assert documented == template_routes, (
        f"only in code: {sorted(documented - template_routes)}; "
        f"only in template.yaml: {sorted(template_routes - documented)}"
    )


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


ERROR = {"$ref": "#/components/schemas/Error"}
GATEWAY = {"$ref": "#/components/schemas/GatewayMessage"}
# What each shared status answers: the kernel's envelope, API Gateway's own {"message"} body, or either.
SHARED_BODIES = {
    "400": ERROR,
    "401": {"anyOf": [ERROR, GATEWAY]},
    "403": ERROR,
    "404": ERROR,
    "409": ERROR,
    "413": {"anyOf": [ERROR, GATEWAY]},
    "422": ERROR,
    "429": GATEWAY,
    "503": {"anyOf": [ERROR, GATEWAY]},
}


@pytest.mark.parametrize("status", sorted(SHARED_BODIES))
def test_every_operation_documents_the_error_envelope(document: dict[str, Any], status: str) -> None:
    for method, path, operation in operations(document):
        response = resolve(document, operation["responses"][status])
        schema = response["content"]["application/json"]["schema"]
        assert schema == SHARED_BODIES[status], f"{method} {path} {status}"
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_error_a_route_documents_has_a_real_body(document: dict[str, Any]) -> None:
    """A route's own 402 or 409 keeps its words but answers the envelope, never its success model."""
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if status[0] in "45":
                schema = resolve(document, response)["content"]["application/json"]["schema"]
                assert schema in (ERROR, SHARED_BODIES.get(status)), f"{method} {path} {status}: {schema}"


def test_every_operation_documents_its_success_with_a_body(document: dict[str, Any]) -> None:
    """Powertools drops the success response of a route that lists ``responses=`` (15 of 54 did)."""
    missing = []
    for method, path, operation in operations(document):
        success = [status for status in operation["responses"] if status.startswith("2")]
        if len(success) != 1 or not operation["responses"][success[0]].get("content"):
            missing.append(f"{method} {path}")
    assert not missing, missing


def test_the_gateway_body_is_api_gateways_own(document: dict[str, Any]) -> None:
    """What the local front (like API Gateway) answers without calling a function: ``{"message"}``,
    which the envelope's schema (``error`` required) would refuse."""
    schemas = document["components"]["schemas"]
    assert schemas["GatewayMessage"]["required"] == ["message"]
    assert schemas["GatewayMessage"]["properties"]["message"]["type"] == "string"
    assert schemas["Error"]["required"] == ["error"]


def test_authorizer_security_applies_unless_the_route_has_none(document: dict[str, Any]) -> None:
    assert document["security"] == [{"bearerAuth": [], "organizationId": []}]
    assert document["components"]["securitySchemes"]["organizationId"]["name"] == "X-Organization-ID"
    public = {(r.method, r.path) for f in load_functions() for r in f.routes if not r.authorized}
    for method, path, operation in operations(document):
        assert (operation.get("security") == []) == ((method, path) in public), f"{method} {path}"


def test_every_post_documents_the_idempotency_key(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        if method == "POST":
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            assert "Idempotency-Key" in names, f"{method} {path}"


def test_limits_the_code_enforces_are_stated(document: dict[str, Any]) -> None:
    """What Schemathesis found the code refusing while the document allowed it."""
    schemas = document["components"]["schemas"]
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                schema = parameter["schema"]
                where = f"{method} {path} {parameter['name']}: {schema}"
                assert schema.get("pattern"), where
                assert schema.get("maxLength") or "{0,62}" in schema["pattern"], where
    assert schemas["UsageEvent"]["properties"]["metric"]["pattern"]
    assert "null" not in json.dumps(schemas["UpdateBillingAccount"]["properties"]["currency"])
    assert len(schemas["AttachAddon"]["oneOf"]) == 2
    assert schemas["Address"]["properties"]["country"]["pattern"] == "^[A-Za-z]{2}$"
