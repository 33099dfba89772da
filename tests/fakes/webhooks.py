"""In-memory ports of ``tagih.domain.webhooks`` and a real HTTP receiver on 127.0.0.1.

The receiver is what a tenant runs: it answers each POST with the next status of its script (the
last one repeats), optionally redirecting, and records what it was sent. Tests poll it with a deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tagih.domain.errors import VersionConflict, WebhookEndpointNotFound
from tagih.domain.webhook_urls import CheckedUrl
from tagih.domain.webhooks import Delivery, DeliveryRef, TransportResult, WebhookEndpoint


class InMemoryWebhooks:
    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, str], WebhookEndpoint] = {}

    def create(self, endpoint: WebhookEndpoint) -> None:
        self.endpoints[(endpoint.organization_id, endpoint.id)] = endpoint

    def list_for_organization(self, organization_id: str) -> list[WebhookEndpoint]:
        return [e for (org, _), e in self.endpoints.items() if org == organization_id]

    def find(self, organization_id: str, webhook_id: str) -> WebhookEndpoint | None:
        return self.endpoints.get((organization_id, webhook_id))

    def get(self, organization_id: str, webhook_id: str) -> WebhookEndpoint:
        found = self.find(organization_id, webhook_id)
        if found is None:
            raise WebhookEndpointNotFound()
        return found

    def delete(self, organization_id: str, webhook_id: str) -> None:
        self.get(organization_id, webhook_id)
        del self.endpoints[(organization_id, webhook_id)]

    def replace(self, endpoint: WebhookEndpoint, seen_version: int) -> None:
        if self.get(endpoint.organization_id, endpoint.id).version != seen_version:
            raise VersionConflict()
        self.endpoints[(endpoint.organization_id, endpoint.id)] = endpoint


def _key(ref: DeliveryRef | Delivery) -> tuple[str, str, int]:
    return (ref.organization_id, ref.webhook_id, ref.sequence)


class InMemoryDeliveries:
    def __init__(self) -> None:
        self.deliveries: dict[tuple[str, str, int], Delivery] = {}
        self.sequences: dict[tuple[str, str], int] = {}

    def next_sequence(self, organization_id: str, event_id: str, now: datetime) -> int:
        key = (organization_id, event_id)
        if key not in self.sequences:
            self.sequences[key] = 1 + sum(1 for org, _ in self.sequences if org == organization_id)
        return self.sequences[key]

    def create(self, delivery: Delivery) -> tuple[Delivery, bool]:
        existing = self.deliveries.get(_key(delivery))
        if existing is not None:
            return existing, False
        self.deliveries[_key(delivery)] = delivery
        return delivery, True

    def get(self, ref: DeliveryRef) -> Delivery | None:
        return self.deliveries.get(_key(ref))

    def record(self, delivery: Delivery, seen_attempts: int) -> bool:
        stored = self.deliveries.get(_key(delivery))
        if stored is None or len(stored.attempts) != seen_attempts:
            return False
        self.deliveries[_key(delivery)] = delivery
        return True

    def list_for_webhook(self, organization_id: str, webhook_id: str) -> list[Delivery]:
        found = [
            d
            for d in self.deliveries.values()
            if (d.organization_id, d.webhook_id) == (organization_id, webhook_id)
        ]
        return sorted(found, key=lambda d: d.sequence, reverse=True)


class RecordingQueue:
    def __init__(self) -> None:
        self.scheduled: list[tuple[DeliveryRef, int]] = []
        self.dead_letters: list[DeliveryRef] = []

    def schedule(self, ref: DeliveryRef, delay_seconds: int) -> None:
        self.scheduled.append((ref, delay_seconds))

    def dead_letter(self, ref: DeliveryRef) -> None:
        self.dead_letters.append(ref)

    def take(self) -> list[tuple[DeliveryRef, int]]:
        taken, self.scheduled = self.scheduled, []
        return taken


@dataclass
class Posted:
    url: CheckedUrl
    body: bytes
    headers: dict[str, str]


@dataclass
class ScriptedTransport:
    """Answers POSTs with the next status of ``statuses`` (the last repeats) and records them."""

    statuses: Sequence[int] = (200,)
    posted: list[Posted] = field(default_factory=list)

    def post(
        self, url: CheckedUrl, body: bytes, headers: dict[str, str], timeout_seconds: float
    ) -> TransportResult:
        self.posted.append(Posted(url, body, dict(headers)))
        status = self.statuses[min(len(self.posted) - 1, len(self.statuses) - 1)]
        return TransportResult(
            status_code=status, latency_ms=3, response_excerpt="ok" if status < 300 else "no"
        )


def fake_resolver(table: Mapping[str, Sequence[str]]) -> Callable[[str], Sequence[str]]:
    """A resolver answering from ``table``; an IP literal resolves to itself, anything else to nothing."""

    def resolve(host: str) -> Sequence[str]:
        if host in table:
            return table[host]
        if host.replace(".", "").isdigit() or ":" in host:
            return [host]
        raise OSError(f"unknown host {host}")

    return resolve


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A tenant's webhook receiver on 127.0.0.1."""

    def __init__(self, statuses: Sequence[int] = (200,), redirect_to: str | None = None) -> None:
        self.statuses = list(statuses)
        self.redirect_to = redirect_to
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    index = min(len(receiver.received), len(receiver.statuses) - 1)
                    status = receiver.statuses[index]
                    receiver.received.append(Received(self.path, dict(self.headers), body, status))
                self.send_response(status)
                if receiver.redirect_to is not None:
                    self.send_header("Location", receiver.redirect_to)
                answer = b'{"received": true}' if status < 300 else b"receiver says no"
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tagih"

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, deadline_seconds: float = 30.0) -> list[Received]:
        """The first ``count`` requests, polled until a deadline (then what arrived, for the assert)."""
        end = time.monotonic() + deadline_seconds
        while time.monotonic() < end:
            received = self.requests()
            if len(received) >= count:
                return received
            time.sleep(0.05)
        return self.requests()


@contextmanager
def running_receiver(statuses: Sequence[int] = (200,), redirect_to: str | None = None) -> Iterator[Receiver]:
    receiver = Receiver(statuses, redirect_to)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join()


class DrippingReceiver:
    """A receiver on 127.0.0.1 that reads the POST, then sends a complete 200 answer one byte every
    ``interval`` seconds: each read gets a byte well within any per-read timeout, but the whole
    answer takes ``len(answer) * interval`` seconds. It notes how far it got before the client left."""

    def __init__(self, answer_bytes: int = 200, interval: float = 0.05) -> None:
        body = b"x" * max(0, answer_bytes - 64)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        self.answer = head + body
        self.interval = interval
        self.sent = 0
        self.disconnected = threading.Event()  # the client closed before the last byte
        self.finished = threading.Event()  # the last byte went out
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hooks/tagih"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = threading.Event()

    @property
    def seconds_to_answer(self) -> float:
        return len(self.answer) * self.interval

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)  # the request (headers and the small signed body)
                for byte in self.answer:
                    if self._stop.wait(self.interval):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:  # reset or broken pipe: the client cut the connection
                        self.disconnected.set()
                        break
                    self.sent += 1
                else:
                    self.finished.set()

    def __enter__(self) -> DrippingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()
