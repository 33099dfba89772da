"""localstripe (local/localstripe_app.py) in a child process on a free port, for tests over real HTTP.

``running_localstripe()`` yields a started ``LocalStripe``: its URL, and what a test needs besides the
adapter — cards created the way Stripe.js creates them (publishable key, raw card fields) and reads of
localstripe's store to count customers, PaymentIntents and charges. ``WebhookInbox`` keeps what
localstripe's webhooks POST, headers included; ``HangingServer`` accepts connections and never answers.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from local.localstripe_app import start, stop, wait_until_listening
from tagih.config import Settings
from tagih.gateways.secrets import StripeKeys

SECRET_KEY = "sk_test_tagih_gateway"
PUBLISHABLE_KEY = "pk_test_tagih_gateway"
WEBHOOK_SECRET = "whsec_tagih_gateway_test"
KEYS = StripeKeys(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET)
START_DEADLINE_SECONDS = 20.0
START_TRIES = 3  # a free port may be taken between choosing it and localstripe binding it
HTTP_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def settings_for(api_base: str, timeout: float = 1.0, **extra: Any) -> Settings:
    """Settings pointing the Stripe adapter at ``api_base`` (a short timeout, so hang tests are quick)."""
    return Settings(table_name="unused", stripe_api_base=api_base, gateway_timeout_seconds=timeout, **extra)


@dataclass(frozen=True)
class LocalStripe:
    port: int
    http: requests.Session = field(default_factory=requests.Session, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_card(self, number: str, exp_month: int = 12, exp_year: int = 2034, cvc: str = "123") -> str:
        """A PaymentMethod as Stripe.js creates it in the browser: the raw card, the publishable key."""
        response = self.http.post(
            f"{self.url}/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": number,
                "card[exp_month]": str(exp_month),
                "card[exp_year]": str(exp_year),
                "card[cvc]": cvc,
                "key": PUBLISHABLE_KEY,
            },
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        method_id: str = response.json()["id"]
        return method_id

    def list(self, resource: str, **query: str) -> list[dict[str, Any]]:
        """``GET /v1/<resource>`` with the secret key: e.g. every customer or PaymentIntent so far."""
        response = self.http.get(
            f"{self.url}/v1/{resource}",
            params={"limit": "100", **query},
            auth=(SECRET_KEY, ""),
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["data"]
        return items

    def get(self, resource: str, object_id: str) -> dict[str, Any]:
        response = self.http.get(
            f"{self.url}/v1/{resource}/{object_id}", auth=(SECRET_KEY, ""), timeout=HTTP_TIMEOUT_SECONDS
        )
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found


@contextmanager
def running_localstripe(webhook_url: str | None = None) -> Iterator[LocalStripe]:
    """A fresh localstripe (nothing is shared between starts), webhooks signed with ``WEBHOOK_SECRET``."""
    for attempt in range(1, START_TRIES + 1):
        port = free_port()
        process = start(
            port,
            webhook_url=webhook_url,
            webhook_secret=WEBHOOK_SECRET if webhook_url else None,
            stdout=subprocess.DEVNULL,  # its access log would fill an unread pipe
        )
        try:
            wait_until_listening(process, port, START_DEADLINE_SECONDS)
        except RuntimeError:
            stop(process)
            if attempt == START_TRIES:
                raise
            continue
        server = LocalStripe(port)
        try:
            yield server
        finally:
            server.http.close()
            stop(process)
        return


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]  # names lower-cased, as API Gateway (HTTP API) hands them to a function
    body: bytes


class WebhookInbox:
    """Receives POSTs on 127.0.0.1 and keeps their headers and raw bodies (answering 200)."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._arrived = threading.Condition()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                delivery = Delivery({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with inbox._arrived:
                    inbox.deliveries.append(delivery)
                    inbox._arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll, so shutdown() at the end of each test returns at once.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/stripe"

    def wait_for(self, predicate: Any, timeout: float) -> Delivery:
        """The first delivery for which ``predicate(delivery)`` holds, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for delivery in self.deliveries:
                    if predicate(delivery):
                        return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching webhook within {timeout}s")
                self._arrived.wait(remaining)

    def __enter__(self) -> WebhookInbox:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class HangingServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)  # so the accept loop notices __exit__
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by __exit__
            self._held.append(connection)  # kept open, never read or answered

    def __enter__(self) -> HangingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._socket.close()
        for connection in self._held:
            connection.close()
