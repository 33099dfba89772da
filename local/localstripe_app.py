"""localstripe as the local Stripe API, on loopback, with the Stripe behaviour Tagih relies on.

localstripe (a dev dependency) fakes enough of Stripe for the adapter, but differs where it matters:

- It ignores ``Idempotency-Key``: a retried PaymentIntent create charged twice. The middleware here
  keeps the first response per (API key, Idempotency-Key) for 24 h and replays it with
  ``Idempotent-Replayed: true``; the same key on another endpoint or with other parameters is
  refused with 400 ``idempotency_error``, and while the first request still runs with 409. As at
  Stripe, only requests that began executing are saved (2xx, 402, 5xx), not refused ones.
- Stripe.js creates PaymentMethods with the publishable key (``key=pk_…`` in the form, plus
  ``guid``/``muid``/``sid``/``time_on_page``); localstripe refuses both.
- Cards that Stripe declines on every charge (``4000000000000002`` …) are declined by localstripe
  only when attached to a customer; here also when a PaymentIntent charges them unattached.
- Its card errors say ``invalid_request_error`` without ``decline_code`` or ``payment_intent``;
  Stripe says ``card_error``, gives a ``decline_code`` and the PaymentIntent the failed confirm left.
- PaymentIntents refuse ``description`` and ``automatic_payment_methods`` (which Stripe needs, or a
  ``return_url``, to confirm a PaymentIntent at creation).
- An unknown id is a bare 404; Stripe says ``code: resource_missing``.
- It pickles its whole store to /tmp on every write and its CLI reloads it; here nothing is
  written or loaded (each start is from scratch and parallel instances share no file), and it
  listens on 127.0.0.1 only, where its CLI listens on every interface.

Run ``python -m local.localstripe_app --port N [--webhook-url URL]`` with the webhook's signing
secret in ``LOCALSTRIPE_WEBHOOK_SECRET``; ``start()`` does that for the local stack and the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET_ENV = "LOCALSTRIPE_WEBHOOK_SECRET"  # noqa: S105 — a variable name
WEBHOOK_ID = "tagih"
KEY_LIFETIME_SECONDS = 24 * 3600
# Stripe saves a result once the endpoint began executing; refusals (400, 401, 404, 409…) are not.
SAVED_STATUSES = frozenset({402}) | frozenset(range(200, 300)) | frozenset(range(500, 600))
STRIPE_JS_FIELDS = ("guid", "muid", "sid", "time_on_page")
DEFAULT_DECLINE_CODE = "generic_decline"


# -- the process: how the local stack and the tests start it -------------------------------------


def start(
    port: int,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start localstripe in a child process on 127.0.0.1:``port`` (use ``wait_until_listening``)."""
    command = [sys.executable, "-m", "local.localstripe_app", "--port", str(port)]
    env = dict(os.environ)
    if webhook_url:
        if not webhook_secret:
            raise ValueError("a webhook endpoint needs its signing secret")
        command += ["--webhook-url", webhook_url]
        env[WEBHOOK_SECRET_ENV] = webhook_secret  # not on the command line, where ps shows it
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def wait_until_listening(process: subprocess.Popen[bytes], port: int, deadline_seconds: float) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"localstripe exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)  # polling readiness with a deadline
    raise RuntimeError(f"localstripe did not listen on {port} within {deadline_seconds}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# -- idempotency ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Saved:
    endpoint: str  # "POST /v1/payment_intents"
    parameters: str  # canonical form of the request's parameters
    status: int
    body: bytes
    content_type: str
    saved_at: float


def canonical_parameters(content_type: str, body: bytes) -> str:
    """The request's parameters independent of their order (Stripe compares parameters, not bytes)."""
    text = body.decode("utf-8", errors="replace")
    if content_type == "application/json":
        try:
            return json.dumps(json.loads(text or "null"), sort_keys=True)
        except json.JSONDecodeError:
            return text
    return json.dumps(sorted(parse_qsl(text, keep_blank_values=True)))


def _idempotency_error(status: int, message: str, code: str | None = None) -> web.Response:
    from aiohttp import web

    error: dict[str, str] = {"type": "idempotency_error", "message": message}
    if code:
        error["code"] = code
    return web.json_response({"error": error}, status=status)


class IdempotencyLayer:
    """Stripe's Idempotency-Key semantics in front of localstripe (POST only, like Stripe)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._saved: dict[tuple[str, str], _Saved] = {}
        self._running: set[tuple[str, str]] = set()
        self._clock = clock

    def as_middleware(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def idempotency(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self.middleware(request, handler)

        return idempotency

    def forget_all(self) -> None:
        self._saved.clear()

    def _prune(self, now: float) -> None:
        for slot in [s for s, saved in self._saved.items() if now - saved.saved_at > KEY_LIFETIME_SECONDS]:
            del self._saved[slot]

    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        from aiohttp import web

        key = request.headers.get("Idempotency-Key", "")
        if request.method == "DELETE" and request.path == "/_config/data":
            self.forget_all()  # localstripe's "flush everything" forgets keys too
        if request.method != "POST" or not key or request.path.startswith(("/_config/", "/js.stripe.com/")):
            result: web.StreamResponse = await handler(request)
            return result
        if len(key) > 255:
            return _idempotency_error(400, "Idempotency keys are up to 255 characters long.")

        slot = (request.headers.get("Authorization", ""), key)
        endpoint = f"{request.method} {request.path}"
        parameters = canonical_parameters(request.content_type, await request.read())
        now = self._clock()
        self._prune(now)
        saved = self._saved.get(slot)
        if saved is not None:
            if saved.endpoint != endpoint:
                return _idempotency_error(
                    400,
                    "Keys for idempotent requests can only be used for the same endpoint they were first "
                    f"used for ('{saved.endpoint}' vs '{endpoint}'). Try using a key other than '{key}' "
                    "if you meant to execute a different request.",
                )
            if saved.parameters != parameters:
                return _idempotency_error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they were first "
                    f"used with. Try using a key other than '{key}' if you meant to execute a different "
                    "request.",
                )
            return web.Response(
                status=saved.status,
                body=saved.body,
                headers={
                    "Content-Type": saved.content_type,
                    "Idempotency-Key": key,
                    "Idempotent-Replayed": "true",
                },
            )
        if slot in self._running:
            return _idempotency_error(
                409,
                "There is currently another in-progress request using this Idempotent Key (that probably "
                "means you submitted twice, and the other request is still going through): "
                f"{key}. Please try again later.",
                code="idempotency_key_in_use",
            )

        self._running.add(slot)
        try:
            response: web.StreamResponse = await handler(request)
        finally:
            self._running.discard(slot)
        if isinstance(response, web.Response) and response.status in SAVED_STATUSES:
            body = response.body
            if isinstance(body, bytes):
                self._saved[slot] = _Saved(
                    endpoint=endpoint,
                    parameters=parameters,
                    status=response.status,
                    body=body,
                    content_type=response.headers.get("Content-Type", "application/json"),
                    saved_at=now,
                )
                response.headers["Idempotency-Key"] = key
        return response


# -- localstripe itself, patched where it differs from Stripe -------------------------------------


def _patch_localstripe() -> None:
    """Module-level changes to localstripe; done once, before the app serves anything."""
    from localstripe import resources, server

    # No pickle: every start is from scratch, and nothing is written to /tmp on each request.
    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None

    # Stripe declines these cards on any charge, not only when they are attached to a customer.
    attach_declined = resources.PaymentMethod._attaching_is_declined
    charge_declined = resources.PaymentMethod._charging_is_declined

    def charging_is_declined(self: Any) -> bool:
        return bool(charge_declined(self) or attach_declined(self))

    resources.PaymentMethod._charging_is_declined = charging_is_declined

    # PaymentIntents take a description and automatic_payment_methods at Stripe.
    intent_init = resources.PaymentIntent.__init__

    def intent_with_description(
        self: Any,
        *args: Any,
        description: Any = None,
        automatic_payment_methods: Any = None,
        **kwargs: Any,
    ) -> None:
        if description is not None and not isinstance(description, str):
            raise server.UserError(400, "Bad request")
        automatic = _automatic_payment_methods(automatic_payment_methods)
        intent_init(self, *args, **kwargs)
        self.description = description
        if automatic is not None:
            self.automatic_payment_methods = automatic

    resources.PaymentIntent.__init__ = intent_with_description

    # Stripe.js's own fields are accepted and dropped, as the publishable key already is.
    get_post_data = server.get_post_data

    async def post_data_without_stripe_js_fields(request: Any, remove_auth: bool = True) -> Any:
        data = await get_post_data(request, remove_auth=remove_auth)
        if data and remove_auth and isinstance(data, dict):
            for field in STRIPE_JS_FIELDS:
                data.pop(field, None)
        return data

    server.get_post_data = post_data_without_stripe_js_fields


def _automatic_payment_methods(value: Any) -> dict[str, Any] | None:
    """Stripe's ``automatic_payment_methods`` (``enabled``, ``allow_redirects``), validated as Stripe does.

    A saved card is charged the same with it; Stripe needs it (or a ``return_url``) to confirm at once.
    """
    from localstripe import server
    from localstripe.resources import try_convert_to_bool

    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {"enabled", "allow_redirects"}:
        raise server.UserError(400, "Bad request")
    enabled = try_convert_to_bool(value.get("enabled"))
    redirects = value.get("allow_redirects", "always")
    if not isinstance(enabled, bool) or redirects not in ("always", "never"):
        raise server.UserError(400, "Bad request", {"param": "automatic_payment_methods"})
    return {"enabled": enabled, "allow_redirects": redirects}


def _resource_missing_middleware() -> Any:
    """localstripe answers an unknown id with a bare 404; Stripe adds ``code: resource_missing``."""
    from aiohttp import web

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if response.status != 404 or not isinstance(response, web.Response) or not response.body:
            return response
        try:
            payload = json.loads(bytes(response.body))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return response
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict) or error.get("type") != "invalid_request_error" or "code" in error:
            return response
        error["code"] = "resource_missing"
        return web.json_response(payload, status=404)

    return middleware


def _card_error_middleware() -> Any:
    """402 card errors in Stripe's shape: ``card_error``, a ``decline_code``, the PaymentIntent."""
    from aiohttp import web
    from localstripe.resources import store

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if response.status != 402 or not isinstance(response, web.Response) or not response.body:
            return response
        try:
            payload = json.loads(bytes(response.body))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return response
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return response
        error["type"] = "card_error"
        if error.get("code") == "card_declined":
            error.setdefault("decline_code", DEFAULT_DECLINE_CODE)
        charge = store.get(f"charge:{error.get('charge')}") if error.get("charge") else None
        intent_id = getattr(charge, "payment_intent", None)
        intent = store.get(f"payment_intent:{intent_id}") if intent_id else None
        if intent is not None:
            error["payment_intent"] = intent._export()
        return web.json_response(payload, status=402)

    return middleware


def _publishable_key_auth(original: Any) -> Any:
    """Let Stripe.js create PaymentMethods with the publishable key, as Stripe does."""
    from aiohttp import web
    from localstripe import server
    from localstripe.server import get_api_key

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if (
            request.method == "POST"
            and request.path == "/v1/payment_methods"
            and get_api_key(request) is None
        ):
            data = await server.get_post_data(request, remove_auth=False)  # the patched one
            key = data.get("key") if data else None
            if isinstance(key, str) and key.startswith("pk_"):
                result: web.StreamResponse = await handler(request)
                return result
        result = await original(request, handler)
        return result

    return middleware


def build_app(webhook_url: str | None = None, webhook_secret: str | None = None) -> web.Application:
    """localstripe's aiohttp app with the changes above (its app is a module global: call once)."""
    _patch_localstripe()
    from localstripe import server
    from localstripe.webhooks import register_webhook

    app: web.Application = server.app
    middlewares = app.middlewares
    middlewares[middlewares.index(server.auth_middleware)] = _publishable_key_auth(server.auth_middleware)
    # Outermost, so it saves and replays the final response, card-error shape included.
    middlewares.insert(0, _card_error_middleware())
    middlewares.insert(0, _resource_missing_middleware())
    middlewares.insert(0, IdempotencyLayer().as_middleware())
    if webhook_url:
        if not webhook_secret:
            raise ValueError("a webhook endpoint needs its signing secret")
        register_webhook(WEBHOOK_ID, webhook_url, webhook_secret, None)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="localstripe on 127.0.0.1 with Stripe's idempotency")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--webhook-url", default=None)
    args = parser.parse_args(argv)

    import logging

    from aiohttp import web

    # Webhook deliveries and requests, one line each (bodies, where card numbers travel, never).
    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.INFO)
    access.addHandler(logging.StreamHandler(sys.stdout))
    app = build_app(args.webhook_url, os.environ.get(WEBHOOK_SECRET_ENV))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=access)


if __name__ == "__main__":
    main()
