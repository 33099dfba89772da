"""POSTing a webhook: ``http.client`` to an address the URL guard checked, never following redirects.

The connection goes to one of ``CheckedUrl.addresses`` (tried in order), not to a fresh resolution of
the host, so DNS cannot change the destination after the check; TLS still verifies the certificate
against the host name (SNI). ``http.client`` never follows a redirect: a 3xx is an answer like any
non-2xx, logged and retried. One timeout bounds connecting and each read (5 s by default).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from functools import cache

from tagih.domain.webhook_urls import CheckedUrl
from tagih.domain.webhooks import EXCERPT_CHARACTERS, TransportResult

MAX_READ_BYTES = 4096  # enough for the excerpt; the rest of a large answer is not read


@cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=_tls_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = _tls_context().wrap_socket(raw, server_hostname=self.host)


def _connection(url: CheckedUrl, address: str, timeout: float) -> http.client.HTTPConnection:
    if url.scheme == "https":
        return _PinnedHTTPSConnection(url.host, url.port, address, timeout)
    return _PinnedHTTPConnection(url.host, url.port, address, timeout)


class HttpTransport:
    """Implements ``domain.webhooks.Transport``."""

    def post(
        self, url: CheckedUrl, body: bytes, headers: dict[str, str], timeout_seconds: float
    ) -> TransportResult:
        started = time.monotonic()
        error = "no address to connect to"
        for address in url.addresses:
            connection = _connection(url, address, timeout_seconds)
            try:
                connection.connect()
            except OSError as failure:  # refused, unreachable, TLS: the next address may answer
                error = _describe(failure)
                connection.close()
                continue
            try:
                connection.request("POST", url.target, body=body, headers=headers)
                response = connection.getresponse()
                excerpt = response.read(MAX_READ_BYTES).decode("utf-8", errors="replace")
                return TransportResult(
                    status_code=response.status,
                    latency_ms=_elapsed_ms(started),
                    response_excerpt=excerpt[:EXCERPT_CHARACTERS] or None,
                    error=None
                    if response.status < 300 or response.status >= 400
                    else "redirect not followed",
                )
            except (OSError, http.client.HTTPException) as failure:
                return TransportResult(
                    status_code=None, latency_ms=_elapsed_ms(started), error=_describe(failure)
                )
            finally:
                connection.close()
        return TransportResult(status_code=None, latency_ms=_elapsed_ms(started), error=error)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(failure: BaseException) -> str:
    if isinstance(failure, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(failure, ssl.SSLError):
        return f"TLS error: {failure.reason or failure}"
    return f"{type(failure).__name__}: {failure}"[:200]
