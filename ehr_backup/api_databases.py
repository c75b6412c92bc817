"""REST routes under /api/admin/backup/databases: database profiles (list, add, test, remove; admin only).

No `from __future__ import annotations`: FastAPI must see the route signatures' real types.
"""

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from .auth import Principal


class ProfileBody(BaseModel):
    """POST /databases: a URL without a password; the password from an env var, or given once (stored encrypted)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=40)
    url: str = Field(max_length=2000)
    passwordEnv: str | None = Field(default=None, max_length=100)
    password: str | None = Field(default=None, max_length=1000)


def add_routes(router: APIRouter, ctx: Any, admin: Callable[[Request], Principal]) -> None:
    """Add the database profile routes to the admin router (`admin`: the dependency that finds the administrator)."""
    Admin = Annotated[Principal, Depends(admin)]

    @router.get("/databases")
    async def databases(who: Admin) -> dict[str, Any]:
        """Every database profile, the implicit default (DATABASE_URL) first; never a password."""
        return {"databases": await asyncio.to_thread(ctx.service.database_list)}

    @router.post("/databases", status_code=201)
    async def add_database(body: ProfileBody, who: Admin) -> dict[str, Any]:
        """Add a profile; 422 for a URL holding a password, a bad name, or both password sources."""
        return await asyncio.to_thread(lambda: ctx.service.database_add(
            who.actor(), body.name, body.url, password_env=body.passwordEnv, password=body.password))

    @router.post("/databases/{name}/test")
    async def test_database(name: str, who: Admin) -> dict[str, Any]:
        """Connect with a profile: the server's version and the database's size (503 when it cannot connect)."""
        return await asyncio.to_thread(ctx.service.database_test, who.actor(), name)

    @router.delete("/databases/{name}")
    async def remove_database(name: str, who: Admin) -> dict[str, Any]:
        """Forget a profile (422 while a schedule uses it); its backups stay."""
        await asyncio.to_thread(ctx.service.database_remove, who.actor(), name)
        return {"removed": name}
