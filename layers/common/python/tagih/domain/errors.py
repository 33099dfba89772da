"""Domain errors. They say what went wrong in billing terms; ``api.errors`` maps each to HTTP."""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    """Base of every error a caller may see. ``message`` is safe to show; ``details`` is a list."""

    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, details: list[dict[str, Any]] | None = None) -> None:
        self.message = message or self.default_message
        self.details = details or []
        super().__init__(self.message)


# Access
class Unauthenticated(BillingError):
    default_message = "A valid bearer token or API key is required."


class Forbidden(BillingError):
    default_message = "Your role does not allow this action."


class OrganizationSuspended(BillingError):
    default_message = "This organization is suspended; billing changes are not allowed."


# Lookups (another organization's objects are reported as not found too)
class NotFound(BillingError):
    code = "not_found"
    default_message = "Not found."


class RouteNotFound(NotFound):
    code = "route_not_found"
    default_message = "No such route."


class PlanNotFound(NotFound):
    code = "plan_not_found"
    default_message = "No such plan."


class AddonNotFound(NotFound):
    code = "addon_not_found"
    default_message = "No such add-on."


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"
    default_message = "No such API key."


class BillingAccountNotFound(NotFound):
    code = "billing_account_not_found"
    default_message = "No such billing account."


class PaymentMethodNotFound(NotFound):
    code = "payment_method_not_found"
    default_message = "No such payment method."


class PaymentNotFound(NotFound):
    code = "payment_not_found"
    default_message = "No such payment."


# Conflicts
class Conflict(BillingError):
    code = "conflict"
    default_message = "The request conflicts with the current state."


class VersionConflict(Conflict):
    code = "version_conflict"
    default_message = "The object changed since you read it; read it again and retry."


class RequestInProgress(Conflict):
    code = "request_in_progress"
    default_message = "A request with this Idempotency-Key is still being processed."


class PaymentMethodInUse(Conflict):
    code = "payment_method_in_use"
    default_message = "This is the only payment method behind a paid subscription; add another first."


class BillingAccountInUse(Conflict):
    code = "billing_account_in_use"
    default_message = (
        "This is the default billing account of a paid subscription; cancel the subscription first."
    )


# Payments
class PaymentDeclined(BillingError):
    """The gateway refused the payment; ``reason`` is the gateway's words (402 payment_failed)."""

    default_message = "The payment was declined."

    def __init__(self, reason: str, *, gateway: str, decline_code: str | None = None) -> None:
        self.reason = reason
        self.gateway = gateway
        self.decline_code = decline_code
        details = [{"field": "payment", "reason": reason, "gateway": gateway, "decline_code": decline_code}]
        super().__init__(f"The payment was declined: {reason}", details)


class GatewayUnavailable(BillingError):
    """A transient gateway fault (timeout, 5xx, connection): nothing was recorded; retry later (503)."""

    default_message = "The payment gateway is unavailable; try again shortly."

    def __init__(self, message: str | None = None, *, gateway: str) -> None:
        self.gateway = gateway
        super().__init__(message)


class InvalidSignature(BillingError):
    """A gateway notification whose signature does not verify (401); nothing changes."""

    default_message = "The notification signature is not valid."


# Input
class InvalidRequest(BillingError):
    """A well-formed request the domain refuses (422 with its own code)."""

    code = "invalid_request"


class InvalidField(InvalidRequest):
    """A field the domain refuses in context (e.g. a bank for a Stripe method): the same 422
    ``validation_error`` as a schema error, naming the field."""

    code = "validation_error"

    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        super().__init__("The request is invalid.", [{"field": field, "message": message, "type": kind}])


class BillingAccountRequired(InvalidRequest):
    code = "billing_account_required"
    default_message = (
        "A Stripe payment method belongs to a billing account's Stripe customer; "
        "create a billing account first (POST /billing/accounts)."
    )


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used with a different request."


class MalformedJson(BillingError):
    default_message = "The request body is not valid JSON."


class PayloadTooLarge(BillingError):
    default_message = "The request body is too large."
