"""REST routes under /api/admin/backup/destinations (list, add, test, remove) and /copy (admin only).

No `from __future__ import annotations`: FastAPI must see the route signatures' real types.
"""

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from .auth import Principal
from .storage import MAX_ID


class DestinationBody(BaseModel):
    """POST /destinations: an S3 destination; without accessKeyId the standard AWS credential chain is used."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    kind: str = Field(default="s3", pattern="^s3$")
    bucket: str = Field(max_length=63)
    prefix: str | None = Field(default=None, max_length=256)
    endpointUrl: str | None = Field(default=None, max_length=300)
    region: str | None = Field(default=None, max_length=32)
    pathStyle: bool = False
    storageClass: str | None = Field(default=None, max_length=32)
    sse: bool = False
    accessKeyId: str | None = Field(default=None, max_length=128)
    secretAccessKey: str | None = Field(default=None, max_length=1024)


class CopyBody(BaseModel):
    """POST /copy: copy a backup to a destination."""

    model_config = ConfigDict(extra="forbid")
    backupId: str = Field(max_length=MAX_ID)
    to: str = Field(max_length=63)


def add_routes(router: APIRouter, ctx: Any, admin: Callable[[Request], Principal]) -> None:
    """Add the destination routes to the admin router (`admin`: the dependency that finds the administrator)."""
    Admin = Annotated[Principal, Depends(admin)]

    @router.get("/destinations")
    async def destinations(who: Admin) -> dict[str, Any]:
        """Every destination (credentials only as stored / AWS chain)."""
        return {"destinations": await asyncio.to_thread(ctx.service.destination_list)}

    @router.post("/destinations", status_code=201)
    async def add_destination(body: DestinationBody, who: Admin) -> dict[str, Any]:
        """Add an S3 destination; the secret is stored sealed and never returned."""
        creds = None
        if body.accessKeyId or body.secretAccessKey:
            creds = (body.accessKeyId or "", body.secretAccessKey or "")
        return await asyncio.to_thread(lambda: ctx.service.destination_add(
            who.actor(), body.name, creds, bucket=body.bucket, prefix=body.prefix, endpoint_url=body.endpointUrl,
            region=body.region, path_style=body.pathStyle, storage_class=body.storageClass, sse=body.sse))

    @router.post("/destinations/{name}/test")
    async def test_destination(name: str, who: Admin) -> dict[str, Any]:
        """Test connection: {ok, checks: [{name, ok, message}], message} naming what is missing."""
        return await asyncio.to_thread(ctx.service.destination_test, who.actor(), name)

    @router.delete("/destinations/{name}")
    async def remove_destination(name: str, who: Admin) -> dict[str, Any]:
        """Forget a destination (its objects stay in the bucket)."""
        await asyncio.to_thread(ctx.service.destination_remove, who.actor(), name)
        return {"removed": name}

    @router.post("/copy")
    async def copy(body: CopyBody, who: Admin) -> dict[str, Any]:
        """Stream a backup from a healthy copy to a destination and record the copy."""
        return await asyncio.to_thread(ctx.service.copy, who.actor(), body.backupId, body.to)
