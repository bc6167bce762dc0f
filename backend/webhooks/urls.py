"""Which ``callback_url`` the service may call: a guard against server-side request forgery.

A callback must be ``https``, and every address its host resolves to must be a public one
(not private, loopback, link-local, shared, reserved or multicast), unless the host (by
name, or one of its addresses) is listed in ``SPRITEQ_WEBHOOKS__ALLOW_HTTP_HOSTS``, which
allows plain ``http`` and any address. The check runs at submission (a 422) and again at
each delivery, which then connects to the very address it checked (the name is sent as
``Host`` and as TLS SNI), so a DNS answer that changes in between (rebinding) cannot turn a
delivery towards an internal service.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from backend.errors import InvalidRequest

RESOLVE_TIMEOUT_S = 2.0


class UnsafeCallback(InvalidRequest):
    """The callback URL may not be called (a 422 at submission)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"callback_url: {reason}", details=[{"field": "callback_url", "reason": reason}]
        )


@dataclass(frozen=True)
class Target:
    """A checked callback: its URL, and the address a delivery connects to."""

    url: httpx.URL
    address: str

    def pinned(self) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """The URL with the checked address for its host, the headers and the request
        extensions that keep the name for ``Host`` and TLS (SNI and certificate check)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        host_header = self.url.host if self.url.port is None else f"{self.url.host}:{self.url.port}"
        extensions = {"sni_hostname": self.url.host} if self.url.scheme == "https" else {}
        return self.url.copy_with(host=host), {"Host": host_header}, extensions


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _addresses(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise UnsafeCallback(f"the host {host!r} does not resolve") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_callback(url: str, allowed: frozenset[str]) -> httpx.URL:
    """The URL, if its form may be called (scheme, host); raises ``UnsafeCallback``."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise UnsafeCallback("not a valid URL") from exc
    host = parsed.host.lower()
    if parsed.scheme not in ("https", "http") or not host:
        raise UnsafeCallback("must be an https URL with a host")
    if parsed.scheme == "http" and host not in allowed:
        raise UnsafeCallback("must be https (plain http only for the hosts an operator allows)")
    return parsed


async def check_callback(url: str, allowed: frozenset[str]) -> Target:
    """Check ``url`` and resolve its host; raises ``UnsafeCallback`` (422) when it may not
    be called. ``allowed``: the lower-cased hosts and addresses of the allow-list."""
    parsed = parse_callback(url, allowed)
    host = parsed.host.lower()
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await _addresses(host, port)
    if host in allowed:
        return Target(parsed, addresses[0])
    for address in addresses:
        if address not in allowed and not _public(address):
            raise UnsafeCallback(
                "resolves to a private, loopback or link-local address, which is refused"
            )
    return Target(parsed, addresses[0])
