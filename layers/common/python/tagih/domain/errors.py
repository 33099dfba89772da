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


class SubscriptionAddonNotFound(NotFound):
    code = "subscription_addon_not_found"
    default_message = "No such add-on on this subscription."


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"
    default_message = "No such API key."


class BillingAccountNotFound(NotFound):
    code = "billing_account_not_found"
    default_message = "No such billing account."


class PaymentMethodNotFound(NotFound):
    code = "payment_method_not_found"
    default_message = "No such payment method."


class GatewayReferenceNotFound(PaymentMethodNotFound):
    """A card token or gateway reference Tagih did not verify for this organization: unknown, or
    another organization's (the same answer for both, so neither is revealed)."""

    default_message = "No payment method with that token or reference in this organization."


class WebhookEndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"
    default_message = "No such webhook endpoint."


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


class AddonAlreadyAttached(Conflict):
    code = "addon_already_attached"
    default_message = "The add-on is already attached; change its quantity instead."


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


class WebhookEndpointLimitReached(Conflict):
    code = "webhook_endpoint_limit_reached"
    default_message = "The organization has the most webhook endpoints allowed; delete one first."


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


class ServiceUnavailable(BillingError):
    """A transient fault of a service Tagih depends on (not a gateway); nothing changed (503)."""

    default_message = "Billing is temporarily unavailable; try again shortly."


class GatewayUnavailable(BillingError):
    """A transient gateway fault (timeout, 5xx, connection); retry later (503).

    ``nothing_charged`` is the adapter's word that the gateway refused before doing anything (our
    keys, a rate limit, no secret): only then may a charge's claim be released. Any other fault
    may have happened after the money was taken (a read timeout): see ``ChargeInDoubt``."""

    default_message = "The payment gateway is unavailable; try again shortly."

    def __init__(self, message: str | None = None, *, gateway: str, nothing_charged: bool = False) -> None:
        self.gateway = gateway
        self.nothing_charged = nothing_charged
        super().__init__(message)


class ChargeInDoubt(GatewayUnavailable):
    """The gateway did not answer a charge it may have made: the attempt stays claimed, and a retry
    (the same ``Idempotency-Key``, the timer, the janitor) asks again under the same reference, so
    the money is taken at most once and never left unrecorded (503)."""

    default_message = (
        "The payment gateway did not answer; the charge may have been made. Retry with the same "
        "Idempotency-Key to learn its outcome: it is never charged twice."
    )


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


# Invoices (``domain.invoices``): each refused status change names what the invoice would need to be.
class InvoiceNotFound(NotFound):
    code = "invoice_not_found"
    default_message = "No such invoice."


class InvoiceNotDraft(Conflict):
    code = "invoice_not_draft"
    default_message = "Only a draft invoice can be finalized or edited."


class InvoiceNotOpen(Conflict):
    code = "invoice_not_open"
    default_message = "This needs an open or overdue invoice."


class InvoiceNotPayable(Conflict):
    code = "invoice_not_payable"
    default_message = "This invoice cannot be paid: it is a draft or void."


class InvoiceNotDue(Conflict):
    code = "invoice_not_due"
    default_message = "This invoice is not past its due date yet."


class InvoiceAmountMismatch(Conflict):
    code = "invoice_amount_mismatch"
    default_message = "The amount paid is not the amount due on this invoice."


# Subscriptions
class AlreadySubscribed(Conflict):
    code = "already_subscribed"
    default_message = "The organization already has a subscription; change or reactivate it instead."


class ContactSales(Conflict):
    code = "contact_sales"
    default_message = "This plan has custom pricing; contact sales to subscribe."


class PlanNotSubscribable(InvalidRequest):
    code = "plan_not_subscribable"
    default_message = "This plan cannot be subscribed to."


class PaymentMethodRequired(InvalidRequest):
    code = "payment_method_required"
    default_message = "This plan has no trial for the organization; add a payment method to subscribe."


class CurrencyMismatch(InvalidRequest):
    code = "currency_mismatch"
    default_message = "The plan is priced in another currency than the organization is billed in."


class SubscriptionNotActive(Conflict):
    code = "subscription_not_active"
    default_message = "The subscription is not active."


class AlreadyCancelled(Conflict):
    code = "already_cancelled"
    default_message = "The subscription is already cancelled."


class NotInGracePeriod(Conflict):
    code = "not_in_grace_period"
    default_message = "Only a subscription cancelled and still in its grace period can be reactivated."


class GracePeriodOver(Conflict):
    code = "grace_period_over"
    default_message = "The grace period is over; subscribe again."


class AlreadySuspended(Conflict):
    code = "already_suspended"
    default_message = "The organization is already suspended."


class NotSuspended(Conflict):
    code = "not_suspended"
    default_message = "The organization is not suspended."


class SubscriptionNotFound(NotFound):
    code = "subscription_not_found"
    default_message = "No such subscription."


# Test clocks (any stage but prod)
class TestClockNotFound(NotFound):
    code = "test_clock_not_found"
    default_message = "This organization has no test clock."


class TestClockExists(Conflict):
    code = "test_clock_exists"
    default_message = "This organization already has a test clock; advance it instead."


class TestClockTooLate(Conflict):
    code = "test_clock_too_late"
    default_message = "A test clock is attached before the organization's first subscription."
