"""GET /metrics, /healthz and /readyz: for Prometheus, load balancers and systemd, not for browsers.

No `from __future__ import annotations` here: FastAPI must see the route signatures' real types.
Errors are JSON ({"error": ...}) with 401 + WWW-Authenticate, never a redirect to the login page.
"""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from . import metrics
from .api import SESSION_COOKIE, ApiContext
from .audit import Actor
from .auth import Principal, may_read_metrics
from .clientaddr import client_address
from .errors import BackupError, Forbidden, Unauthenticated
from .health import Readiness


def authorize_metrics(ctx: ApiContext, request: Request) -> None:
    """Allow a metrics token, an administrator's token or session, or anyone when EHR_BACKUP_METRICS_PUBLIC=1.

    Refusals are audited like every refused request (aggregated, see refusals.py).
    """
    if ctx.service.settings.metrics_public:
        return
    address = client_address(request)
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    principal: Principal | None = None
    try:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("use Authorization: Bearer <token>")
            principal = ctx.auth.token(token.strip(), address)
        elif cookie:
            principal = ctx.auth.session(cookie, address)
        else:
            raise Unauthenticated("metrics need a token: Authorization: Bearer <token> "
                                  "(ehr-backup token create USER --scope metrics)")
        if not may_read_metrics(principal):
            raise Forbidden("administrators or metrics tokens only")
    except (Unauthenticated, Forbidden) as exc:
        name = principal.username if principal is not None else "anonymous"
        ctx.auth.refusals.record(Actor(name, address), "access", f"{request.method} {request.url.path}"[:300],
                                 exc.message)
        raise


def _is_admin(ctx: ApiContext, request: Request) -> bool:
    """Whether the request carries an administrator's token or session (nothing is refused or audited)."""
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    if not header and not cookie:
        return False
    try:
        scheme, _, token = header.partition(" ")
        address = client_address(request)
        if header:
            principal = ctx.auth.token(token.strip(), address) if scheme.lower() == "bearer" and token else None
        else:
            principal = ctx.auth.session(cookie or "", address)
    except BackupError:
        return False
    return principal is not None and principal.is_admin and getattr(principal, "scope", "admin") == "admin"


def build_router(ctx: ApiContext) -> APIRouter:
    """The monitoring routes over one service; a registry and a readiness cache of their own per app."""
    registry = metrics.make_registry(ctx.service, lambda: [job.kind for job in ctx.jobs.active()])
    readiness = Readiness(ctx.service)
    router = APIRouter(tags=["monitoring"])

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format: backups, verifications, drills, storage, jobs, schedules."""
        await asyncio.to_thread(authorize_metrics, ctx, request)
        body = await asyncio.to_thread(metrics.render, registry)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    @router.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)
    async def healthz() -> JSONResponse:
        """The process answers (nothing else is checked: restart it only when this fails)."""
        return JSONResponse({"status": "ok"})

    @router.api_route("/readyz", methods=["GET", "HEAD"], include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Whether a backup could run now: each check by name; 503 naming the failing ones. The details
        (the database's user@host, folder paths) only for an administrator."""
        status, body = await asyncio.to_thread(readiness.report)
        if not await asyncio.to_thread(_is_admin, ctx, request):
            body = {**body, "checks": {name: {"ok": c["ok"]} for name, c in body["checks"].items()}}
        return JSONResponse(body, status_code=status)

    return router
