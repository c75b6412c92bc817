"""REST route POST /api/admin/backup/catalogue/rebuild: the catalogue recreated from the backup files, as a job
(admin only).

No `from __future__ import annotations`: FastAPI must see the route signatures' real types.
"""

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .auth import Principal


class RebuildBody(BaseModel):
    """POST /catalogue/rebuild: a preview (dryRun, the default) or the real run, over one location or all."""

    model_config = ConfigDict(extra="forbid")
    dryRun: bool = True
    location: str | None = Field(default=None, max_length=20)
    paths: list[str] = Field(default_factory=list, max_length=20)


def add_routes(router: APIRouter, ctx: Any, admin: Callable[[Request], Principal]) -> None:
    """Add the catalogue routes to the admin router (`admin`: the dependency that finds the administrator)."""
    Admin = Annotated[Principal, Depends(admin)]

    @router.post("/catalogue/rebuild", status_code=202)
    async def rebuild(who: Admin, body: Annotated[RebuildBody | None, Body()] = None,
                      wait: Annotated[bool, Query()] = False) -> Any:
        """Start reading and authenticating every backup file as a job (202 {jobId, status, dryRun}; GET
        /jobs/{jobId} has its progress and result); add, complete and mark missing (dryRun: only say what
        would). 409 while another rebuild runs; ?wait=true returns the result."""
        body = body or RebuildBody()
        task = await asyncio.to_thread(ctx.service.prepare_rebuild, who.actor(), location=body.location,
                                       paths=body.paths, dry_run=body.dryRun)
        job = ctx.jobs.start(task, who.username)
        if not wait:
            return JSONResponse({"jobId": job.id, "status": job.status, "dryRun": body.dryRun}, status_code=202)
        while not job.done.is_set():  # as the other long operations' ?wait=true (api.py)
            await asyncio.sleep(0.2)
        if job.status != "succeeded":
            return JSONResponse({"error": job.error, "jobId": job.id, "status": job.status},
                                status_code=job.error_status or 500)
        return JSONResponse(job.result, status_code=200)
