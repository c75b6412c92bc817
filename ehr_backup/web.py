"""The web app: one NiceGUI process serving the pages and the REST API over the same service."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import os
import secrets
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import monitoring
from .api import PRINCIPAL_KEY, SESSION_COOKIE, ApiContext, authenticate, build_router, error_response
from .api_errors import JsonErrors, invalid_request
from .audit import Actor
from .auth import AuthService, Principal
from .browser import BrowserNonce, browser_nonce
from .clientaddr import ClientAddress, client_address
from .config import Settings
from .errors import BackupError, Unauthenticated
from .httpguard import HttpGuard
from .httpserver import uvicorn_options
from .jobs import JobManager
from .jobstore import JobStore
from .models import BackupRecord
from .scheduler import Scheduler
from .service import BackupService

log = logging.getLogger("ehr_backup.web")
PAGE_PREFIXES = ("/eh", "/rh", "/admin")
ADMIN_PREFIX = "/admin"
# NiceGUI renders each page from an inline script, Vue compiles its templates at run time and `:`-props
# are evaluated, so scripts need 'unsafe-inline' and 'unsafe-eval' (a nonce cannot be told apart from an
# injected script once the page is rewritten); everything else is limited to this origin ('self' covers
# the page's own ws:/wss: socket), and nothing may be framed, embedded or run in workers.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
       "frame-src 'none'; worker-src 'none'; manifest-src 'self'; media-src 'self'; "
       "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()")]
REFUSAL_FLUSH_SECONDS = 15
# How long a thread may hold the GIL while another waits (Python's default: 5 ms). A backup's job thread
# parses the dump in Python; each time the event loop lets go of the GIL (every socket read and write)
# it then waited up to 5 ms to get it back, and 20 API requests at once waited 2 s instead of 0.3 s.
SWITCH_INTERVAL = 0.0005


@dataclass
class WebContext:
    """Everything the pages need: settings, the service, authentication, jobs."""

    settings: Settings
    service: BackupService
    auth: AuthService
    jobs: JobManager
    setup_token_file: Path
    scheduler: Scheduler

    def check_setup_token(self, token: str) -> bool:
        """Whether token is the one-time setup token (constant time)."""
        try:
            stored = self.setup_token_file.read_text().strip()
        except OSError:
            return False
        return hmac.compare_digest(stored, hashlib.sha256(token.encode()).hexdigest())

    def consume_setup_token(self) -> None:
        """Invalidate the setup link."""
        self.setup_token_file.unlink(missing_ok=True)


def render_result(result: Any, service: BackupService) -> Any:
    """JSON form of a task result."""
    if isinstance(result, BackupRecord):
        return service.view(result)
    if hasattr(result, "as_dict"):
        return result.as_dict()
    return result


class SecurityHeaders:
    """Add the security headers to every HTTP response (pure ASGI, so streaming stays streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dynamic = not scope.get("path", "").startswith("/_nicegui/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in dict(SECURITY_HEADERS)]
                headers += SECURITY_HEADERS
                if dynamic:
                    headers = [h for h in headers if h[0].lower() != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _is_page(path: str) -> bool:
    return path == "/" or any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES)


# The 403 page is answered by the middleware, before NiceGUI: a self-contained page in the app's design
# (colours of pages/theme.py, dark when the system or the browser's remembered choice says so).
_FORBIDDEN_HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>403 Forbidden · EHR Backup</title>
<style>
 body{margin:0;font-family:Roboto,-apple-system,"Segoe UI",sans-serif;background:#f3f4f6;color:#111827;
  min-height:100vh;display:flex;flex-direction:column;align-items:center;justify-content:center;padding:1rem;
  box-sizing:border-box}
 .brand{font-size:1.5rem;font-weight:700;margin:0 0 1rem}
 main{background:#fff;border-radius:12px;box-shadow:0 1px 5px rgba(0,0,0,.2);padding:1.5rem;max-width:24rem;
  width:100%;box-sizing:border-box}
 h1{font-size:1.25rem;margin:0 0 .5rem} p{line-height:1.5;overflow-wrap:anywhere}
 a{color:#7e22ce;font-weight:500} a.button{display:inline-block;background:#7e22ce;color:#fff;
  padding:.5rem 1rem;border-radius:4px;text-decoration:none;margin-right:.5rem}
 a:focus-visible{outline:3px solid #7e22ce;outline-offset:2px}
 body.dark{background:#111827;color:#f3f4f6} body.dark main{background:#1f2937}
 body.dark a{color:#d8b4fe} body.dark a.button{background:#7e22ce;color:#fff}
</style></head><body>
<script>try{var m=localStorage.getItem("ehr-theme")||"auto";if(m==="dark"||(m==="auto"&&
 matchMedia("(prefers-color-scheme: dark)").matches))document.body.classList.add("dark")}catch(e){}</script>
<p class="brand">EHR Backup</p>
<main><h1 data-testid="forbidden">403 — Forbidden</h1><p>{message}</p>
<p><a class="button" href="/eh">Back to the modules</a> <a href="/login">Sign in as someone else</a></p></main>
</body></html>"""


def forbidden_page(message: str) -> HTMLResponse:
    """The 403 page, in the app's design."""
    return HTMLResponse(_FORBIDDEN_HTML.replace("{message}", html.escape(message)), status_code=403)


class AuthGate(BaseHTTPMiddleware):
    """Pages need a live session; /admin pages need an administrator. The API checks its own."""

    def __init__(self, app: ASGIApp, ctx: WebContext) -> None:
        super().__init__(app)
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # everything but a page goes straight through: BaseHTTPMiddleware's task group and streams cost
        # every API request CPU on the event loop for nothing (the API checks its own credentials)
        if scope["type"] != "http" or not _is_page(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if not _is_page(path):
            return await call_next(request)
        token = request.cookies.get(SESSION_COOKIE)
        address = client_address(request)
        try:
            principal: Principal = await run_in_threadpool(self.ctx.auth.session, token, address)
        except Unauthenticated:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            if token:
                response.delete_cookie(SESSION_COOKIE, path="/")
            return response
        if path == "/":
            return RedirectResponse("/eh", status_code=303)
        if path.startswith(ADMIN_PREFIX) and not principal.is_admin:
            await run_in_threadpool(self.ctx.auth.refusals.record, principal.actor(), "access",
                                    f"GET {path}"[:300], "administrators only")
            return forbidden_page("This page is for administrators only. Your account does not have the "
                                  "administrator role; ask an administrator if you need access.")
        request.state.principal = principal
        request.state.session_token = token
        return await call_next(request)


def _setup_link(ctx: WebContext) -> str | None:
    """When no user exists, make a one-time setup token and return the link to print."""
    if ctx.auth.has_users():
        ctx.consume_setup_token()
        return None
    token = secrets.token_urlsafe(24)
    fd = os.open(ctx.setup_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(hashlib.sha256(token.encode()).hexdigest())
    host = ctx.settings.host if ctx.settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{ctx.settings.port}/setup?token={token}"


def build(settings: Settings | None = None) -> WebContext:
    """Create the service and register middleware, API routes and pages on NiceGUI's app."""
    from nicegui import app

    import pages

    settings = settings or Settings.from_env()
    service = BackupService(settings)
    service.reconcile()
    service.drills.ensure_default_schedule()  # once per installation: weekly-drill (EHR_BACKUP_DRILL_SCHEDULE)
    auth = AuthService(service.db, service.audit, settings)
    jobs = JobManager(render=lambda r: render_result(r, service), after=lambda job: service.alerts.poke(),
                      store=JobStore(service.db) if settings.metadata_url else None)  # jobs seen by every instance
    ctx = WebContext(settings, service, auth, jobs, settings.data_dir / "setup-token",
                     Scheduler(service, start=jobs.start))

    api_ctx = ApiContext(service, auth, jobs, ctx.scheduler)
    # added innermost first: ClientAddress resolves the address before anything uses it, the security
    # headers cover the guard's refusals, and the guard runs before any route or page reads a body
    app.add_middleware(JsonErrors)  # innermost: an error from any handler under /api/ becomes {"error": …}
    app.add_middleware(AuthGate, ctx=ctx)
    app.add_middleware(HttpGuard, max_body=settings.max_body_kb * 1024, read_timeout=settings.read_timeout,
                       precheck=lambda scope: _precheck(api_ctx, scope),
                       on_refused=lambda scope, exc: _audit_refused(auth, scope, exc))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BrowserNonce)
    app.add_middleware(ClientAddress, proxies=settings.trusted_proxies)
    app.include_router(build_router(api_ctx))
    app.include_router(monitoring.build_router(api_ctx))  # /metrics, /healthz, /readyz

    async def on_backup_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BackupError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"error": invalid_request(exc.errors())}, status_code=422)

    app.add_exception_handler(BackupError, on_backup_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)

    @app.get("/auth/complete", include_in_schema=False)
    def complete_login(request: Request, ticket: str = "", next: str = "/eh") -> Response:
        """Exchange a one-time login ticket for the session cookie, in the browser that logged in."""
        try:
            token = auth.redeem_ticket(ticket, browser_nonce(request.scope), client_address(request))
        except Unauthenticated:
            return RedirectResponse("/login", status_code=303)
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https", max_age=settings.session_hours * 3600)
        return response

    pages.register(ctx)
    _protect_socket(auth)
    _flush_refusals_periodically(auth)
    if settings.run_scheduler:
        _run_schedules(ctx.scheduler)
        _run_alert_checks(service)
    app.on_shutdown(service.db.dispose)
    link = _setup_link(ctx)
    if link:
        print(f"\nNo administrator exists yet. Create the first one with this one-time link:\n  {link}\n"
              "or run: ehr-backup user add NAME --admin\n", flush=True)
    if service.using_demo():
        print("DATABASE_URL is not set: using the demo database (ehr-backup demo).", flush=True)
    return ctx


async def _precheck(api_ctx: ApiContext, scope: Scope) -> Response | None:
    """Check an API request's credentials from its headers alone; the refusal, if any."""
    try:
        principal = await run_in_threadpool(authenticate, api_ctx, Request(scope))
    except BackupError as exc:
        return error_response(exc)
    state = scope.setdefault("state", {})
    state["ehr_actor"] = principal.username
    state[PRINCIPAL_KEY] = principal  # the routes' dependency uses it instead of checking the token again
    return None


async def _audit_refused(auth: AuthService, scope: Scope, exc: BackupError) -> None:
    """Audit a body refused by the guard (aggregated like every refused request)."""
    request = Request(scope)
    name = scope.get("state", {}).get("ehr_actor", "anonymous")
    try:
        await run_in_threadpool(auth.refusals.record, Actor(name, client_address(request), False), "access",
                                f"{request.method} {request.url.path}"[:300], exc.message)
    except BackupError as failed:  # the request is refused all the same
        log.warning("refused request not audited: %s", failed.message)


def _protect_socket(auth: AuthService) -> None:
    from nicegui import Client, core

    from . import sockets
    sockets.protect(core.sio, Client.instances, auth.refusals)


def _flush_refusals_periodically(auth: AuthService) -> None:
    """Write pending refusal counts every few seconds, and all of them at shutdown."""
    from nicegui import app, background_tasks

    async def loop() -> None:
        while True:
            await asyncio.sleep(REFUSAL_FLUSH_SECONDS)
            try:
                await asyncio.to_thread(auth.refusals.flush)
            except BackupError as exc:  # the counts stay pending and are tried again
                log.warning("refusal counts not written yet: %s", exc.message)

    app.on_startup(lambda: background_tasks.create(loop(), name="flush refusal counts"))
    app.on_shutdown(lambda: auth.refusals.flush(everything=True))


def _run_schedules(scheduler: Scheduler) -> None:
    """Run the schedules on a thread of their own while the app is up."""
    from nicegui import app

    stop = threading.Event()

    def start() -> None:
        stop.clear()
        threading.Thread(target=scheduler.serve, args=(stop,), name="scheduler", daemon=True).start()

    app.on_startup(start)
    app.on_shutdown(stop.set)


def _run_alert_checks(service: BackupService) -> None:
    """Check for alerts on a thread of its own while the app is up (every few minutes, and after each job)."""
    from nicegui import app

    stop = threading.Event()

    def start() -> None:
        stop.clear()
        threading.Thread(target=service.alerts.serve, args=(stop,), name="alerts", daemon=True).start()

    app.on_startup(start)
    app.on_shutdown(stop.set)


def safe_next(target: str) -> str:
    """A local path to go to after login; anything else becomes /eh."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or "\n" in target:
        return "/eh"
    return target


def main() -> None:
    """Start the web app (blocking)."""
    from nicegui import ui

    sys.setswitchinterval(SWITCH_INTERVAL)
    settings = Settings.from_env()
    if not settings.database_url:
        from . import demo
        demo.start(settings.data_dir)
    ctx = build(settings)
    # the favicon is an SVG file, not an emoji: Debian's Chromium has no emoji font and showed a blank box
    # no storage_secret: the pages keep no NiceGUI user/browser storage, so no `session` cookie is set
    ui.run(host=ctx.settings.host, port=ctx.settings.port, title="EHR Backup", show=False, reload=False,
           show_welcome_message=False, favicon=Path(__file__).with_name("favicon.svg"),
           **uvicorn_options(ctx.settings))

