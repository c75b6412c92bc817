"""NiceGUI's socket.io endpoint: our own origin only, and a page's events only from its own session.

NiceGUI accepts sockets from any Origin and routes each event by the client id written inside the
message, so any socket that learnt an admin page's client id could fire that page's buttons. Here:
- a socket whose Origin is not this app's (host and port of the Host header) is refused;
- a socket may attach to (handshake with) a page opened in a signed-in session only when the socket's
  own `ehr_session` cookie is that session's;
- events, acks, JavaScript responses and logs count only for the page the socket attached to.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from socketio import AsyncServer
from socketio.exceptions import ConnectionRefusedError as SocketRefused
from starlette.requests import cookie_parser

from .audit import Actor
from .clientaddr import parse_ip
from .refusals import RefusalAudit

log = logging.getLogger("ehr_backup.sockets")
SESSION_COOKIE = "ehr_session"
ROUTED_EVENTS = ("event", "javascript_response", "ack", "log")


def same_origin(origin: str | None, environ: dict[str, Any] | None = None) -> bool:
    """Whether a socket's Origin names this app's host and port (engine.io's origin check)."""
    host = (environ or {}).get("HTTP_HOST", "")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def _page_session(client: Any) -> str | None:
    """The session token the page was opened with (None for public pages such as /login)."""
    try:
        request = client.request
    except (AttributeError, RuntimeError):
        return None
    token = getattr(request.state, "session_token", None)
    return token if isinstance(token, str) and token else None


def may_attach(client: Any, environ: dict[str, Any]) -> bool:
    """Whether a socket with this handshake environ may attach to the page `client`."""
    token = _page_session(client)
    if token is None:
        return True
    presented = cookie_parser(environ.get("HTTP_COOKIE", "")).get(SESSION_COOKIE, "")
    return hmac.compare_digest(token.encode(), presented.encode())


def protect(sio: AsyncServer, clients: dict[str, Any], refusals: RefusalAudit) -> None:
    """Wrap NiceGUI's socket handlers (registered when nicegui is imported) with the checks above."""
    sio.eio.cors_allowed_origins = same_origin
    handlers = sio.handlers["/"]
    # NiceGUI's own handlers, kept from the first call: the app can be built again in one process (tests)
    originals: dict[str, Callable[..., Any]] = sio.__dict__.setdefault(
        "_ehr_backup_originals", {name: handlers[name] for name in ("connect", "handshake", *ROUTED_EVENTS)})
    original_connect, original_handshake = originals["connect"], originals["handshake"]

    async def refuse(environ: dict[str, Any], reason: str) -> None:
        scope = environ.get("asgi.scope") or {}
        peer = scope.get("client") or ("", 0)
        address = str(parse_ip(peer[0]) or "")
        log.warning("socket refused from %s: %s", address or "?", reason)
        await asyncio.to_thread(refusals.record, Actor("anonymous", address, False), "access", "socket",
                                reason)

    async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        client_id = parse_qs(environ.get("QUERY_STRING", "")).get("client_id", [""])[0]
        client = clients.get(client_id)
        if client is not None and not may_attach(client, environ):
            await refuse(environ, "socket from another session")
            raise SocketRefused("this page belongs to another session")
        return await original_connect(sid, environ, auth)

    async def on_handshake(sid: str, data: Any) -> Any:
        environ = sio.get_environ(sid) or {}
        client = clients.get(data.get("client_id", "")) if isinstance(data, dict) else None
        if client is not None and not may_attach(client, environ):
            await refuse(environ, "socket from another session")
            return False
        return await original_handshake(sid, data)

    handlers["connect"] = on_connect
    handlers["handshake"] = on_handshake
    for name in ROUTED_EVENTS:
        handlers[name] = _bound_to_room(sio, originals[name])


def _bound_to_room(sio: AsyncServer, handler: Callable[..., Any]) -> Callable[..., Any]:
    """Drop messages whose client id is not the page this socket attached to."""

    def attached(sid: str, msg: Any) -> bool:
        return isinstance(msg, dict) and isinstance(msg.get("client_id"), str) and \
            msg["client_id"] in sio.rooms(sid)

    if inspect.iscoroutinefunction(handler):
        async def on_async(sid: str, msg: Any) -> Any:
            return await handler(sid, msg) if attached(sid, msg) else None
        return on_async

    def on_sync(sid: str, msg: Any) -> Any:
        return handler(sid, msg) if attached(sid, msg) else None
    return on_sync
