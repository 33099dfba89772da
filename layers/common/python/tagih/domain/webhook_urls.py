"""The URL guard of tenant webhooks: where Tagih agrees to send an organization's events.

A webhook URL is chosen by a tenant, and Tagih's functions POST to it from inside the AWS account:
without a guard it is a way to reach the instance metadata service, the VPC or the function's own
loopback (server-side request forgery). So a URL must be ``https`` and every address its host
resolves to must be globally routable: private, loopback, link-local (169.254.169.254, the cloud
metadata address), shared (100.64/10), multicast, reserved and unspecified addresses are refused,
IPv4-mapped IPv6 forms included. The check runs at creation and again before each delivery, and the
delivery connects to an address this check returned (``CheckedUrl.addresses``), so a host that
re-resolves to a private address between check and connect (DNS rebinding) reaches nothing.

The local stack alone (``allow_loopback``, never on prod) accepts ``http`` or ``https`` to
``127.0.0.1`` and ``localhost`` (API.md): a developer's receiver on the same machine. Nothing else is
relaxed there: another hostname that resolves to a loopback address is still refused.

Name resolution is a port (``Resolver``): tests pass a fake; functions use ``system_resolver``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from tagih.domain.errors import InvalidField

Resolver = Callable[[str], Sequence[str]]  # hostname → IP addresses (empty or OSError: unknown)

MAX_URL_LENGTH = 2048
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
# Hostnames some clouds answer metadata on; they resolve to link-local addresses anyway, but are
# refused by name so that a resolver which fails open cannot let them through.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class UrlRefused(InvalidField):
    """The URL is not one Tagih delivers to (422 ``validation_error`` naming ``url``)."""

    def __init__(self, reason: str) -> None:
        super().__init__("url", reason, "url_refused")
        self.reason = reason


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    scheme: str  # "https", or "http" for a local receiver
    host: str  # as written (lower case): the TLS server name and the Host header
    port: int
    target: str  # path and query, what the request line carries
    addresses: tuple[str, ...]  # the checked addresses; the delivery connects to one of these


def system_resolver(host: str) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), as the socket library sees it."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if address.is_private:
        return "private"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "not routable"
    if not address.is_global:  # 100.64.0.0/10 and the like
        return "not public"
    return None


def _split(url: str, allow_loopback: bool) -> tuple[str, str, int | None, str, bool]:
    """Scheme, host, port, request target, and whether it is a local receiver: or ``UrlRefused``."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"The URL must be at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlRefused(f"Not a valid URL: {error}.") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UrlRefused("The URL needs a host.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("Credentials in the URL are not accepted; authenticate with the signature.")
    if parts.fragment:
        raise UrlRefused("A URL fragment is never sent; remove it.")
    local_receiver = allow_loopback and host in LOOPBACK_HOSTS
    if scheme != "https" and not (local_receiver and scheme == "http"):
        raise UrlRefused("The URL must use https.")
    if host in METADATA_HOSTS:
        raise UrlRefused("Cloud metadata hosts are refused.")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port, target, local_receiver


def check_url(url: str, *, resolve: Resolver, allow_loopback: bool = False) -> CheckedUrl:
    """The URL with the addresses it may be delivered to, or ``UrlRefused`` saying why not."""
    scheme, host, port, target, local_receiver = _split(url, allow_loopback)
    try:
        resolved = list(resolve(host))
    except (OSError, UnicodeError):
        resolved = []
    if not resolved:
        raise UrlRefused(f"The host {host!r} does not resolve.")
    addresses: list[str] = []
    for text in resolved:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone index
        except ValueError:
            raise UrlRefused(f"The host {host!r} resolves to something that is not an address.") from None
        problem = _refused_address(address)
        if problem == "loopback" and local_receiver:
            problem = None
        if problem is not None:
            raise UrlRefused(f"The host {host!r} resolves to a {problem} address; it must be public.")
        addresses.append(str(address))
    return CheckedUrl(
        url=url,
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        target=target,
        addresses=tuple(addresses),
    )
