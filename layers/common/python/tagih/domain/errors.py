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


# Input
class InvalidRequest(BillingError):
    """A well-formed request the domain refuses (422 with its own code)."""

    code = "invalid_request"


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used with a different request."


class MalformedJson(BillingError):
    default_message = "The request body is not valid JSON."


class PayloadTooLarge(BillingError):
    default_message = "The request body is too large."
