"""Schemathesis hooks for ``test_schemathesis.py`` (loaded by the CLI through SCHEMATHESIS_HOOKS).

One thing is changed from what Schemathesis would send, for a reason outside the schema:

- **A fresh ``Idempotency-Key`` per request.** Schemathesis draws the header from its schema
  (1 to 255 characters) and so sends ``"0"`` again and again with other bodies, which the API answers,
  as documented, 422 ``idempotency_key_reused``; a real client sends a new key per operation. Replays
  are tested in tests/integration/test_idempotency.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # At call time, so every phase (the coverage phase draws its own headers) sends a fresh key; a
    # key outside 1-255 characters is left as drawn, since a negative case expects its 422.
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and 1 <= len(key) <= 255:
        case.headers["Idempotency-Key"] = f"st-{uuid.uuid4().hex}"


# Refusals of schema-valid data that are business rules reported as a field's validation error,
# not a schema the code is stricter than: (method, path) → the fields such a refusal may name.
STATEFUL_FIELD_RULES: dict[tuple[str, str], frozenset[str]] = {
    # `to` must be later than the clock's current frozen_time, which only the server knows.
    ("POST", "/billing/test-clock/advance"): frozenset({"to"}),
    # The host must resolve to a public address; the test machine resolves no outside name.
    ("POST", "/billing/webhooks"): frozenset({"url"}),
    # Which of token / gateway_payment_method_id / bank / provider a method type needs is decided in
    # the service and not yet stated in the schema: left for the payment-method binding change
    # (issue 16 item 1), which rewrites these rules; state them as the schema's if/then there.
    ("POST", "/billing/payment-methods"): frozenset(
        {"token", "gateway_payment_method_id", "bank", "provider"}
    ),
}
SCHEMA_REFUSALS = frozenset({"validation_error", "malformed_json"})


def _beyond_the_schema(detail: dict[str, Any]) -> bool:
    """A field refusal no JSON Schema keyword can state, so schema-valid data may meet it."""
    field, kind, message = str(detail.get("field", "")), detail.get("type"), str(detail.get("message"))
    # JSON Schema counts 242.0 as an integer; money and counts are strict integers here (a float
    # never becomes an amount): a representation, not a limit.
    if kind == "int_type":
        return True
    # `format: email` is the schema's word; email-validator also refuses special-use domains
    # (`.test`, `.invalid`) and other addresses no mail reaches, which no keyword lists.
    if field == "email" and "email" in message:
        return True
    # A country is two letters in the schema; which pairs are assigned ISO 3166 codes is the code's
    # list (CountryCode in tagih/domain/accounts.py).
    return field.endswith("country")


def _refused_as_invalid(response: Any) -> dict[str, Any] | None:
    """The API.md error of a 400/422 that says the request itself is invalid, else None."""
    if response.status_code not in (400, 422):
        return None
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return None
    return error if error.get("code") in SCHEMA_REFUSALS else None


@schemathesis.check
def valid_data_not_refused_as_invalid(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' ``positive_data_acceptance``, made to tell a schema mismatch from a business
    rule: schema-valid data may be refused with the rule's own code (402 ``payment_failed``, 422
    ``payment_method_required``, ``currency_mismatch``, 409 ``already_subscribed``…, all documented),
    but never as ``validation_error`` or ``malformed_json``, which would mean the code enforces a
    limit the document does not state."""
    meta = case.meta
    positive = meta is not None and meta.generation.mode.is_positive
    if not positive or case.method.upper() != case.operation.method.upper():
        return None
    error = _refused_as_invalid(response)
    if error is None:
        return None
    details = error.get("details") or []
    allowed = STATEFUL_FIELD_RULES.get((case.method.upper(), case.operation.path), frozenset())
    if details and all(d.get("field") in allowed or _beyond_the_schema(d) for d in details):
        return None
    raise AssertionError(
        f"schema-valid data refused as {error.get('code')}: {details or error.get('message')}"
    )
