"""Every error under /api/ (and /metrics, /healthz, /readyz) is {"error": "<a sentence>"}, whatever made it.

The routes raise typed errors (errors.py) that already render so; what remains comes from elsewhere:
FastAPI's {"detail": …} for a wrong method, NiceGUI's HTML page for an unknown path, Starlette's plain
text for an unhandled exception. `JsonErrors` is pure ASGI around the app and re-renders those, so
the documented shape holds for every status without depending on which handler answered.
`invalid_request` turns a request validation failure into a sentence naming the field and the problem.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ehr_backup.api")
JSON_PATHS = ("/api/", "/metrics", "/healthz", "/readyz")
API_DOCS = "/api/admin/backup/openapi.json"


def is_json_path(path: str) -> bool:
    """Whether a path's responses are JSON (the API and the monitoring endpoints)."""
    return path == "/api" or path.startswith("/api/") or path in JSON_PATHS[1:]


def sentence_for(status: int, method: str, allow: str | None, detail: Any = None) -> str:
    """A sentence for an error response that came without one (pure)."""
    if status == 404:
        return f"there is no such API endpoint: check the address (the endpoints are listed at {API_DOCS})"
    if status == 405:
        allowed = ", ".join(m.strip() for m in (allow or "").split(",") if m.strip())
        return (f"the method {method} is not allowed here" + (f"; this endpoint accepts {allowed}" if allowed else ""))
    if status >= 500:
        return "internal error; see the server log"
    if isinstance(detail, str) and detail and detail != HTTPStatus(status).phrase:
        return detail
    try:
        return f"request refused: {HTTPStatus(status).phrase.lower()}"
    except ValueError:
        return "request refused"


def invalid_request(errors: Sequence[dict[str, Any]]) -> str:
    """One sentence naming each field and what is wrong with it (pure)."""
    parts = []
    for e in errors:
        kind = str(e.get("type", ""))
        loc = [str(p) for p in e.get("loc", ())]
        where, field = (loc[0], ".".join(loc[1:])) if loc else ("body", "")
        if kind == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        name = {"query": f"query parameter {field}", "path": f"{field} in the address",
                "header": f"header {field}"}.get(where, f"field {field}" if field else "the request body")
        if kind == "missing":
            parts.append(f"{name} is required")
        elif kind == "extra_forbidden":
            parts.append(f"{name} is not a known field")
        elif kind in ("model_attributes_type", "dict_type") and not field:
            parts.append("the request body must be a JSON object")
        else:
            parts.append(f"{name}: {str(e.get('msg', 'invalid value')).lower()}")
    unique = list(dict.fromkeys(parts))
    return "invalid request: " + "; ".join(unique[:5]) + (" …" if len(unique) > 5 else "") if unique \
        else "invalid request"


class JsonErrors:
    """Pure ASGI: under the JSON paths, an error response without {"error": …} is re-rendered as one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_json_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body: list[bytes] = []
        sent = False

        async def capture(message: Message) -> None:
            nonlocal start, sent
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    sent = True
                    await send(message)
                else:
                    start = message  # held until the body shows whether it needs re-rendering
                return
            if start is None or sent:
                await send(message)
                return
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                sent = True
                await self._finish(scope, start, b"".join(body), send)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            if start is not None or sent:
                raise
            log.exception("unhandled error answering %s %s", scope.get("method"), scope.get("path"))
            await _send_json(send, 500, sentence_for(500, scope.get("method", ""), None), [])

    async def _finish(self, scope: Scope, start: Message, body: bytes, send: Send) -> None:
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length",
                                                                                     b"content-type")]
        found = {k.lower(): v for k, v in start.get("headers", [])}
        parsed = _json(body) if b"json" in found.get(b"content-type", b"") else None
        if isinstance(parsed, dict) and (isinstance(parsed.get("error"), str) or "detail" not in parsed):
            # ours: the {"error": …} shape, or a documented body of its own (/readyz names failing checks)
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        allow = found.get(b"allow", b"").decode("latin-1") or None
        detail = parsed.get("detail") if isinstance(parsed, dict) else None
        message = sentence_for(start["status"], scope.get("method", ""), allow, detail)
        await _send_json(send, start["status"], message, headers, head=scope.get("method") == "HEAD")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


async def _send_json(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]],
                     head: bool = False) -> None:
    data = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else data})
