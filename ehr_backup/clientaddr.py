"""Who is on the other end: the peer, or what a configured reverse proxy says the client was.

uvicorn's own proxy handling is turned off (it believes X-Forwarded-For from 127.0.0.1 by default,
so any local process could forge the audited address and escape per-address throttles). Instead,
`ClientAddress` resolves every HTTP and WebSocket request once, with `resolve`, and writes the
result into the ASGI scope; everything else reads it back through `client_address`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """A valid IP address (IPv4-mapped IPv6 as IPv4, `[v6]` brackets allowed), else None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text or len(text) > 64:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: IPAddress, proxies: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def resolve(peer: str | None, forwarded_for: Iterable[str], forwarded_proto: Iterable[str],
            scheme: str, proxies: Sequence[Network]) -> tuple[str, str]:
    """(client address, scheme) of a request from `peer` carrying these X-Forwarded-* header values.

    Forwarded headers count only when the peer is a configured proxy. Then X-Forwarded-For is read
    from the right (the entry our proxy appended) leftwards, past further trusted proxies, to the first
    untrusted address: that is the client. An entry that is not an IP address ends the walk at the last
    valid hop, so nothing but a valid IP address is ever returned (or "" when the peer has none).
    """
    peer_ip = parse_ip(peer or "")
    if peer_ip is None:
        return "", scheme
    if not proxies or not _trusted(peer_ip, proxies):
        return str(peer_ip), scheme
    client = peer_ip
    entries = [e for value in forwarded_for for e in value.split(",")]
    for entry in reversed(entries):
        ip = parse_ip(entry)
        if ip is None:
            break
        client = ip
        if not _trusted(ip, proxies):
            break
    protos = [p.strip().lower() for value in forwarded_proto for p in value.split(",")]
    if protos and protos[-1] in ("http", "https"):
        secure = protos[-1] == "https"
        scheme = ("wss" if secure else "ws") if scheme in ("ws", "wss") else ("https" if secure else "http")
    return str(client), scheme


class ClientAddress:
    """Pure ASGI: put the resolved client address and scheme into every HTTP and WebSocket scope."""

    def __init__(self, app: ASGIApp, proxies: Sequence[Network]) -> None:
        self.app = app
        self.proxies = tuple(proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope.get("headers", [])
            xff = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
            xfp = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-proto"]
            peer = scope.get("client")
            address, scheme = resolve(peer[0] if peer else None, xff, xfp, scope.get("scheme", "http"),
                                      self.proxies)
            scope["client"] = (address, peer[1] if peer else 0)
            scope["scheme"] = scheme
        await self.app(scope, receive, send)


def client_address(conn: HTTPConnection) -> str:
    """The client address of a request or WebSocket, as `ClientAddress` resolved it ("" if none)."""
    host = conn.client.host if conn.client else ""
    ip = parse_ip(host)
    return str(ip) if ip is not None else ""
