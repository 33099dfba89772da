"""The local Midtrans fake (local/midtrans_fake.py) started in-process on a free port, for tests.

``running_midtrans_fake()`` yields a started fake; ``NotificationInbox`` is a tiny HTTP receiver
that keeps what the fake's ``settle``/``notify`` POST to it, so a test can hand the exact bytes to
``verify_notification``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.midtrans_fake import MidtransFake
from tagih.config import Settings
from tagih.gateways.secrets import MidtransKeys

SERVER_KEY = "SB-Mid-server-test"
KEYS = MidtransKeys(server_key=SERVER_KEY, client_key="SB-Mid-client-test", is_production=False)


def settings_for(fake: MidtransFake, timeout: float = 1.0, **extra: Any) -> Settings:
    """Settings pointing the Midtrans adapter at ``fake`` (a short timeout, so hang tests are quick)."""
    return Settings(
        table_name="unused",
        midtrans_api_base=fake.api_base,
        midtrans_snap_base=fake.snap_base,
        gateway_timeout_seconds=timeout,
        **extra,
    )


class NotificationInbox:
    """Receives POSTs on 127.0.0.1 and keeps their raw bodies (answering 200)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                inbox.bodies.append(self.rfile.read(length))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/midtrans"

    def __enter__(self) -> NotificationInbox:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running_midtrans_fake(
    server_key: str = SERVER_KEY, notification_url: str | None = None
) -> Iterator[MidtransFake]:
    fake = MidtransFake(server_key, notification_url).start()
    try:
        yield fake
    finally:
        fake.stop()
