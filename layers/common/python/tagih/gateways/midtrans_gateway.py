"""Midtrans through midtransclient: Core API charges, Snap payment pages, the status API, notifications.

Imported only by ``gateways.registry`` when a Midtrans call is about to happen, so midtransclient
(and requests) load only on payment code paths.

What the SDK does not do and this adapter adds:
- base URLs from settings (sandbox by default; the local stack points them at its fake) through an
  ``ApiConfig`` subclass, and a timeout on every request through the SDK's ``HttpClient`` (the SDK
  calls ``requests`` without one, so a hanging Midtrans would hang the Lambda);
- idempotency: ``order_id`` is the charge reference, and Midtrans refuses a reused one (406), so
  a retried attempt reads the existing transaction from the status API instead of charging again;
- mapping of ``MidtransAPIError`` (raised for HTTP >= 400 and for a body ``status_code`` >= 400)
  to a declined result (the payer's or the request's fault) or ``GatewayUnavailable`` (a fault
  of Midtrans, the network or our own configuration — nothing the payer can fix).

Card data: a one-time card token is sent to Midtrans once, to verify and save the card; only the
``saved_token_id`` and display data (brand from the BIN, last4) come back. Neither the token nor a
Midtrans response body is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, cast

import midtransclient
import requests
from midtransclient.config import ApiConfig
from midtransclient.error_midtrans import JSONDecodeError as MidtransJSONDecodeError
from midtransclient.http_client import HttpClient
from urllib3.exceptions import NewConnectionError

from tagih.config import Settings, get_settings
from tagih.domain.errors import GatewayUnavailable, InvalidSignature, PaymentDeclined
from tagih.domain.gateway import (
    AttachedMethod,
    AttachRequest,
    ChargeRequest,
    ChargeResult,
    Customer,
    GatewayNotification,
    PaymentInstructions,
    PaymentStatus,
)
from tagih.domain.gateway_names import Bank, GatewayName, PaymentState, WalletProvider
from tagih.gateways.secrets import MidtransKeys

logger = logging.getLogger(__name__)

GATEWAY: Final = "midtrans"
CURRENCY: Final = "IDR"  # Midtrans' gross_amount is whole rupiah; other currencies go to Stripe
SANDBOX_API_BASE: Final = "https://api.sandbox.midtrans.com"
SANDBOX_SNAP_BASE: Final = "https://app.sandbox.midtrans.com/snap"
PRODUCTION_API_BASE: Final = "https://api.midtrans.com"
PRODUCTION_SNAP_BASE: Final = "https://app.midtrans.com/snap"
# A card is verified by authorising this much and cancelling it at once (never captured).
CARD_VERIFICATION_AMOUNT: Final = 10_000
VA_BANKS: Final = ("bca", "bni", "bri")  # Core API bank_transfer; Mandiri is the echannel bill payment
BANKS: Final = ("bca", "bni", "bri", "mandiri")
CORE_WALLETS: Final = ("gopay", "shopeepay")  # charged on the Core API, answer with deeplinks
WALLETS: Final = ("gopay", "shopeepay", "ovo")
# OVO has no Core API or Snap channel of its own: OVO pays Midtrans' QRIS, offered on a Snap page.
SNAP_PAYMENTS_BY_WALLET: Final[dict[str, list[str]]] = {"ovo": ["other_qris"]}
MIDTRANS_TZ: Final = timezone(timedelta(hours=7))  # Midtrans timestamps are WIB without an offset
DUPLICATE_ORDER: Final = 406
NOT_FOUND: Final = 404
# Refusals that are not the payer's doing: our keys, our account's channels, or Midtrans itself.
_UNAVAILABLE_CODES: Final = frozenset({401, 402, 403, 405, 410, 429})
# Fields of a notification safe to keep in logs: no card fields (masked_card, saved_token_id...).
_SAFE_NOTIFICATION_FIELDS: Final = (
    "order_id",
    "transaction_id",
    "transaction_status",
    "status_code",
    "fraud_status",
    "payment_type",
    "gross_amount",
    "currency",
    "transaction_time",
    "settlement_time",
    "status_message",
)
_CARD_BRANDS_BY_PREFIX: Final = (
    ("34", "amex"),
    ("37", "amex"),
    ("35", "jcb"),
    ("4", "visa"),
    *((str(prefix), "mastercard") for prefix in range(51, 56)),
    *((str(prefix), "mastercard") for prefix in range(2221, 2721)),
)


# -- the SDK, configured ---------------------------------------------------------------------------
class _ApiConfig(ApiConfig):  # type: ignore[misc]  # midtransclient has no type information
    """midtransclient's config with base URLs from settings instead of its hard-coded hosts."""

    def __init__(self, keys: MidtransKeys, api_base: str, snap_base: str, headers: dict[str, str]) -> None:
        super().__init__(
            is_production=keys.is_production,
            server_key=keys.server_key,
            client_key=keys.client_key,
            custom_headers=headers,
        )
        self._api_base = api_base.rstrip("/")
        self._snap_base = snap_base.rstrip("/")

    def get_core_api_base_url(self) -> str:
        return self._api_base

    def get_snap_base_url(self) -> str:
        # midtransclient appends "/transactions" to e.g. https://app.sandbox.midtrans.com/snap/v1
        return f"{self._snap_base}/v1"


class _TimedRequests:
    """Stands in for the ``requests`` module inside ``HttpClient``: one session, always a timeout."""

    def __init__(self, session: requests.Session, timeout: float) -> None:
        self._session = session
        self._timeout = timeout

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs["timeout"] = self._timeout
        return self._session.request(method, url, **kwargs)


class _HttpClient(HttpClient):  # type: ignore[misc]  # midtransclient has no type information
    def __init__(self, session: requests.Session, timeout: float) -> None:
        super().__init__()
        self.http_client = _TimedRequests(session, timeout)


def _session() -> requests.Session:
    session = requests.Session()
    # No transport retries: a charge retried behind our back could land after we gave up on it.
    # Safety comes from order_id instead (a retried attempt is refused with 406 and read back).
    adapter = requests.adapters.HTTPAdapter(max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@dataclass(frozen=True)
class _Refusal:
    """What a ``MidtransAPIError`` says, without the raw body it carries."""

    code: int
    message: str
    body: dict[str, Any]


def _refusal(error: Any) -> _Refusal:
    body = error.api_response_dict if isinstance(error.api_response_dict, dict) else {}
    try:
        code = int(body.get("status_code") or error.http_status_code)
    except (TypeError, ValueError):
        code = int(error.http_status_code or 500)
    messages = body.get("validation_messages") or body.get("error_messages") or []
    message = str(body.get("status_message") or "")
    if isinstance(messages, list) and messages:
        detail = "; ".join(str(m) for m in messages)
        message = f"{message}: {detail}" if message else detail
    return _Refusal(code=code, message=message or f"Midtrans answered {code}", body=body)


def _never_sent(error: requests.RequestException) -> bool:
    """The request never reached Midtrans (no connection was made), so it cannot have charged."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _is_snap_duplicate(refusal: _Refusal) -> bool:
    """Snap answers a reused order_id with 400 and an Indonesian or English message."""
    text = refusal.message.lower()
    return "order_id" in text and any(
        phrase in text for phrase in ("sudah digunakan", "already been taken", "already been utilized")
    )


# -- mapping helpers --------------------------------------------------------------------------------
def rupiah(gross_amount: Any) -> int:
    """Midtrans' ``gross_amount`` ("150000.00") as whole rupiah, without passing through a float."""
    try:
        value = Decimal(str(gross_amount))
    except InvalidOperation as error:
        raise ValueError(f"gross_amount {gross_amount!r} is not a number") from error
    if value != value.to_integral_value():
        raise ValueError(f"gross_amount {gross_amount!r} is not whole rupiah")
    return int(value)


def payment_state(transaction_status: str | None, fraud_status: str | None = None) -> PaymentState:
    """Midtrans' transaction_status (+ fraud_status for cards) in the port's terms."""
    if transaction_status == "settlement":
        return "succeeded"
    if transaction_status == "capture":
        if fraud_status in (None, "", "accept"):
            return "succeeded"
        return "failed" if fraud_status == "deny" else "pending"  # "challenge": held for review
    if transaction_status in ("pending", "authorize"):
        return "pending"
    if transaction_status in ("deny", "cancel", "expire", "failure"):
        return "failed"
    return "unknown"  # refund, partial_refund, chargeback...: not a payment outcome


def card_brand(masked_card: str) -> str | None:
    digits = masked_card.replace("-", "")
    for prefix, brand in sorted(_CARD_BRANDS_BY_PREFIX, key=lambda item: -len(item[0])):
        if digits.startswith(prefix):
            return brand
    return None


def _rfc3339(midtrans_time: Any) -> str | None:
    """ "2024-05-01 14:00:00" (WIB) → "2024-05-01T07:00:00Z"."""
    if not isinstance(midtrans_time, str) or not midtrans_time:
        return None
    try:
        local = datetime.strptime(midtrans_time, "%Y-%m-%d %H:%M:%S").replace(tzinfo=MIDTRANS_TZ)
    except ValueError:
        return None
    return local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _action_url(body: Mapping[str, Any], name: str) -> str | None:
    for action in body.get("actions") or []:
        if isinstance(action, dict) and action.get("name") == name and action.get("url"):
            return str(action["url"])
    return None


def _instructions(body: Mapping[str, Any]) -> PaymentInstructions | None:
    """How to pay, from a charge or status body (VA number, Mandiri bill key, e-wallet links)."""
    expires_at = _rfc3339(body.get("expiry_time"))
    payment_type = body.get("payment_type")
    if payment_type == "echannel":
        return PaymentInstructions(
            bank="mandiri",
            va_number=body.get("bill_key"),
            biller_code=body.get("biller_code"),
            expires_at=expires_at,
        )
    if payment_type == "bank_transfer":
        for entry in body.get("va_numbers") or []:
            if isinstance(entry, dict) and entry.get("bank") in BANKS:
                return PaymentInstructions(
                    bank=cast(Bank, entry["bank"]),
                    va_number=str(entry.get("va_number")),
                    expires_at=expires_at,
                )
        return None
    if payment_type in CORE_WALLETS:
        return PaymentInstructions(
            provider=cast(WalletProvider, payment_type),
            deeplink_url=_action_url(body, "deeplink-redirect"),
            qr_code_url=_action_url(body, "generate-qr-code"),
            expires_at=expires_at,
        )
    return None


def _customer_details(customer: Customer) -> dict[str, str]:
    details = {"first_name": customer.name[:255], "email": customer.email}
    if customer.phone:
        details["phone"] = customer.phone
    return details


def verification_order_id(organization_id: str, token: str) -> str:
    """The same card token for the same organization always verifies under the same order_id."""
    digest = hashlib.sha256(f"{organization_id}\x00{token}".encode()).hexdigest()[:40]
    return f"verify-{digest}"  # 47 characters: within Midtrans' 50


# -- the adapter ------------------------------------------------------------------------------------
class MidtransGateway:
    """The ``PaymentGateway`` port on Midtrans (IDR only)."""

    name: GatewayName = "midtrans"

    def __init__(
        self,
        settings: Settings | None = None,
        keys: MidtransKeys | None = None,
        *,
        verification_amount: int = CARD_VERIFICATION_AMOUNT,
    ) -> None:
        self._settings = settings
        self._fixed_keys = keys
        self._verification_amount = verification_amount
        self._session = _session()

    # -- configuration ---------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def _keys(self) -> MidtransKeys:
        if self._fixed_keys is not None:
            return self._fixed_keys
        from tagih.gateways.secrets import midtrans_keys

        return midtrans_keys()  # cached by Powertools for settings.secrets_max_age_seconds

    def _bases(self, keys: MidtransKeys) -> tuple[str, str]:
        settings = self.settings
        api, snap = settings.midtrans_api_base, settings.midtrans_snap_base
        # Production keys with the sandbox defaults untouched: the keys know where they belong.
        if keys.is_production and api.rstrip("/") == SANDBOX_API_BASE:
            api = PRODUCTION_API_BASE
        if keys.is_production and snap.rstrip("/") == SANDBOX_SNAP_BASE:
            snap = PRODUCTION_SNAP_BASE
        return api, snap

    def _headers(self) -> dict[str, str]:
        base = self.settings.public_base_url.rstrip("/")
        # Per-transaction notification URL (Midtrans' X-Override-Notification), when the stack knows it.
        return {"X-Override-Notification": f"{base}/webhooks/midtrans"} if base else {}

    def _client(self, kind: Literal["core", "snap"]) -> Any:
        keys = self._keys()
        api_base, snap_base = self._bases(keys)
        client = midtransclient.CoreApi() if kind == "core" else midtransclient.Snap()
        client.api_config = _ApiConfig(keys, api_base, snap_base, self._headers())
        client.http_client = _HttpClient(self._session, self.settings.gateway_timeout_seconds)
        return client

    def _call(self, operation: str, call: Any, *args: Any) -> dict[str, Any]:
        """Transport faults become ``GatewayUnavailable``; refusals stay ``MidtransAPIError``."""
        try:
            answer = call(*args)
        except requests.RequestException as error:
            logger.warning("midtrans %s failed in transport: %s", operation, type(error).__name__)
            raise GatewayUnavailable(
                "The payment gateway did not answer in time; try again shortly.",
                gateway=GATEWAY,
                nothing_charged=_never_sent(error),
            ) from error
        except MidtransJSONDecodeError as error:
            logger.warning("midtrans %s answered something that is not JSON", operation)
            raise GatewayUnavailable(gateway=GATEWAY) from error
        if not isinstance(answer, dict):
            raise GatewayUnavailable(gateway=GATEWAY)
        return answer

    def _unavailable(self, operation: str, refusal: _Refusal) -> GatewayUnavailable:
        logger.warning("midtrans %s refused with %s", operation, refusal.code)
        # Our keys, channels or rate limit were refused before anything was done; a 5xx may not be.
        return GatewayUnavailable(gateway=GATEWAY, nothing_charged=refusal.code in _UNAVAILABLE_CODES)

    # -- the port ---------------------------------------------------------------------------------
    def ensure_customer(self, customer: Customer) -> str | None:
        return None  # Midtrans has no customer object; details travel with each charge

    def attach_method(self, request: AttachRequest) -> AttachedMethod:
        if request.type == "bank_transfer":
            if request.bank not in BANKS:
                raise ValueError("a bank transfer method needs bank bca, bni, bri or mandiri")
            return AttachedMethod(
                gateway=GATEWAY,
                gateway_payment_method_id=f"va:{request.bank}",
                type="bank_transfer",
                bank=request.bank,
            )
        if request.type == "e_wallet":
            if request.provider not in WALLETS:
                raise ValueError("an e-wallet method needs provider gopay, shopeepay or ovo")
            return AttachedMethod(
                gateway=GATEWAY,
                gateway_payment_method_id=f"ewallet:{request.provider}",
                type="e_wallet",
                provider=request.provider,
            )
        if not request.token:
            raise ValueError("a card needs the Midtrans card token")
        return self._verify_card(request.organization_id, request.token)

    def _verify_card(self, organization_id: str, token: str) -> AttachedMethod:
        """Midtrans hands out a saved token and display data only from a charge: authorise and cancel."""
        order_id = verification_order_id(organization_id, token)
        core = self._client("core")
        params = {
            "payment_type": "credit_card",
            "transaction_details": {"order_id": order_id, "gross_amount": self._verification_amount},
            "credit_card": {"token_id": token, "save_token_id": True, "type": "authorize"},
        }
        try:
            body = self._call("card verification", core.charge, params)
        except midtransclient.MidtransAPIError as error:
            refusal = _refusal(error)
            if refusal.code == DUPLICATE_ORDER:
                # This token was sent before (a retried request): read what Midtrans made of it.
                existing = self._status_body(order_id)
                if existing is None:
                    raise GatewayUnavailable(gateway=GATEWAY) from None
                return self._card_from_verification(core, order_id, existing, from_status=True)
            if refusal.code >= 500 or refusal.code in _UNAVAILABLE_CODES:
                raise self._unavailable("card verification", refusal) from None
            raise PaymentDeclined(refusal.message, gateway=GATEWAY, decline_code=str(refusal.code)) from None

        return self._card_from_verification(core, order_id, body, from_status=False)

    def _card_from_verification(
        self, core: Any, order_id: str, body: Mapping[str, Any], *, from_status: bool
    ) -> AttachedMethod:
        status = body.get("transaction_status")
        fraud_accepted = body.get("fraud_status") in (None, "", "accept")
        if status in ("authorize", "capture") and fraud_accepted:
            return self._saved_card(core, order_id, body, cancel=True)
        if status == "cancel" and body.get("saved_token_id"):
            return self._saved_card(core, order_id, body, cancel=False)  # a retry after our own cancel
        if status in ("authorize", "capture", "pending"):
            self._cancel_quietly(core, order_id)
            if status == "pending":
                raise PaymentDeclined(
                    "The card needs 3-D Secure authentication, which saving a card cannot complete.",
                    gateway=GATEWAY,
                    decline_code="authentication_required",
                )
            raise PaymentDeclined(
                "The card was held for fraud review.", gateway=GATEWAY, decline_code="challenge"
            )
        if from_status:
            reason = body.get("channel_response_message") or body.get("transaction_status")
        else:
            reason = body.get("status_message") or body.get("channel_response_message")
        code = body.get("channel_response_code")
        raise PaymentDeclined(
            str(reason or "declined"), gateway=GATEWAY, decline_code=str(code) if code else None
        )

    def _saved_card(
        self, core: Any, order_id: str, body: Mapping[str, Any], *, cancel: bool
    ) -> AttachedMethod:
        saved_token = body.get("saved_token_id")
        if not saved_token:
            self._cancel_quietly(core, order_id)
            raise PaymentDeclined(
                "Midtrans did not save this card.", gateway=GATEWAY, decline_code="not_saved"
            )
        if cancel:
            try:
                self._call("card verification cancel", core.transactions.cancel, order_id)
            except midtransclient.MidtransAPIError as error:
                refusal = _refusal(error)
                # The verification must not stay authorised (or captured); a retry finds the order
                # (406), reads it back and cancels again.
                raise self._unavailable("card verification cancel", refusal) from None
        masked = str(body.get("masked_card") or "")
        last4 = masked.rsplit("-", 1)[-1][-4:] if masked else None
        return AttachedMethod(
            gateway=GATEWAY,
            gateway_payment_method_id=str(saved_token),
            type="credit_card",
            brand=card_brand(masked) if masked else None,
            last4=last4 or None,
        )

    def _cancel_quietly(self, core: Any, order_id: str) -> None:
        try:
            self._call("cancel", core.transactions.cancel, order_id)
        except (midtransclient.MidtransAPIError, GatewayUnavailable):
            logger.warning("midtrans could not cancel an unfinished card verification %s", order_id)

    def charge(self, request: ChargeRequest) -> ChargeResult:
        if request.currency.upper() != CURRENCY:
            raise ValueError(f"Midtrans charges IDR only, not {request.currency}")
        method = request.method
        if method.type == "e_wallet" and method.provider in SNAP_PAYMENTS_BY_WALLET:
            result = self.create_payment_link(request, SNAP_PAYMENTS_BY_WALLET[method.provider])
            return ChargeResult(
                outcome=result.outcome,
                gateway=GATEWAY,
                reference=result.reference,
                gateway_charge_id=result.gateway_charge_id,
                amount=result.amount,
                currency=result.currency,
                payment_url=result.payment_url,
                instructions=PaymentInstructions(provider=method.provider),
                decline_reason=result.decline_reason,
            )
        params: dict[str, Any] = {
            "transaction_details": {"order_id": request.reference, "gross_amount": request.amount},
            "customer_details": _customer_details(request.customer),
            **self._payment_params(request),
        }
        core = self._client("core")
        try:
            body = self._call("charge", core.charge, params)
        except midtransclient.MidtransAPIError as error:
            refusal = _refusal(error)
            if refusal.code == DUPLICATE_ORDER:
                return self._existing_charge(request)
            if refusal.code >= 500 or refusal.code in _UNAVAILABLE_CODES:
                raise self._unavailable("charge", refusal) from None
            return self._declined(request, refusal.message)
        return self._result(request, body, from_status=False)

    def _payment_params(self, request: ChargeRequest) -> dict[str, Any]:
        method = request.method
        if method.type == "credit_card":
            # Tagih charges saved cards off-session (renewals, dunning, upgrades): a merchant-initiated
            # transaction on the saved token, without 3-D Secure.
            return {
                "payment_type": "credit_card",
                "credit_card": {
                    "token_id": method.gateway_payment_method_id,
                    "authentication": False,
                    "initiated_by": "merchant",
                },
            }
        if method.type == "bank_transfer":
            bank = method.bank or method.gateway_payment_method_id.removeprefix("va:")
            if bank == "mandiri":
                # Mandiri bill payment: labels shown in the payer's banking app (10 and 30 chars).
                return {
                    "payment_type": "echannel",
                    "echannel": {"bill_info1": "Invoice", "bill_info2": request.invoice_id[:30]},
                }
            if bank not in VA_BANKS:
                raise ValueError(f"unknown virtual-account bank {bank!r}")
            return {"payment_type": "bank_transfer", "bank_transfer": {"bank": bank}}
        provider = method.provider or method.gateway_payment_method_id.removeprefix("ewallet:")
        if provider not in CORE_WALLETS:
            raise ValueError(f"unknown e-wallet {provider!r}")
        params: dict[str, Any] = {"payment_type": provider}
        base = self.settings.public_base_url.rstrip("/")
        if base:
            # Where the wallet app sends the payer back after paying.
            params[provider] = (
                {"enable_callback": True, "callback_url": base}
                if provider == "gopay"
                else {"callback_url": base}
            )
        return params

    def _existing_charge(self, request: ChargeRequest) -> ChargeResult:
        """The attempt was charged before (its order_id is taken): the same outcome, no second charge."""
        body = self._status_body(request.reference)
        if body is None:
            raise GatewayUnavailable(gateway=GATEWAY)
        return self._result(request, body, from_status=True)

    def _result(self, request: ChargeRequest, body: Mapping[str, Any], *, from_status: bool) -> ChargeResult:
        state = payment_state(body.get("transaction_status"), body.get("fraud_status"))
        saved = body.get("saved_token_id")
        result = ChargeResult(
            outcome="pending",
            gateway=GATEWAY,
            reference=request.reference,
            gateway_charge_id=str(body["transaction_id"]) if body.get("transaction_id") else None,
            amount=request.amount,
            currency=CURRENCY,
            reusable_method_id=str(saved) if saved else None,
        )
        if state == "succeeded":
            return replace(result, outcome="succeeded")
        if state in ("pending", "unknown"):
            return replace(
                result,
                payment_url=str(body["redirect_url"]) if body.get("redirect_url") else None,  # 3-D Secure
                instructions=_instructions(body),
            )
        if from_status:
            # The status API says "Success, transaction is found"; the bank's words are elsewhere.
            reason = body.get("channel_response_message") or body.get("transaction_status")
        else:
            reason = body.get("status_message") or body.get("channel_response_message")
        return replace(result, outcome="declined", decline_reason=str(reason or "declined"))

    def _declined(self, request: ChargeRequest, reason: str) -> ChargeResult:
        return ChargeResult(
            outcome="declined",
            gateway=GATEWAY,
            reference=request.reference,
            amount=request.amount,
            currency=CURRENCY,
            decline_reason=reason,
        )

    def create_payment_link(
        self, request: ChargeRequest, enabled_payments: Sequence[str] | None = None
    ) -> ChargeResult:
        """A Snap transaction for ``request.reference``: pending, with the Snap page as ``payment_url``.

        ``enabled_payments`` narrows the page to some channels (Midtrans' names, e.g. ``other_qris``);
        by default the page offers every channel the merchant account has.

        Snap refuses a reused order_id too, but cannot hand the page's URL out again: a retry gets the
        transaction's state from the status API (once the payer picked a channel) or a pending result
        without ``payment_url`` — keep the first answer's URL.
        """
        if request.currency.upper() != CURRENCY:
            raise ValueError(f"Midtrans charges IDR only, not {request.currency}")
        params: dict[str, Any] = {
            "transaction_details": {"order_id": request.reference, "gross_amount": request.amount},
            "customer_details": _customer_details(request.customer),
        }
        if enabled_payments:
            params["enabled_payments"] = list(enabled_payments)
        snap = self._client("snap")
        try:
            body = self._call("snap transaction", snap.create_transaction, params)
        except midtransclient.MidtransAPIError as error:
            refusal = _refusal(error)
            if refusal.code == DUPLICATE_ORDER or _is_snap_duplicate(refusal):
                existing = self._status_body(request.reference)
                if existing is not None:
                    return self._result(request, existing, from_status=True)
                return ChargeResult(
                    outcome="pending",
                    gateway=GATEWAY,
                    reference=request.reference,
                    amount=request.amount,
                    currency=CURRENCY,
                )
            if refusal.code >= 500 or refusal.code in _UNAVAILABLE_CODES:
                raise self._unavailable("snap transaction", refusal) from None
            return self._declined(request, refusal.message)
        url = body.get("redirect_url")
        if not url:
            raise GatewayUnavailable(gateway=GATEWAY)
        return ChargeResult(
            outcome="pending",
            gateway=GATEWAY,
            reference=request.reference,
            amount=request.amount,
            currency=CURRENCY,
            payment_url=str(url),
        )

    def _status_body(self, order_id: str) -> dict[str, Any] | None:
        """The status API's body for ``order_id``; None when Midtrans has no such transaction."""
        core = self._client("core")
        try:
            return self._call("status", core.transactions.status, order_id)
        except midtransclient.MidtransAPIError as error:
            refusal = _refusal(error)
            if refusal.code == NOT_FOUND:
                return None
            raise self._unavailable("status", refusal) from None

    def cancel(self, reference: str) -> bool:
        core = self._client("core")
        try:
            self._call("cancel", core.transactions.cancel, reference)
        except midtransclient.MidtransAPIError as error:
            logger.info("midtrans cancel refused with %s", _refusal(error).code)  # paid meanwhile, or gone
            return False
        return True

    def fetch_status(self, reference: str, gateway_charge_id: str | None = None) -> PaymentStatus:
        body = self._status_body(reference)
        if body is None:
            return PaymentStatus(
                gateway=GATEWAY,
                reference=reference,
                state="absent",  # Midtrans finds an order by its id: none was made
                amount=0,
                currency=CURRENCY,
                gateway_status="not_found",
            )
        transaction_status = str(body.get("transaction_status") or "")
        fraud = body.get("fraud_status")
        return PaymentStatus(
            gateway=GATEWAY,
            reference=str(body.get("order_id") or reference),
            state=payment_state(transaction_status, fraud),
            amount=rupiah(body.get("gross_amount", "0")),
            currency=str(body.get("currency") or CURRENCY).upper(),
            gateway_status=transaction_status,
            fraud_status=str(fraud) if fraud else None,
            gateway_charge_id=str(body["transaction_id"])
            if body.get("transaction_id")
            else gateway_charge_id,
        )

    def verify_notification(self, headers: dict[str, str], raw_body: bytes) -> GatewayNotification:
        """Midtrans signs the body's fields: SHA-512(order_id + status_code + gross_amount + server key)."""
        try:
            body = json.loads(raw_body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidSignature() from None
        if not isinstance(body, dict):
            raise InvalidSignature()
        parts = [body.get(name) for name in ("order_id", "status_code", "gross_amount", "signature_key")]
        if not all(isinstance(part, str) and part for part in parts):
            raise InvalidSignature()
        order_id, status_code, gross_amount, signature = cast(list[str], parts)
        server_key = self._keys().server_key
        expected = hashlib.sha512(f"{order_id}{status_code}{gross_amount}{server_key}".encode()).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise InvalidSignature()
        transaction_status = str(body.get("transaction_status") or "")
        try:
            amount: int | None = rupiah(gross_amount)
        except ValueError:
            amount = None
        return GatewayNotification(
            gateway=GATEWAY,
            # One event per transaction and status: a redelivery dedupes, a later status does not.
            event_id=f"{body.get('transaction_id') or order_id}:{transaction_status}",
            reference=order_id,
            claimed_state=payment_state(transaction_status, body.get("fraud_status")),
            event_type=transaction_status,
            amount=amount,
            currency=str(body.get("currency") or CURRENCY).upper(),
            raw_fields={
                name: str(body[name]) for name in _SAFE_NOTIFICATION_FIELDS if body.get(name) is not None
            },
        )
