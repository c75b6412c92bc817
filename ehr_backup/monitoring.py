"""GET /metrics, /healthz and /readyz: for Prometheus, load balancers and systemd, not for browsers.

No `from __future__ import annotations` here: FastAPI must see the route signatures' real types.
Errors are JSON ({"error": ...}) with 401 + WWW-Authenticate, never a redirect to the login page.
"""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from . import metrics
from .api import ApiContext, has_credentials, identify, refused
from .auth import Principal, may_read_metrics
from .errors import BackupError, Forbidden, Unauthenticated
from .health import Readiness


def authorize_metrics(ctx: ApiContext, request: Request) -> None:
    """Allow a metrics token, an administrator's token or session, or anyone when EHR_BACKUP_METRICS_PUBLIC=1.

    Refusals are audited like every refused request (aggregated, see refusals.py).
    """
    if ctx.service.settings.metrics_public:
        return
    principal: Principal | None = None
    try:
        if not has_credentials(request):
            raise Unauthenticated("metrics need a token: Authorization: Bearer <token> "
                                  "(ehr-backup token create USER --scope metrics)")
        principal = identify(ctx, request)
        if not may_read_metrics(principal):
            raise Forbidden("administrators or metrics tokens only")
    except (Unauthenticated, Forbidden) as exc:
        refused(ctx, request, principal, exc)
        raise


def _is_admin(ctx: ApiContext, request: Request) -> bool:
    """Whether the request carries an administrator's token or session (nothing is refused or audited)."""
    if not has_credentials(request):
        return False
    try:
        principal = identify(ctx, request)
    except BackupError:
        return False
    return principal.is_admin and principal.scope == "admin"


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
