"""A small Midtrans on 127.0.0.1: the Core API, Snap and status endpoints Tagih calls, in their shapes.

Endpoints (Basic auth with the server key, as Midtrans does; 401 otherwise):
- ``POST /v2/charge`` — credit_card, bank_transfer (bca, bni, bri, permata), echannel (Mandiri),
  gopay, shopeepay;
- ``GET /v2/{order_id}/status``, ``POST /v2/{order_id}/cancel`` (also by transaction_id);
- ``POST /snap/v1/transactions`` — a Snap page (``snap_base`` is ``<url>/snap``, as midtransclient
  appends ``/v1/transactions``). Like Midtrans, the status API knows a Snap order only once it is
  paid (404 before).
And for tests: ``GET /_fake/charges[?order_id=]`` (every charge the fake accepted, declined ones
included), ``settle``/``expire``/``notify`` below.

Card tokens (API.md "The local stack"): a token containing ``decline`` is denied; ``hang`` holds the
request until the fake stops (far beyond any client timeout) and records nothing; ``3ds`` asks for
3-D Secure (pending with a ``redirect_url``); ``insufficient_funds`` is a card without the money:
its authorisation (Tagih's verification, which saves it) is approved, and the saved token minted
for it carries the trait, so every charge with it is denied like a real insufficient-funds decline
(code 51), which is how dunning is shown without editing the table; any other is accepted. Bank
transfers and e-wallets stay ``pending`` until ``settle``. A reused order_id is refused with 406
(Snap: 400 "sudah digunakan") and charges nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

WIB = timezone(timedelta(hours=7))  # Midtrans writes times in Jakarta time, without an offset
HANG_SECONDS = 300.0
NOTIFICATION_TIMEOUT_SECONDS = 10.0
MERCHANT_ID = "G000000000"
VA_BANKS = ("bca", "bni", "bri", "permata")
VA_PREFIXES = {"bca": "12345", "bni": "9888", "bri": "8578", "permata": "8500"}
MANDIRI_BILLER_CODE = "70012"
STATUS_CODES = {"pending": "201", "deny": "202", "failure": "202", "expire": "407"}  # others: 200
OPEN_STATUSES = ("pending", "authorize", "capture")
# Fields of a transaction that the status API and notifications show (never the card token).
_PUBLIC_FIELDS = (
    "transaction_id",
    "order_id",
    "merchant_id",
    "gross_amount",
    "currency",
    "payment_type",
    "transaction_time",
    "transaction_status",
    "fraud_status",
    "expiry_time",
    "settlement_time",
    "va_numbers",
    "bill_key",
    "biller_code",
    "masked_card",
    "bank",
    "card_type",
    "approval_code",
    "channel_response_code",
    "channel_response_message",
    "saved_token_id",
    "saved_token_id_expired_at",
)
_SAVED_TOKEN = re.compile(r"^(\d{6})[A-Za-z0-9]+(\d{4})$")
# A card without the money: the one-time token names it, its saved token (letters and digits only,
# like Midtrans's) keeps it.
NO_FUNDS_TOKEN, NO_FUNDS_SAVED = "insufficient_funds", "insufficientfunds"


def wib(moment: datetime) -> str:
    return moment.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S")


def status_code_for(transaction_status: str) -> str:
    return STATUS_CODES.get(transaction_status, "200")


def signature(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    return hashlib.sha512(f"{order_id}{status_code}{gross_amount}{server_key}".encode()).hexdigest()


def _digits(seed: str, count: int) -> str:
    return f"{int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 10**count:0{count}d}"


class _Refused(Exception):
    def __init__(self, http_status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.http_status = http_status
        self.body = body


def _core_error(code: int, message: str, *validation: str) -> _Refused:
    body: dict[str, Any] = {"status_code": str(code), "status_message": message, "id": str(uuid.uuid4())}
    if validation:
        body["validation_messages"] = list(validation)
    return _Refused(code, body)


FINAL_UNPAID = frozenset({"cancel", "expire", "deny"})


class OrderClosed(Exception):
    """``settle`` of an order that can no longer be paid (cancelled, expired, denied)."""


class MidtransFake:
    """The fake's state and its HTTP server. Thread-safe; ``start``/``stop`` once."""

    def __init__(
        self,
        server_key: str,
        notification_url: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hang_seconds: float = HANG_SECONDS,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.server_key = server_key
        self.notification_url = notification_url
        self.hang_seconds = hang_seconds
        self.log = log
        self._lock = threading.Lock()
        self._release = threading.Event()  # set on stop: hanging requests give up
        self._transactions: dict[str, dict[str, Any]] = {}  # by order_id
        self._snap_orders: dict[str, dict[str, Any]] = {}  # Snap pages not paid yet, by order_id
        self._charges: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []  # every notification sent, with its delivery
        self._server = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_base(self) -> str:
        return self.url

    @property
    def snap_base(self) -> str:
        return f"{self.url}/snap"

    def start(self) -> MidtransFake:
        self._thread = threading.Thread(target=self._server.serve_forever, name="midtrans-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- what tests and the local stack ask ---------------------------------------------------------
    @property
    def charges(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(charge) for charge in self._charges]

    def charge_count(self, order_id: str) -> int:
        with self._lock:
            return sum(1 for charge in self._charges if charge["order_id"] == order_id)

    def transaction(self, order_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._transactions.get(order_id)
            return dict(found) if found else None

    def taken(self) -> int:
        """Rupiah the payers parted with so far: every captured card charge and settled transfer."""
        with self._lock:
            return sum(
                int(str(t["gross_amount"]).split(".")[0])
                for t in self._transactions.values()
                if t.get("transaction_status") in ("capture", "settlement")
            )

    def knows(self, order_id: str) -> bool:
        with self._lock:
            return order_id in self._transactions or order_id in self._snap_orders

    def settle(self, order_id: str) -> dict[str, Any]:
        """The payer paid: ``settlement`` (``capture`` for a card), then a signed notification."""
        return self.set_status(order_id, "settlement")

    def expire(self, order_id: str) -> dict[str, Any]:
        return self.set_status(order_id, "expire")

    def set_status(self, order_id: str, transaction_status: str) -> dict[str, Any]:
        """Move a transaction (or pay a Snap page) and notify; ``KeyError`` for an unknown order."""
        now = datetime.now(UTC)
        with self._lock:
            record = self._transactions.get(order_id)
            if record is None:
                snap = self._snap_orders.pop(order_id, None)
                if snap is None:
                    raise KeyError(order_id)
                record = self._paid_snap(snap, now)
                self._transactions[order_id] = record
            if transaction_status == "settlement" and record["transaction_status"] in FINAL_UNPAID:
                # A cancelled or expired virtual account takes no transfer any more.
                raise OrderClosed(f"order {order_id} is {record['transaction_status']}")
            if (
                transaction_status == "settlement"
                and record["payment_type"] == "credit_card"
                and record["transaction_status"] in ("pending", "authorize")
            ):
                transaction_status = "capture"  # a card is captured first, settled by the bank later
            record["transaction_status"] = transaction_status
            if transaction_status == "settlement":
                record["settlement_time"] = wib(now)
            body = self._notification_body(record)
            target = record.get("notification_url") or self.notification_url
        return self._deliver(body, target)

    def notify(self, order_id: str, transaction_status: str, fraud_status: str = "accept") -> dict[str, Any]:
        """A correctly signed notification claiming ``transaction_status``, the fake's own state unchanged.

        For the rule that the status API, not the notification, is the truth.
        """
        with self._lock:
            record = self._transactions.get(order_id)
            if record is None:
                snap = self._snap_orders.get(order_id)
                if snap is None:
                    raise KeyError(order_id)
                record = self._paid_snap(snap, datetime.now(UTC))
            claimed = {**record, "transaction_status": transaction_status, "fraud_status": fraud_status}
            body = self._notification_body(claimed)
            target = record.get("notification_url") or self.notification_url
        return self._deliver(body, target)

    # -- building answers ----------------------------------------------------------------------------
    def _public(self, record: dict[str, Any]) -> dict[str, Any]:
        body = {name: record[name] for name in _PUBLIC_FIELDS if record.get(name) is not None}
        code = status_code_for(record["transaction_status"])
        body["status_code"] = code
        body["signature_key"] = signature(record["order_id"], code, record["gross_amount"], self.server_key)
        return body

    def _notification_body(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**self._public(record), "status_message": "midtrans payment notification"}

    def _deliver(self, body: dict[str, Any], target: str | None) -> dict[str, Any]:
        delivery: dict[str, Any] = {"url": target, "status": None, "error": None}
        if not target:
            delivery["error"] = "no notification URL configured"
        else:
            request = urllib.request.Request(
                target,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "User-Agent": "Veritrans"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=NOTIFICATION_TIMEOUT_SECONDS) as answer:
                    delivery["status"] = answer.status
            except urllib.error.HTTPError as error:
                delivery["status"] = error.code
            except OSError as error:
                delivery["error"] = repr(error)
        sent = {"notification": body, "delivery": delivery}
        with self._lock:
            self.notifications.append(sent)
        return sent

    def _paid_snap(self, snap: dict[str, Any], now: datetime) -> dict[str, Any]:
        channel = (snap.get("enabled_payments") or ["qris"])[0]
        payment_type = {"other_qris": "qris", "bca_va": "bank_transfer", "bni_va": "bank_transfer"}.get(
            channel, channel
        )
        return {
            **snap,
            "payment_type": payment_type,
            "transaction_time": wib(now),
            "transaction_status": "pending",
            "fraud_status": "accept",
        }

    # -- the API ---------------------------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]  # "<server key>:"
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.server_key

    def charge(self, payload: dict[str, Any], notification_url: str | None) -> tuple[int, dict[str, Any]]:
        order_id, amount = _transaction_details(payload)
        payment_type = payload.get("payment_type")
        card: dict[str, Any] = payload["credit_card"] if isinstance(payload.get("credit_card"), dict) else {}
        token = str(card.get("token_id") or "")
        if payment_type == "credit_card" and "hang" in token:
            # Midtrans not answering: hold the request past any client timeout; nothing is recorded.
            self._release.wait(self.hang_seconds)
            raise _core_error(504, "Gateway timeout")
        now = datetime.now(UTC)
        record: dict[str, Any] = {
            "transaction_id": str(uuid.uuid4()),
            "order_id": order_id,
            "merchant_id": MERCHANT_ID,
            "gross_amount": f"{amount}.00",
            "currency": "IDR",
            "payment_type": payment_type,
            "transaction_time": wib(now),
            "fraud_status": "accept",
            "notification_url": notification_url,
        }
        if payment_type == "credit_card":
            message = self._card(record, card, token)
        elif payment_type == "bank_transfer":
            transfer = payload.get("bank_transfer")
            bank = transfer.get("bank") if isinstance(transfer, dict) else None
            if bank not in VA_BANKS:
                raise _core_error(
                    400, "One or more parameters in the payload is invalid.", "bank_transfer.bank is invalid"
                )
            record.update(
                transaction_status="pending",
                va_numbers=[{"bank": bank, "va_number": VA_PREFIXES[bank] + _digits(order_id, 10)}],
                expiry_time=wib(now + timedelta(hours=24)),
            )
            message = "Success, Bank Transfer transaction is created"
        elif payment_type == "echannel":
            echannel = payload.get("echannel") or {}
            if not echannel.get("bill_info1") or not echannel.get("bill_info2"):
                raise _core_error(
                    400,
                    "One or more parameters in the payload is invalid.",
                    "echannel.bill_info1 is required",
                )
            record.update(
                transaction_status="pending",
                bill_key=_digits(order_id, 12),
                biller_code=MANDIRI_BILLER_CODE,
                expiry_time=wib(now + timedelta(hours=24)),
            )
            message = "OK, Mandiri Bill transaction is successful"
        elif payment_type in ("gopay", "shopeepay"):
            record.update(transaction_status="pending", expiry_time=wib(now + timedelta(minutes=15)))
            message = (
                "GoPay transaction is created"
                if payment_type == "gopay"
                else "ShopeePay transaction is created"
            )
        else:
            raise _core_error(402, "Payment channel is not activated.")
        with self._lock:
            if order_id in self._transactions or order_id in self._snap_orders:
                raise _core_error(
                    406, "The request could not be processed", "order_id has already been utilized"
                )
            self._transactions[order_id] = record
            self._charges.append(
                {
                    "order_id": order_id,
                    "payment_type": payment_type,
                    "gross_amount": amount,
                    "transaction_status": record["transaction_status"],
                    "initiated_by": card.get("initiated_by"),  # cards: "merchant" for off-session charges
                }
            )
        body = self._public(record)
        body.pop("signature_key")
        body["status_message"] = message
        if payment_type in ("gopay", "shopeepay"):
            body["actions"] = self._wallet_actions(payment_type, record["transaction_id"])
        if record.get("redirect_url"):
            body["redirect_url"] = record["redirect_url"]
        return 201 if body["status_code"] == "201" else 200, body

    def _card(self, record: dict[str, Any], card: dict[str, Any], token: str) -> str:
        if not token:
            raise _core_error(411, "Token id is missing, invalid, or timed out")
        saved = _SAVED_TOKEN.match(token)
        if saved:
            bin_, last4 = saved.group(1), saved.group(2)
        elif "master" in token:
            bin_, last4 = "521111", "1117"
        else:
            bin_, last4 = "481111", "1114"
        record.update(masked_card=f"{bin_}-{last4}", bank="bni", card_type="credit")
        if "decline" in token:
            record.update(
                transaction_status="deny",
                channel_response_code="05",
                channel_response_message="Do not honour",
            )
            return "Deny by Bank [BNI] with code [05] and message [Do not honour]"
        no_funds = NO_FUNDS_TOKEN in token or NO_FUNDS_SAVED in token
        if no_funds and card.get("type") != "authorize":
            record.update(
                transaction_status="deny",
                channel_response_code="51",
                channel_response_message="Insufficient funds",
            )
            return "Deny by Bank [BNI] with code [51] and message [Insufficient funds]"
        if "3ds" in token:
            record.update(
                transaction_status="pending",
                redirect_url=f"{self.url}/_fake/3ds/{record['transaction_id']}",
            )
            return "OK, success do 3DS authentication"
        record.update(
            transaction_status="authorize" if card.get("type") == "authorize" else "capture",
            approval_code=_digits(record["transaction_id"], 13),
            channel_response_code="00",
            channel_response_message="Approved",
        )
        if card.get("save_token_id"):
            # Each saving charge mints its own saved token (its order is the organization's own),
            # so two organizations' tests may share a one-time token without sharing the card.
            digest = hashlib.sha256(f"{record['order_id']}:{token}".encode()).hexdigest()
            middle = f"{NO_FUNDS_SAVED}{digest[:12]}" if no_funds else digest[:22]
            record.update(
                saved_token_id=f"{bin_}{middle}{last4}",
                saved_token_id_expired_at=wib(datetime.now(UTC) + timedelta(days=365 * 3)),
            )
        return "Success, Credit Card transaction is successful"

    def _wallet_actions(self, payment_type: str, transaction_id: str) -> list[dict[str, str]]:
        actions = [
            {
                "name": "deeplink-redirect",
                "method": "GET",
                "url": f"{self.url}/_fake/{payment_type}/deeplink/{transaction_id}",
            },
            {"name": "get-status", "method": "GET", "url": f"{self.url}/v2/{transaction_id}/status"},
            {"name": "cancel", "method": "POST", "url": f"{self.url}/v2/{transaction_id}/cancel"},
        ]
        if payment_type == "gopay":
            qr = {
                "name": "generate-qr-code",
                "method": "GET",
                "url": f"{self.url}/v2/gopay/{transaction_id}/qr-code",
            }
            actions.insert(0, qr)
        return actions

    def _find(self, key: str) -> dict[str, Any]:
        record = self._transactions.get(key)
        if record is None:
            record = next((r for r in self._transactions.values() if r["transaction_id"] == key), None)
        if record is None:
            raise _core_error(404, "Transaction doesn't exist.")
        return record

    def status(self, key: str) -> dict[str, Any]:
        with self._lock:
            body = self._public(self._find(key))
        body["status_message"] = "Success, transaction is found"
        return body

    def cancel(self, key: str) -> dict[str, Any]:
        with self._lock:
            record = self._find(key)
            if record["transaction_status"] not in OPEN_STATUSES:
                raise _core_error(412, "Merchant cannot modify the status of the transaction")
            record["transaction_status"] = "cancel"
            body = self._public(record)
        body.pop("signature_key")
        body["status_message"] = "Success, transaction is canceled"
        return body

    def snap(self, payload: dict[str, Any], notification_url: str | None) -> dict[str, Any]:
        try:
            order_id, amount = _transaction_details(payload)
        except _Refused as refused:
            raise _Refused(400, {"error_messages": refused.body.get("validation_messages", [])}) from None
        token = str(uuid.uuid4())
        with self._lock:
            if order_id in self._transactions or order_id in self._snap_orders:
                raise _Refused(400, {"error_messages": ["transaction_details.order_id sudah digunakan"]})
            self._snap_orders[order_id] = {
                "transaction_id": str(uuid.uuid4()),
                "order_id": order_id,
                "merchant_id": MERCHANT_ID,
                "gross_amount": f"{amount}.00",
                "currency": "IDR",
                "enabled_payments": list(payload.get("enabled_payments") or []),
                "notification_url": notification_url,
            }
            self._charges.append({"order_id": order_id, "payment_type": "snap", "gross_amount": amount})
        return {"token": token, "redirect_url": f"{self.url}/snap/v4/redirection/{token}"}


def _transaction_details(payload: dict[str, Any]) -> tuple[str, int]:
    details = payload.get("transaction_details")
    if not isinstance(details, dict):
        raise _core_error(
            400, "One or more parameters in the payload is invalid.", "transaction_details is required"
        )
    order_id, amount = details.get("order_id"), details.get("gross_amount")
    problems = []
    if not isinstance(order_id, str) or not 0 < len(order_id) <= 50:
        problems.append("transaction_details.order_id is required, 50 characters at most")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
        problems.append("transaction_details.gross_amount must be a positive whole number")
    if problems:
        raise _core_error(400, "One or more parameters in the payload is invalid.", *problems)
    return str(order_id), int(amount)  # type: ignore[arg-type]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a burst at the front becomes a burst of charges here (http_front)

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: MidtransFake
    ) -> None:
        super().__init__(address, handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.log is not None:
            self.server.fake.log(f"{self.command} {self.path} {format % args}")

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (a timeout test): nobody to answer

    def _json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise _core_error(400, "Invalid JSON") from None
        if not isinstance(body, dict):
            raise _core_error(400, "Invalid JSON")
        return body

    def _notification_url(self) -> str | None:
        override = self.headers.get("X-Override-Notification")
        return override.split(",")[0].strip() if override else None

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        path = url.path
        try:
            if path == "/_fake/charges" and self.command == "GET":
                wanted = parse_qs(url.query).get("order_id")
                order_id = wanted[0] if wanted else None
                items = [c for c in fake.charges if order_id is None or c["order_id"] == order_id]
                self._send(200, {"items": items})
                return
            if not fake.authorized(self.headers.get("Authorization")):
                self._send(
                    401,
                    {
                        "status_code": "401",
                        "status_message": (
                            "Transaction cannot be authorized with the current client/server key."
                        ),
                    },
                )
                return
            if path == "/v2/charge" and self.command == "POST":
                status, body = fake.charge(self._json(), self._notification_url())
                self._send(status, body)
                return
            if path == "/snap/v1/transactions" and self.command == "POST":
                self._send(201, fake.snap(self._json(), self._notification_url()))
                return
            match = re.fullmatch(r"/v2/([^/]+)/(status|cancel)", path)
            if match and (match.group(2), self.command) in (("status", "GET"), ("cancel", "POST")):
                key = unquote(match.group(1))
                self._send(200, fake.status(key) if match.group(2) == "status" else fake.cancel(key))
                return
            self._send(404, {"status_code": "404", "status_message": "The requested resource is not found"})
        except _Refused as refused:
            self._send(refused.http_status, refused.body)


__all__ = ["MidtransFake", "signature", "status_code_for"]
