"""POSTing a webhook: ``http.client`` to an address the URL guard checked, never following redirects.

The connection goes to one of ``CheckedUrl.addresses`` (tried in order), not to a fresh resolution of
the host, so DNS cannot change the destination after the check; TLS still verifies the certificate
against the host name (SNI). ``http.client`` never follows a redirect: a 3xx is an answer like any
non-2xx, logged and retried.

One deadline bounds the whole attempt (5 s by default): every address tried, the TLS handshake, the
request and the answer. A socket timeout alone bounds each read, so a receiver sending a byte every
2 s held an attempt for as long as it liked; here a watchdog shuts the connection down when the
deadline passes, whatever the receiver is doing, and the attempt is recorded as timed out.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from contextlib import suppress
from functools import cache

from tagih.domain.webhook_urls import CheckedUrl
from tagih.domain.webhooks import EXCERPT_CHARACTERS, TransportResult

MAX_READ_BYTES = 4096  # enough for the excerpt; the rest of a large answer is not read


@cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _Deadline:
    """The attempt's one deadline, and the watchdog that enforces it on the open connection."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        # A duplicate of the connection's socket: shutting it down ends the connection for every
        # descriptor, even after the TLS wrapper took over (and detached) the original.
        self._handle: socket.socket | None = None
        self.expired = False

    def open(self, address: str, port: int) -> socket.socket:
        remaining = self._ends - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise TimeoutError()
        sock = socket.create_connection((address, port), remaining)
        with self._lock:
            self._handle = sock.dup()
            self._timer = threading.Timer(max(0.0, self._ends - time.monotonic()), self._cut)
            self._timer.daemon = True
            self._timer.start()
        return sock

    def _cut(self) -> None:
        with self._lock:
            if self._handle is None:  # released first: the attempt finished in time
                return
            self.expired = True
            with suppress(OSError):  # wakes a blocked recv or send in the attempt's thread
                self._handle.shutdown(socket.SHUT_RDWR)

    def release(self) -> bool:
        """Stop watching the connection; whether the deadline cut it."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._handle is not None:
                self._handle.close()
            self._timer = self._handle = None
            return self.expired

    def reason(self) -> str:
        return f"timed out after {self.seconds:g} s"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.seconds)
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = self._deadline.open(self._address, self.port)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.seconds, context=_tls_context())
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        raw = self._deadline.open(self._address, self.port)
        self.sock = _tls_context().wrap_socket(raw, server_hostname=self.host)


def _connection(url: CheckedUrl, address: str, deadline: _Deadline) -> http.client.HTTPConnection:
    if url.scheme == "https":
        return _PinnedHTTPSConnection(url.host, url.port, address, deadline)
    return _PinnedHTTPConnection(url.host, url.port, address, deadline)


class HttpTransport:
    """Implements ``domain.webhooks.Transport``; ``timeout_seconds`` is the attempt's total deadline."""

    def post(
        self, url: CheckedUrl, body: bytes, headers: dict[str, str], timeout_seconds: float
    ) -> TransportResult:
        started = time.monotonic()
        deadline = _Deadline(timeout_seconds)
        error = "no address to connect to"
        for address in url.addresses:
            connection = _connection(url, address, deadline)
            try:
                connection.connect()
            except OSError as refused:  # refused, unreachable, TLS: the next address may answer
                cut = deadline.release()
                connection.close()
                if cut:
                    error = deadline.reason()
                    break
                error = _describe(refused)
                continue
            failure: BaseException | None = None
            try:
                connection.request("POST", url.target, body=body, headers=headers)
                response = connection.getresponse()
                excerpt = response.read(MAX_READ_BYTES).decode("utf-8", errors="replace")
            except (OSError, http.client.HTTPException) as caught:
                failure = caught
            finally:
                cut = deadline.release()
                connection.close()
            if cut or failure is not None:  # a cut answer is not the receiver's answer, even if 2xx
                error = _describe(failure) if failure is not None and not cut else deadline.reason()
                return TransportResult(status_code=None, latency_ms=_elapsed_ms(started), error=error)
            return TransportResult(
                status_code=response.status,
                latency_ms=_elapsed_ms(started),
                response_excerpt=excerpt[:EXCERPT_CHARACTERS] or None,
                error=None if response.status < 300 or response.status >= 400 else "redirect not followed",
            )
        return TransportResult(status_code=None, latency_ms=_elapsed_ms(started), error=error)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(failure: BaseException) -> str:
    if isinstance(failure, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(failure, ssl.SSLError):
        return f"TLS error: {failure.reason or failure}"
    return f"{type(failure).__name__}: {failure}"[:200]
