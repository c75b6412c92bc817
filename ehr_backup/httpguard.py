"""Request bodies cost nothing before credentials are known, and never more than a small cap.

FastAPI reads a route's whole body before it resolves the dependency that checks credentials, so an
anonymous 200 MB POST used to be held in memory just to be answered 401. `HttpGuard` is pure ASGI and
sits in front of everything: for /api/ it checks credentials from the headers before the body is
touched; for every route it refuses a declared Content-Length over the cap, and counts the bytes it
hands on (chunked bodies and lying Content-Lengths included), stopping at the cap with 413; a body
that does not arrive within the read timeout gets 408. Refusals close the connection, so the rest of
a refused body is never read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BackupError, RequestTimeout, TooLarge

API_PREFIX = "/api/"
Precheck = Callable[[Scope], Awaitable[Response | None]]
OnRefused = Callable[[Scope, BackupError], Awaitable[None]]


class _BodyRefused(Exception):
    """Raised from `receive` once the body broke a limit (the app must stop reading)."""


def refusal(exc: BackupError) -> Response:
    """The JSON error response for a refused request; it closes the connection."""
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers={"connection": "close"})


class HttpGuard:
    """Pure ASGI: credentials before bodies on /api/, a size cap and a read deadline on every body."""

    def __init__(self, app: ASGIApp, *, max_body: int, read_timeout: float, precheck: Precheck,
                 on_refused: OnRefused) -> None:
        self.app = app
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.precheck = precheck
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX):
            refused = await self.precheck(scope)
            if refused is not None:
                refused.headers["connection"] = "close"
                await refused(scope, receive, send)
                return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await self._refuse(scope, receive, send, self._too_large())
            return
        await self._run(scope, receive, send)

    def _too_large(self) -> TooLarge:
        return TooLarge(f"request body too large: at most {self.max_body // 1024} KiB")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: BackupError) -> None:
        await self.on_refused(scope, exc)
        await refusal(exc)(scope, receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        received = 0
        body_done = False
        failure: BackupError | None = None
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done, failure
            if body_done:  # e.g. a streaming response listening for the disconnect: no deadline then
                return await receive()
            if failure is not None:
                raise _BodyRefused
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except TimeoutError:
                failure = RequestTimeout(f"request body not received within {self.read_timeout:g} seconds")
                raise _BodyRefused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    failure = self._too_large()
                    raise _BodyRefused
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if failure is not None and not started:
                return  # whatever the app answers to a body it could not read, the answer is ours
            if message["type"] == "http.response.start":
                started = True
                if not body_done and _has_body(scope):  # answered without reading: don't drain the rest
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if failure is None:
                raise
        if failure is not None and not started:
            await self._refuse(scope, receive, send, failure)


def _has_body(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses these before we see them
    return None
