"""REST route POST /api/admin/backup/catalogue/rebuild: the catalogue recreated from the backup files (admin only).

No `from __future__ import annotations`: FastAPI must see the route signatures' real types.
"""

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
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

    @router.post("/catalogue/rebuild")
    async def rebuild(who: Admin, body: Annotated[RebuildBody | None, Body()] = None) -> dict[str, Any]:
        """Read and authenticate every backup file; add, complete and mark missing (dryRun: only say what would)."""
        body = body or RebuildBody()
        return await asyncio.to_thread(ctx.service.rebuild_catalogue, who.actor(), location=body.location,
                                       paths=body.paths, dry_run=body.dryRun)
