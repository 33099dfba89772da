"""Stripe through the stripe SDK: a Customer per billing account, saved cards, off-session PaymentIntents.

Imported only by ``gateways.registry`` when a Stripe call is about to happen, so stripe (and requests)
load only on payment code paths. Nothing global of the SDK is touched: one ``StripeClient`` per secret
key, never ``stripe.api_key``.

What the SDK does not do and this adapter adds:
- configuration from settings: the API base (the local stack points it at localstripe), a timeout on
  every request (the SDK's default is 80 s, far beyond API Gateway's 30 s) and network retries;
- idempotency: every POST carries a key derived from what it is for (the account, the card and its
  customer, the charge reference), so the SDK's retries and Tagih's own retries of an attempt are
  replayed by Stripe instead of charging twice;
- amounts converted at the boundary: Tagih keeps IDR in whole rupiah, Stripe counts IDR in
  hundredths (29900000 is Rp 299.000); the other currencies are cents on both sides;
- mapping of Stripe's errors to a declined result (the payer's or the request's fault) or
  ``GatewayUnavailable`` (Stripe, the network or our own keys — nothing the payer can fix);
- webhook verification that also refuses timestamps from the future.

Card data: cards are tokenised by Stripe.js; only PaymentMethod ids, card brand and last4 pass through
here. Tokens, SDK objects and Stripe's response bodies are never logged; ids and states are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

import stripe

from tagih.config import Settings, get_settings
from tagih.domain.errors import (
    GatewayReferenceNotFound,
    GatewayUnavailable,
    InvalidSignature,
    PaymentDeclined,
)
from tagih.domain.gateway import (
    AttachedMethod,
    AttachRequest,
    ChargeRequest,
    ChargeResult,
    Customer,
    GatewayNotification,
    PaymentStatus,
)
from tagih.domain.gateway_names import GatewayName, PaymentState
from tagih.domain.money import ZERO_DECIMAL
from tagih.gateways.secrets import StripeKeys

logger = logging.getLogger(__name__)

T = TypeVar("T")

GATEWAY: Final = "stripe"
METHOD_PREFIX: Final = "pm_"
# Retrying is safe because every POST carries an idempotency key; timeouts and connection errors, 409
# (a concurrent request with the same key) and 5xx are retried by the SDK with backoff. The settings'
# timeout is the budget of the whole call, shared by the tries: 8 s by default gives two tries of 4 s
# and under half a second of backoff, well inside API Gateway's 30 s.
NETWORK_RETRIES: Final = 1
# Stripe's own default tolerance. Replays within it are harmless: events are deduplicated by id.
WEBHOOK_TOLERANCE_SECONDS: Final = 300
# A signature dated ahead of our clock is refused beyond this much skew (Lambda clocks are NTP-synced;
# 30 s covers drift without letting a captured future-dated signature outlive the tolerance window).
WEBHOOK_CLOCK_SKEW_SECONDS: Final = 30
SIGNATURE_HEADER: Final = "stripe-signature"
# Stripe counts these currencies in hundredths where Tagih counts whole units (money.ZERO_DECIMAL).
HUNDREDTHS_AT_STRIPE: Final = 100
AUTHENTICATION_REQUIRED: Final = "Your card was declined. This transaction requires authentication."

# What a PaymentIntent's status means for the payment (requires_payment_method: see payment_state).
_PENDING_STATUSES: Final = frozenset(
    {"processing", "requires_action", "requires_confirmation", "requires_capture"}
)
# The claim of an event; Tagih re-checks it with fetch_status before acting on it.
_EVENT_STATES: Final[dict[str, PaymentState]] = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "payment_intent.canceled": "failed",
    "payment_intent.processing": "pending",
    "payment_intent.requires_action": "pending",
    "payment_intent.created": "pending",
    "payment_intent.amount_capturable_updated": "pending",
    "payment_intent.partially_funded": "pending",
}


# -- amounts ----------------------------------------------------------------------------------------
def _factor(currency: str) -> int:
    return HUNDREDTHS_AT_STRIPE if currency.upper() in ZERO_DECIMAL else 1


def to_stripe_amount(amount: int, currency: str) -> int:
    """Tagih's amount as Stripe's: IDR 299000 (rupiah) → 29900000; USD 1999 (cents) stays 1999."""
    return amount * _factor(currency)


def from_stripe_amount(amount: int, currency: str) -> int:
    """Stripe's amount in Tagih's unit. A fraction of a rupiah is dropped, never rounded up, so an
    amount Tagih did not ask for cannot come out equal to an invoice's."""
    return amount // _factor(currency)


# -- idempotency keys -------------------------------------------------------------------------------
def charge_idempotency_key(organization_id: str, reference: str) -> str:
    """One PaymentIntent per charge attempt: ``reference`` is ``<invoice>-a<attempt>``."""
    return f"tagih-charge-{organization_id}-{reference}"


def customer_idempotency_key(account_id: str) -> str:
    return f"tagih-customer-{account_id}"


def _attached_card(method: stripe.PaymentMethod) -> AttachedMethod:
    card = method.card
    if method.type != "card" or card is None:
        raise PaymentDeclined(
            "Only cards can be saved with Stripe.", gateway=GATEWAY, decline_code="unsupported_method"
        )
    # Stripe.js test ids (pm_card_visa) attach as a new PaymentMethod: keep the id Stripe answers.
    return AttachedMethod(
        gateway=GATEWAY,
        gateway_payment_method_id=method.id,
        type="credit_card",
        brand=card.brand,
        last4=card.last4,
    )


def _attach_idempotency_key(customer_id: str, payment_method: str) -> str:
    # Hashed: the key is echoed in Stripe's idempotency errors, and the token stays out of them.
    digest = hashlib.sha256(f"{customer_id}:{payment_method}".encode()).hexdigest()[:40]
    return f"tagih-attach-{digest}"


# -- mapping helpers --------------------------------------------------------------------------------
def payment_state(status: str | None, *, failed_attempt: bool = False) -> PaymentState:
    """A PaymentIntent status in the port's terms.

    ``requires_payment_method`` is where a PaymentIntent returns after a failed attempt (a decline,
    failed authentication) — failed; before any attempt it is still open — pending.
    """
    if status == "succeeded":
        return "succeeded"
    if status == "canceled":
        return "failed"
    if status == "requires_payment_method":
        return "failed" if failed_attempt else "pending"
    if status in _PENDING_STATUSES:
        return "pending"
    return "unknown"


@dataclass(frozen=True)
class _Intent:
    """The fields of a PaymentIntent Tagih reads, from an SDK object or a webhook's JSON alike."""

    id: str
    status: str
    amount: int  # Stripe's unit
    currency: str  # upper-case
    reference: str | None
    failure_message: str | None

    @property
    def state(self) -> PaymentState:
        return payment_state(self.status, failed_attempt=self.failure_message is not None)

    @property
    def tagih_amount(self) -> int:
        return from_stripe_amount(self.amount, self.currency)


def _intent(data: Mapping[str, Any]) -> _Intent:
    metadata = data.get("metadata")
    reference = metadata.get("reference") if isinstance(metadata, Mapping) else None
    error = data.get("last_payment_error")
    failure: str | None = None
    if isinstance(error, Mapping):
        failure = str(error.get("message") or error.get("code") or "declined")
    amount = data.get("amount")
    return _Intent(
        id=str(data.get("id") or ""),
        status=str(data.get("status") or ""),
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else 0,
        currency=str(data.get("currency") or "").upper(),
        reference=str(reference) if reference else None,
        failure_message=failure,
    )


def _intent_of(obj: stripe.StripeObject | None) -> _Intent | None:
    return _intent(obj.to_dict()) if obj is not None else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """API Gateway (HTTP API) lower-cases header names; other callers may not."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _signed_at(header: str) -> int:
    """The ``t=`` of a Stripe-Signature header; exactly one, as Stripe sends it (ValueError otherwise)."""
    stamps = [item.split("=", 1)[1] for item in header.split(",") if item.split("=", 1)[0] == "t"]
    if len(stamps) != 1:
        raise ValueError("not exactly one timestamp")
    return int(stamps[0])


def _without(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (a token the caller sent) blanked out."""
    return text.replace(secret, "pm_…") if secret else text


# -- the adapter ------------------------------------------------------------------------------------
class StripeGateway:
    """The ``PaymentGateway`` port on Stripe (cards, any currency Stripe settles)."""

    name: GatewayName = "stripe"

    def __init__(self, settings: Settings | None = None, keys: StripeKeys | None = None) -> None:
        self._settings = settings
        self._fixed_keys = keys
        self._lock = threading.Lock()
        # Rebuilt when the key, base or timeout changes (a rotated secret read after its cache expired).
        self._client: tuple[tuple[str, str, float], stripe.StripeClient] | None = None

    # -- configuration ---------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def _keys(self) -> StripeKeys:
        if self._fixed_keys is not None:
            return self._fixed_keys
        from tagih.gateways.secrets import stripe_keys

        return stripe_keys()  # cached by Powertools for settings.secrets_max_age_seconds

    def _stripe(self) -> stripe.StripeClient:
        settings = self.settings
        config = (
            self._keys().secret_key,
            settings.stripe_api_base.rstrip("/"),
            settings.gateway_timeout_seconds,
        )
        with self._lock:
            if self._client is None or self._client[0] != config:
                secret_key, api_base, timeout = config
                client = stripe.StripeClient(
                    secret_key,
                    base_addresses={"api": api_base} if api_base else None,
                    max_network_retries=NETWORK_RETRIES,
                    # One requests session per thread, kept warm across invocations of a warm Lambda.
                    http_client=stripe.RequestsClient(timeout=timeout / (1 + NETWORK_RETRIES)),
                )
                self._client = (config, client)
            return self._client[1]

    def _request(self, operation: str, call: Callable[[stripe.StripeClient], T]) -> T:
        """Faults of Stripe, the network or our configuration become ``GatewayUnavailable``.

        Refusals the caller maps itself stay Stripe's errors: ``CardError``, ``InvalidRequestError``
        and a 400 ``IdempotencyError`` (the same key with other parameters).
        """
        try:
            return call(self._stripe())
        except (stripe.CardError, stripe.InvalidRequestError):
            raise
        except stripe.IdempotencyError as error:
            if error.http_status == 409:  # still running under the same key after the SDK's retries
                raise self._unavailable(operation, error) from None
            raise
        except stripe.APIConnectionError as error:
            logger.warning("stripe %s failed in transport (%s)", operation, type(error.__cause__).__name__)
            raise GatewayUnavailable(
                "The payment gateway did not answer in time; try again shortly.", gateway=GATEWAY
            ) from None
        except stripe.StripeError as error:
            # APIError (5xx, an unreadable answer), RateLimitError, and AuthenticationError or
            # PermissionError: our keys, which the payer cannot fix.
            raise self._unavailable(operation, error) from None

    def _unavailable(self, operation: str, error: stripe.StripeError) -> GatewayUnavailable:
        logger.warning(
            "stripe %s refused: %s %s (request %s)",
            operation,
            type(error).__name__,
            error.http_status,
            error.request_id,
        )
        # A rate limit or our keys refused: Stripe did nothing. A 5xx or a lost answer may have.
        refused = isinstance(
            error, (stripe.RateLimitError, stripe.AuthenticationError, stripe.PermissionError)
        )
        return GatewayUnavailable(gateway=GATEWAY, nothing_charged=refused)

    # -- the port ---------------------------------------------------------------------------------
    def ensure_customer(self, customer: Customer) -> str | None:
        if customer.existing_customer_id:
            return customer.existing_customer_id
        params: stripe.params.CustomerCreateParams = {
            "name": customer.name,
            "email": customer.email,
            "metadata": {"organization_id": customer.organization_id, "account_id": customer.account_id},
        }
        if customer.phone:
            params["phone"] = customer.phone
        key = customer_idempotency_key(customer.account_id)
        try:
            created = self._create_customer(params, key)
        except stripe.IdempotencyError:
            # This account's customer was created under the key within Stripe's 24 h, with details
            # since changed, and its id was never stored (a crash in between): create one with the
            # current details under a key naming them. The first stays unused, which is harmless.
            digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
            created = self._create_customer(params, f"{key}-{digest}")
        logger.info("stripe customer %s for account %s", created.id, customer.account_id)
        return created.id

    def _create_customer(self, params: stripe.params.CustomerCreateParams, key: str) -> stripe.Customer:
        try:
            return self._request(
                "customer create", lambda c: c.v1.customers.create(params, {"idempotency_key": key})
            )
        except (stripe.CardError, stripe.InvalidRequestError) as error:
            # Details Stripe refuses (an email it cannot accept): retrying will not help, and the card
            # being added cannot be saved — refused like a card, in Stripe's words.
            logger.warning("stripe refused a customer: %s (%s)", error.code, error.param)
            raise PaymentDeclined(
                error.user_message or "Stripe refused the billing account's details.",
                gateway=GATEWAY,
                decline_code=error.code,
            ) from None

    def attach_method(self, request: AttachRequest) -> AttachedMethod:
        if request.type != "credit_card":
            raise ValueError("Stripe saves cards only; bank transfers and e-wallets are Midtrans'")
        token = request.token
        if not token or not token.startswith(METHOD_PREFIX):
            raise ValueError("a Stripe card is a PaymentMethod id (pm_…) from Stripe.js")
        customer_id = request.customer_id
        if not customer_id:
            raise ValueError("a Stripe card is attached to the account's customer: ensure_customer first")
        existing = self._method_for_customer(token, customer_id)
        if existing is not None:
            return _attached_card(existing)
        key = _attach_idempotency_key(customer_id, token)
        try:
            method = self._request(
                "attach",
                lambda c: c.v1.payment_methods.attach(
                    token, {"customer": customer_id}, {"idempotency_key": key}
                ),
            )
        except stripe.CardError as error:
            # Attaching verifies the card with its issuer: Stripe's words are for the payer.
            decline_code = error.error.decline_code if error.error is not None else None
            logger.info("stripe declined a card for customer %s: %s", customer_id, decline_code or error.code)
            raise PaymentDeclined(
                _without(error.user_message or "Your card was declined.", token),
                gateway=GATEWAY,
                decline_code=decline_code or error.code,
            ) from None
        except (stripe.InvalidRequestError, stripe.IdempotencyError) as error:
            # A token Stripe does not know (resource_missing), one already attached to another
            # customer, one of another Stripe account: the caller's token is refused.
            logger.info("stripe refused a payment method for customer %s: %s", customer_id, error.code)
            raise PaymentDeclined(
                _without(error.user_message or "The payment method was refused.", token),
                gateway=GATEWAY,
                decline_code=error.code,
            ) from None
        return _attached_card(method)

    def _method_for_customer(self, token: str, customer_id: str) -> stripe.PaymentMethod | None:
        """The method when it is already this customer's, None when it is no customer's yet.

        One Stripe account serves every organization, so a ``pm_…`` attached to another
        organization's customer is refused as unknown (404, like any other organization's object)
        rather than attached: attaching would move that organization's card here.
        """
        try:
            method = self._request("retrieve method", lambda c: c.v1.payment_methods.retrieve(token))
        except stripe.InvalidRequestError as error:
            if error.code != "resource_missing":
                raise PaymentDeclined(
                    _without(error.user_message or "The payment method was refused.", token),
                    gateway=GATEWAY,
                    decline_code=error.code,
                ) from None
            raise GatewayReferenceNotFound() from None
        owner = method.customer if isinstance(method.customer, str | None) else method.customer.id
        if owner is None:
            return None
        if owner != customer_id:
            logger.warning(
                "a payment method of another Stripe customer was offered to customer %s", customer_id
            )
            raise GatewayReferenceNotFound()
        return method

    def charge(self, request: ChargeRequest) -> ChargeResult:
        method = request.method
        if method.gateway != GATEWAY or method.type != "credit_card":
            raise ValueError("Stripe charges saved Stripe cards only")
        customer_id = request.customer_id or request.customer.existing_customer_id
        if not customer_id:
            raise ValueError("Stripe charges a saved card through its customer: ensure_customer first")
        currency = request.currency.upper()
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": to_stripe_amount(request.amount, currency),
            "currency": currency.lower(),
            "customer": customer_id,
            "payment_method": method.gateway_payment_method_id,
            # Confirming with Stripe's automatic payment methods needs a return_url unless redirects are
            # off; a saved card never redirects, and off-session nobody could follow one.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            # Renewals, dunning and upgrades charge without the payer: no 3-D Secure challenge can run.
            "off_session": True,
            "confirm": True,
            "metadata": {
                "organization_id": request.organization_id,
                "invoice_id": request.invoice_id,
                "attempt": str(request.attempt),
                "reference": request.reference,
            },
        }
        if request.description:
            params["description"] = request.description
        key = charge_idempotency_key(request.organization_id, request.reference)
        try:
            intent = self._request(
                "charge", lambda c: c.v1.payment_intents.create(params, {"idempotency_key": key})
            )
        except stripe.CardError as error:
            # The failed confirm left a PaymentIntent (requires_payment_method); Stripe replays this
            # same error for a retried attempt, so the result is the same every time.
            failed = _intent_of(error.error.payment_intent if error.error is not None else None)
            decline_code = error.error.decline_code if error.error is not None else None
            logger.info(
                "stripe declined charge %s (%s): %s",
                request.reference,
                failed.id if failed else None,
                decline_code or error.code,
            )
            return self._declined(request, error.user_message or "Your card was declined.", failed)
        except stripe.InvalidRequestError as error:
            # A detached or unknown card, an amount Stripe refuses: a retry would be refused again.
            logger.info("stripe refused charge %s: %s", request.reference, error.code)
            return self._declined(request, error.user_message or "The charge was refused.", None)
        except stripe.IdempotencyError:
            # This attempt was sent before with other parameters (the account's card changed while
            # it was left processing). Stripe will not say what became of it, so it is declined and
            # the next attempt gets a new reference; if the first did charge, its
            # payment_intent.succeeded webhook still settles the payment (fetch_status is the truth).
            logger.warning("stripe charge %s was first sent with other parameters", request.reference)
            return self._declined(
                request, "This charge attempt was already made with other payment details.", None
            )
        return self._result(request, _intent(intent.to_dict()))

    def _result(self, request: ChargeRequest, intent: _Intent) -> ChargeResult:
        logger.info("stripe charge %s: %s is %s", request.reference, intent.id, intent.status)
        result = ChargeResult(
            outcome="pending",
            gateway=GATEWAY,
            reference=request.reference,
            gateway_charge_id=intent.id or None,
            amount=intent.tagih_amount,
            currency=intent.currency or request.currency.upper(),
        )
        if intent.status == "requires_action":
            # Off-session, nobody can complete 3-D Secure, and Stripe's next action for a card is a
            # Stripe.js step, not a page Tagih could link: a decline, so dunning moves on and the
            # payer is asked for a card (real Stripe answers such a charge with authentication_required).
            return self._declined(request, AUTHENTICATION_REQUIRED, intent)
        state = intent.state
        if state == "succeeded":
            return replace(result, outcome="succeeded")
        if state == "failed":
            return self._declined(request, intent.failure_message or intent.status, intent)
        return result  # processing (or another open state): the webhook and fetch_status settle it

    def _declined(self, request: ChargeRequest, reason: str, intent: _Intent | None) -> ChargeResult:
        return ChargeResult(
            outcome="declined",
            gateway=GATEWAY,
            reference=request.reference,
            gateway_charge_id=intent.id if intent and intent.id else None,
            amount=intent.tagih_amount if intent and intent.currency else request.amount,
            currency=intent.currency if intent and intent.currency else request.currency.upper(),
            decline_reason=reason,
        )

    def fetch_status(self, reference: str, gateway_charge_id: str | None = None) -> PaymentStatus:
        unknown = PaymentStatus(
            gateway=GATEWAY,
            reference=reference,
            state="unknown",
            amount=0,
            currency="",
            gateway_status="not_found",
            gateway_charge_id=gateway_charge_id,
        )
        if not gateway_charge_id:
            return unknown  # Stripe finds a PaymentIntent by its id only
        try:
            found = self._request("status", lambda c: c.v1.payment_intents.retrieve(gateway_charge_id))
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return unknown
            raise self._unavailable("status", error) from None
        except (stripe.CardError, stripe.IdempotencyError) as error:  # not answers a GET gives
            raise self._unavailable("status", error) from None
        intent = _intent(found.to_dict())
        return PaymentStatus(
            gateway=GATEWAY,
            reference=intent.reference or reference,
            state=intent.state,
            amount=intent.tagih_amount,
            currency=intent.currency,
            gateway_status=intent.status,
            gateway_charge_id=intent.id or gateway_charge_id,
        )

    def cancel(self, reference: str) -> bool:
        return False  # a card is charged at once; a PaymentIntent awaiting 3-D Secure lapses by itself

    def verify_notification(self, headers: dict[str, str], raw_body: bytes) -> GatewayNotification:
        """``Stripe-Signature`` on the raw body: HMAC-SHA256 with the webhook secret, at most 300 s
        old and at most ``WEBHOOK_CLOCK_SKEW_SECONDS`` ahead of our clock."""
        header = _header(headers, SIGNATURE_HEADER)
        try:
            payload = raw_body.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                payload, header, self._keys().webhook_secret, WEBHOOK_TOLERANCE_SECONDS
            )
            signed_at = _signed_at(header or "")
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError):
            raise InvalidSignature() from None
        if signed_at > time.time() + WEBHOOK_CLOCK_SKEW_SECONDS:
            raise InvalidSignature()
        try:
            event = json.loads(payload)
        except ValueError:
            raise InvalidSignature() from None
        if not isinstance(event, dict):
            raise InvalidSignature()
        event_id, event_type = event.get("id"), event.get("type")
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not (
            isinstance(event_id, str) and event_id and isinstance(event_type, str) and isinstance(obj, dict)
        ):
            raise InvalidSignature()
        return _notification(event_id, event_type, obj)


def _notification(event_id: str, event_type: str, obj: Mapping[str, Any]) -> GatewayNotification:
    raw_fields = {"event_type": event_type}
    if obj.get("object") == "payment_intent":
        intent = _intent(obj)
        raw_fields.update(payment_intent=intent.id, status=intent.status)
        return GatewayNotification(
            gateway=GATEWAY,
            event_id=event_id,
            reference=intent.reference if event_type.startswith("payment_intent.") else None,
            claimed_state=_EVENT_STATES.get(event_type, "unknown"),
            event_type=event_type,
            amount=intent.tagih_amount if intent.currency else None,
            currency=intent.currency or None,
            raw_fields=raw_fields,
        )
    if isinstance(obj.get("payment_intent"), str):  # charge.* events name their PaymentIntent
        raw_fields["payment_intent"] = obj["payment_intent"]
    return GatewayNotification(
        gateway=GATEWAY,
        event_id=event_id,
        reference=None,
        claimed_state="unknown",
        event_type=event_type,
        raw_fields=raw_fields,
    )
