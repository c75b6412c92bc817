"""REST API under /api/admin/backup: thin adapters from HTTP to BackupService, admin only.

No `from __future__ import annotations` here: FastAPI must see the route signatures' real types.
"""

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .api_alerts import add_routes as add_alert_routes
from .api_catalogue import add_routes as add_catalogue_routes
from .api_databases import add_routes as add_database_routes
from .api_destinations import add_routes as add_destination_routes
from .audit import Actor
from .auth import AuthService, Principal, require_admin
from .clientaddr import client_address
from .errors import BackupError, Forbidden, NotFound, Unauthenticated
from .fastjson import json_in_thread
from .jobs import Job, JobManager
from .listing import json_stream
from .retention import MAX_COUNT, MAX_WITHIN_DAYS, RetentionPolicy
from .service import BackupService, iter_file

PREFIX = "/api/admin/backup"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SESSION_COOKIE = "ehr_session"
PRINCIPAL_KEY = "ehr_principal"  # scope["state"] key: the principal authenticate() found for this request


@dataclass
class ApiContext:
    """What the routes need."""

    service: BackupService
    auth: AuthService
    jobs: JobManager
    scheduler: Any = None  # runs a schedule now (ehr_backup.scheduler.Scheduler)


def same_origin(request: Request) -> bool:
    """Whether a browser request comes from this app's own origin (Origin, else Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    host = request.headers.get("host", "")
    if not source or not host:
        return False
    rest = source.split("://", 1)[-1]
    return rest.split("/", 1)[0].lower() == host.lower()


def identify(ctx: ApiContext, request: Request) -> Principal:
    """Who sends the request: its bearer token, else its session cookie (Unauthenticated when neither holds)."""
    address = client_address(request)
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("use Authorization: Bearer <token>")
        return ctx.auth.token(token.strip(), address)
    return ctx.auth.session(request.cookies.get(SESSION_COOKIE), address)


def has_credentials(request: Request) -> bool:
    """Whether the request carries a token or a session cookie at all."""
    return bool(request.headers.get("authorization") or request.cookies.get(SESSION_COOKIE))


def authenticate(ctx: ApiContext, request: Request) -> Principal:
    """Bearer token or session cookie; cookie-authenticated writes must be same-origin (CSRF).

    Reads only headers: `httpguard` calls it before the body is read, and the routes again.
    """
    principal: Principal | None = None
    try:
        principal = identify(ctx, request)
        if principal.via == "session" and request.method not in SAFE_METHODS and not same_origin(request):
            raise Forbidden("cross-site request refused")
        return require_admin(principal)
    except (Unauthenticated, Forbidden) as exc:
        refused(ctx, request, principal, exc)
        raise


def refused(ctx: ApiContext, request: Request, principal: Principal | None, exc: BackupError) -> None:
    """Audit a refused request (aggregated per address, see refusals.py)."""
    # an expired token is refused before it becomes a principal; its owner still is who sent it
    name = principal.username if principal is not None else getattr(exc, "owner", "anonymous")
    ctx.auth.refusals.record(Actor(name, client_address(request)), "access",
                             f"{request.method} {request.url.path}"[:300], exc.message)


class CreateBody(BaseModel):
    """POST /create."""

    model_config = ConfigDict(extra="forbid")
    description: str = Field(default="", max_length=500)
    location: Literal["default", "desktop", "documents", "downloads", "custom"] = "default"
    customPath: str | None = Field(default=None, max_length=4096)
    compression: Literal["gzip", "zstd"] | None = None
    database: str | None = Field(default=None, max_length=40)  # a database profile; default: DATABASE_URL's
    destinations: list[str] = Field(default_factory=list, max_length=20)  # S3 destinations (and a location key)


class IdBody(BaseModel):
    """A body naming one backup."""

    model_config = ConfigDict(extra="forbid")
    backupId: str = Field(max_length=300)


class RestoreBody(IdBody):
    """POST /restore."""

    targetDatabase: str | None = Field(default=None, max_length=63)
    mode: Literal["swap", "recreate"] = "swap"
    jobs: int | None = Field(default=None, ge=1, le=64)
    roles: bool | None = None  # None: create missing roles only on another server than the backup's
    tables: list[Annotated[str, Field(max_length=300)]] | None = Field(default=None, max_length=200)
    schemas: list[Annotated[str, Field(max_length=63)]] | None = Field(default=None, max_length=50)
    intoSchema: str | None = Field(default=None, max_length=63)
    database: str | None = Field(default=None, max_length=40)  # a profile to restore into; default: the backup's


class RollbackBody(BaseModel):
    """POST /restore/rollback."""

    model_config = ConfigDict(extra="forbid")
    database: str | None = Field(default=None, max_length=63)
    profile: str | None = Field(default=None, max_length=40)  # on this database profile's server


class NameBody(BaseModel):
    """A body naming one kept database."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)


Count = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]


class PolicyBody(BaseModel):
    """A rotation policy: how many daily, weekly, monthly, yearly backups to keep."""

    model_config = ConfigDict(extra="forbid")
    daily: Count = 7
    weekly: Count = 4
    monthly: Count = 12
    yearly: Count = 5
    keepWithinDays: Annotated[int, Field(ge=1, le=MAX_WITHIN_DAYS, strict=True)] | None = None
    timezone: str | None = Field(default=None, max_length=64)

    def policy(self) -> RetentionPolicy:
        """The service's form (validated again there: a policy that keeps nothing is refused)."""
        return RetentionPolicy(daily=self.daily, weekly=self.weekly, monthly=self.monthly, yearly=self.yearly,
                               keep_within_days=self.keepWithinDays, timezone=self.timezone)


class PruneBody(BaseModel):
    """POST /prune: a preview unless apply is true."""

    model_config = ConfigDict(extra="forbid")
    apply: bool = False
    database: str | None = Field(default=None, max_length=63)
    location: Literal["default", "desktop", "documents", "downloads", "custom"] | None = None
    schedule: str | None = Field(default=None, max_length=200)
    includeDiscovered: bool = False
    policy: PolicyBody | None = None
    forget: list[Annotated[str, Field(max_length=300)]] | None = Field(default=None, max_length=10_000)


class ScheduleFields(BaseModel):
    """The fields of a schedule that can be set (PATCH: only those given change)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["backup", "verify", "drill"] | None = None
    cron: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    location: Literal["default", "desktop", "documents", "downloads", "custom"] | None = None
    customPath: str | None = Field(default=None, max_length=4096)
    compression: Literal["gzip", "zstd"] | None = None
    description: str | None = Field(default=None, max_length=500)
    policy: PolicyBody | None = None
    rotation: bool | None = None  # false: no rotation after a run
    database: str | None = Field(default=None, max_length=40)  # the database profile it backs up
    enabled: bool | None = None
    retries: Annotated[int, Field(ge=0, le=10, strict=True)] | None = None
    retryDelaySeconds: Annotated[int, Field(ge=10, le=86_400, strict=True)] | None = None
    destinations: list[str] | None = Field(default=None, max_length=20)  # S3 destinations copied to

    def fields(self) -> dict[str, Any]:
        """The service's keyword arguments, for the fields that were given."""
        names = {"kind": "kind", "cron": "cron", "timezone": "timezone", "location": "location",
                 "customPath": "custom_path", "compression": "compression", "description": "description",
                 "enabled": "enabled", "retries": "retries", "retryDelaySeconds": "retry_delay_s",
                 "database": "database", "destinations": "destinations"}
        out = {names[k]: v for k, v in self.model_dump(exclude_unset=True).items() if k in names}
        if self.rotation is False:
            out["policy"] = None
        elif self.policy is not None:
            out["policy"] = self.policy.policy().as_dict()
        return out


class ScheduleBody(ScheduleFields):
    """POST /schedules: a new schedule; cron and description are required."""

    name: str = Field(max_length=64)
    cron: str = Field(max_length=200)
    description: str = Field(max_length=500)


class PinBody(IdBody):
    """POST /pin."""

    reason: str = Field(max_length=500)


def build_router(ctx: ApiContext) -> APIRouter:
    """All API routes; every one requires an administrator."""

    async def admin(request: Request) -> Principal:
        # httpguard checked this very request's headers before its body (web._precheck) and left the
        # principal in the scope: checking again would repeat the token lookups, on another thread hop
        checked = request.scope.get("state", {}).get(PRINCIPAL_KEY)
        if isinstance(checked, Principal):
            return checked
        return await asyncio.to_thread(authenticate, ctx, request)

    Admin = Annotated[Principal, Depends(admin)]
    Wait = Annotated[bool, Query()]
    router = APIRouter(prefix=PREFIX, dependencies=[Depends(admin)], tags=["backup"])

    async def finish(job: Job, wait: bool) -> Any:
        if not wait:
            return JSONResponse({"jobId": job.id, "backupId": job.task.backup_id, "status": job.status},
                                status_code=202)
        while not job.done.is_set():
            await asyncio.sleep(0.2)
        if job.status != "succeeded":
            extra = {"report": job.error_report} if job.error_report else {}
            return JSONResponse({"error": job.error, "jobId": job.id, "status": job.status, **extra},
                                status_code=job.error_status or 500)
        return JSONResponse(job.result, status_code=200)

    @router.post("/create", status_code=202)
    async def create(body: CreateBody, who: Admin, wait: Wait = False) -> Any:
        """Start a backup (202 with the job), or with ?wait=true return the finished backup."""
        task = await asyncio.to_thread(ctx.service.prepare_create, who.actor(), description=body.description,
                                       location=body.location, custom_path=body.customPath,
                                       compression=body.compression, database=body.database,
                                       destinations=body.destinations)
        return await finish(ctx.jobs.start(task, who.username), wait)

    @router.get("/list", response_model=None)
    async def list_(request: Request, who: Admin, location: str | None = None, database: str | None = None, kind: str | None = None,
                    status: str | None = None, search: str | None = None, sort: str = "createdAt",
                    order: Literal["asc", "desc"] = "desc", limit: int | None = None,
                    cursor: str | None = None) -> Response:
        """Backups across all locations, filtered; with limit (and cursor) one page {backups, total,
        nextCursor}, else every backup, streamed a page at a time."""
        filters = {"location": location, "database": database, "kind": kind, "status": status, "search": search,
                   "sort": sort, "descending": order == "desc"}
        if limit is None and cursor is None:
            rows = await asyncio.to_thread(ctx.service.iter_list, **filters)
            return StreamingResponse(json_stream(rows), media_type="application/json")
        # encoded in the worker thread (fastjson.py): FastAPI's own encoding ran on the event loop
        return await json_in_thread(request.scope, ctx.service.list_page, **filters,
                                    limit=100 if limit is None else limit, cursor=cursor)

    @router.post("/restore", status_code=202)
    async def restore(body: RestoreBody, who: Admin, wait: Wait = False) -> Any:
        """Restore a backup over the configured database (built fresh, checked, swapped in), or into
        targetDatabase on the same server; with tables/schemas, only those, into intoSchema."""
        task = await asyncio.to_thread(ctx.service.prepare_restore, who.actor(), body.backupId,
                                       target_database=body.targetDatabase, mode=body.mode, jobs=body.jobs,
                                       roles=body.roles, tables=body.tables, schemas=body.schemas,
                                       into_schema=body.intoSchema, database=body.database)
        return await finish(ctx.jobs.start(task, who.username), wait)

    @router.post("/restore/rollback")
    async def rollback(body: RollbackBody, who: Admin) -> dict[str, Any]:
        """Put back the database the newest restore replaced."""
        return await asyncio.to_thread(ctx.service.rollback, who.actor(), body.database, body.profile)

    @router.get("/restore/previous")
    async def previous(who: Admin) -> dict[str, Any]:
        """Databases restores replaced and keep for rollback."""
        return {"previous": await asyncio.to_thread(ctx.service.kept_databases)}

    @router.delete("/restore/previous")
    async def drop_previous(body: NameBody, who: Admin) -> dict[str, Any]:
        """Drop a kept database now."""
        await asyncio.to_thread(ctx.service.drop_kept, who.actor(), body.name)
        return {"dropped": body.name}

    @router.get("/contents/{backup_id}")
    async def contents(backup_id: str, who: Admin) -> dict[str, Any]:
        """What a backup holds: schemas, tables with rows and sizes, other objects."""
        return await asyncio.to_thread(ctx.service.contents, who.actor(), backup_id)

    @router.post("/verify", status_code=202)
    async def verify(body: IdBody, who: Admin, wait: Wait = False) -> Any:
        """Authenticate and decompress a backup completely."""
        task = await asyncio.to_thread(ctx.service.prepare_verify, who.actor(), body.backupId)
        return await finish(ctx.jobs.start(task, who.username), wait)

    @router.delete("/delete")
    async def delete(body: IdBody, who: Admin) -> dict[str, str]:
        """Delete a backup file and its catalogue row."""
        await asyncio.to_thread(ctx.service.delete, who.actor(), body.backupId)
        return {"deleted": body.backupId}

    @router.post("/prune")
    async def prune(who: Admin, body: Annotated[PruneBody | None, Body()] = None) -> dict[str, Any]:
        """Rotation: every backup with the rules that keep it or why it goes; deletes only with apply=true
        (then only what `forget`, the ids a preview showed, lists, when given)."""
        body = body or PruneBody()
        policy = body.policy.policy() if body.policy else None
        return await asyncio.to_thread(ctx.service.prune, who.actor(), database=body.database, location=body.location,
                                       schedule=body.schedule, policy=policy, dry_run=not body.apply,
                                       include_discovered=body.includeDiscovered, expect=body.forget)

    @router.post("/pin")
    async def pin(body: PinBody, who: Admin) -> dict[str, Any]:
        """Pin a backup with a reason (e.g. a legal hold): rotation and delete leave it alone."""
        return await asyncio.to_thread(ctx.service.pin, who.actor(), body.backupId, body.reason)

    @router.post("/unpin")
    async def unpin(body: IdBody, who: Admin) -> dict[str, Any]:
        """Unpin a backup."""
        return await asyncio.to_thread(ctx.service.unpin, who.actor(), body.backupId)

    @router.get("/dashboard")
    async def dashboard(who: Admin) -> dict[str, Any]:
        """Per database: freshness against its schedule, last verification and drill, open alerts, next run."""
        return {"databases": await asyncio.to_thread(ctx.service.dashboard)}

    @router.get("/schedules")
    async def schedules(who: Admin) -> dict[str, Any]:
        """Every schedule: reading in words, next five runs, last outcome (failing until a run succeeds)."""
        return {"schedules": await asyncio.to_thread(ctx.service.schedule_list)}

    @router.post("/schedules", status_code=201)
    async def schedule_create(body: ScheduleBody, who: Admin) -> dict[str, Any]:
        """Add a schedule; 422 with a message for an invalid expression, time zone or template."""
        return await asyncio.to_thread(ctx.service.schedule_create, who.actor(), body.name, **body.fields())

    @router.get("/schedules/preview")
    async def schedule_preview(who: Admin, cron: Annotated[str, Query(max_length=200)],
                               timezone: Annotated[str | None, Query(max_length=64)] = None,
                               description: Annotated[str | None, Query(max_length=500)] = None) -> dict[str, Any]:
        """What an expression means: its reading in words and the next five runs in the time zone."""
        return await asyncio.to_thread(ctx.service.schedule_preview, cron, timezone, description)

    @router.get("/schedules/{name}")
    async def schedule_get(name: str, who: Admin) -> dict[str, Any]:
        """One schedule with its newest runs."""
        return await asyncio.to_thread(ctx.service.schedule_get, name)

    @router.patch("/schedules/{name}")
    @router.put("/schedules/{name}")
    async def schedule_update(name: str, body: ScheduleFields, who: Admin) -> dict[str, Any]:
        """Change the fields given (enabled=false disables it)."""
        return await asyncio.to_thread(ctx.service.schedule_update, who.actor(), name, **body.fields())

    @router.delete("/schedules/{name}")
    async def schedule_remove(name: str, who: Admin) -> dict[str, Any]:
        """Delete a schedule; the backups it made stay."""
        await asyncio.to_thread(ctx.service.schedule_remove, who.actor(), name)
        return {"removed": name}

    @router.post("/schedules/{name}/run", status_code=202)
    async def schedule_run(name: str, who: Admin, wait: Wait = False) -> Any:
        """Run a schedule now, out of turn, as a job (202), or with ?wait=true return the finished backup."""
        if ctx.scheduler is None:
            raise NotFound("schedules do not run in this process")
        started = await asyncio.to_thread(ctx.scheduler.run_now, who.actor(), name)
        return await finish(started.handle, wait)

    @router.get("/download/{backup_id}")
    async def download(backup_id: str, who: Admin) -> StreamingResponse:
        """Stream the encrypted file."""
        fh, size, name = await asyncio.to_thread(ctx.service.open_download, who.actor(), backup_id)
        return StreamingResponse(iter_file(fh), media_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(size),
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    @router.get("/status")
    async def status(who: Admin, database: str | None = None) -> dict[str, Any]:
        """Storage per location (used, free, growth, forecast fill date, warnings); sizes per database (only
        a database profile's with `database`)."""
        return await asyncio.to_thread(lambda: ctx.service.status(database=database))

    @router.get("/locations")
    async def locations(who: Admin) -> dict[str, Any]:
        """Backup locations with path, existence, writability and free space."""
        return {"locations": await asyncio.to_thread(ctx.service.locations)}

    @router.get("/jobs/{job_id}")
    async def job(job_id: str, who: Admin) -> dict[str, Any]:
        """A job's status and progress."""
        found = ctx.jobs.find(job_id)
        return found.as_dict()

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(job_id: str, who: Admin) -> dict[str, Any]:
        """Ask a running job to stop (it removes what it had written)."""
        found = ctx.jobs.find(job_id)
        found.cancel()
        ctx.service.audit.record(who.actor(), "cancel", found.task.target, "ok", found.kind)
        return found.as_dict()

    @router.post("/drill", status_code=202)
    async def drill(body: IdBody, who: Admin, wait: Wait = False) -> Any:
        """Restore drill: the backup restored into a scratch database, compared, checked, dropped; a report."""
        task = await asyncio.to_thread(ctx.service.prepare_drill, who.actor(), body.backupId)
        return await finish(ctx.jobs.start(task, who.username), wait)

    @router.get("/drills")
    async def drills(who: Admin) -> dict[str, Any]:
        """The newest drills with outcome, recovery time and report hashes; `latest`: per database."""
        return {"drills": await asyncio.to_thread(ctx.service.drill_list),
                "latest": await asyncio.to_thread(ctx.service.drills.latest)}

    @router.get("/drills/{drill_id}/report.{kind}")
    async def drill_report(drill_id: int, kind: Literal["pdf", "json"], who: Admin) -> Response:
        """A drill's evidence report as PDF or JSON (its SHA-256 is in the audit log)."""
        data, name = await asyncio.to_thread(ctx.service.drill_report_file, who.actor(), drill_id, kind)
        return Response(data, media_type="application/pdf" if kind == "pdf" else "application/json", headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
    add_alert_routes(router, ctx, admin)  # ehr_backup/api_alerts.py
    add_catalogue_routes(router, ctx, admin)  # ehr_backup/api_catalogue.py
    add_database_routes(router, ctx, admin)  # ehr_backup/api_databases.py
    add_destination_routes(router, ctx, admin)  # ehr_backup/api_destinations.py

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(who: Admin) -> dict[str, Any]:
        """The OpenAPI description of this API."""
        return get_openapi(title="EHR Backup API", version=__version__, routes=router.routes)

    return router


def error_response(exc: BackupError) -> JSONResponse:
    """The JSON form of a service error."""
    return JSONResponse({"error": exc.message}, status_code=exc.status,
                        headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)
