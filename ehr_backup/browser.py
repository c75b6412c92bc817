"""The browser nonce: a random HttpOnly cookie given out with the sign-in pages.

A login ticket is bound to the nonce of the browser that logged in (another browser cannot redeem
it), and a browser that has signed in to an account before is throttled on its own (throttle.py).
"""

from __future__ import annotations

import re
import secrets

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BROWSER_COOKIE = "ehr_browser"
SIGN_IN_PATHS = ("/login", "/setup")
MAX_AGE = 365 * 24 * 3600
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def browser_nonce(scope: Scope) -> str:
    """The nonce this request's browser holds (set by BrowserNonce on sign-in pages), or ''."""
    state = scope.get("state") or {}
    nonce = state.get("browser_nonce") or HTTPConnection(scope).cookies.get(BROWSER_COOKIE, "")
    return nonce if _NONCE_RE.fullmatch(nonce) else ""


class BrowserNonce:
    """Give a browser that opens a sign-in page a nonce cookie unless it has one (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in SIGN_IN_PATHS:
            await self.app(scope, receive, send)
            return
        current = browser_nonce(scope)
        nonce = current or secrets.token_urlsafe(32)
        scope.setdefault("state", {})["browser_nonce"] = nonce
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{BROWSER_COOKIE}={nonce}; Max-Age={MAX_AGE}; Path=/; HttpOnly; SameSite=Lax{secure}"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and not current:
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)
