"""REST routes under /api/admin/backup/alerts: channels, settings, test, check, open alerts, history (admin only).

No `from __future__ import annotations`: FastAPI must see the route signatures' real types.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from .alerts.profile_thresholds import ProfileThresholds
from .auth import Principal
from .errors import InvalidInput


class WebhookBody(BaseModel):
    """POST /alerts/webhooks: the URL, and a secret (made and returned once when left out)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000)
    secret: str | None = Field(default=None, max_length=500)


class EmailBody(BaseModel):
    """POST /alerts/emails: recipients and the SMTP server; the password is stored encrypted."""

    model_config = ConfigDict(extra="forbid")
    recipients: list[str] = Field(max_length=20)
    smtpHost: str = Field(max_length=253)
    smtpPort: int | None = Field(default=None, ge=1, le=65535)
    smtpUser: str | None = Field(default=None, max_length=200)
    smtpPassword: str | None = Field(default=None, max_length=500)
    security: Literal["starttls", "tls", "none"] = "starttls"
    sender: str | None = Field(default=None, max_length=320)


class ThresholdsBody(BaseModel):
    """PUT /alerts/settings: whole numbers; null stores nothing, so the environment's value holds again."""

    model_config = ConfigDict(extra="forbid")
    repeatHours: Any = None  # checked by the service, which names the field and its range in a 422
    maxBackupAgeHours: Any = None
    minFreeMb: Any = None
    fillWarnDays: Any = None


class ChannelPatch(BaseModel):
    """PATCH /alerts/channels/{id}: switch a channel on or off, or replace an email channel's recipients."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    recipients: list[str] | None = Field(default=None, max_length=20)


def add_routes(router: APIRouter, ctx: Any, admin: Callable[[Request], Awaitable[Principal]]) -> None:
    """Add the alert routes to the admin router (`admin`: the dependency that finds the administrator)."""
    Admin = Annotated[Principal, Depends(admin)]

    @router.get("/alerts")
    async def alerts(who: Admin) -> dict[str, Any]:
        """Channels (secrets only as set / not set), open alerts and the thresholds in force."""
        a = ctx.service.alerts
        return await asyncio.to_thread(lambda: {"channels": a.channels(), "open": a.open_alerts(),
                                                "thresholds": a.thresholds()})

    @router.post("/alerts/webhooks", status_code=201)
    async def add_webhook(body: WebhookBody, who: Admin) -> dict[str, Any]:
        """Add a signed JSON webhook; a secret made here is in the answer, once."""
        return await asyncio.to_thread(ctx.service.alerts.add_webhook, who.actor(), body.url, body.secret)

    @router.post("/alerts/emails", status_code=201)
    async def add_email(body: EmailBody, who: Admin) -> dict[str, Any]:
        """Add an email channel."""
        return await asyncio.to_thread(lambda: ctx.service.alerts.add_email(
            who.actor(), body.recipients, smtp_host=body.smtpHost, smtp_port=body.smtpPort, smtp_user=body.smtpUser,
            security=body.security, password=body.smtpPassword, sender=body.sender))

    @router.delete("/alerts/channels/{channel_id}")
    async def remove_channel(channel_id: int, who: Admin) -> dict[str, Any]:
        """Remove a channel (its history stays)."""
        await asyncio.to_thread(ctx.service.alerts.remove, who.actor(), channel_id)
        return {"removed": channel_id}

    @router.post("/alerts/test")
    async def test(who: Admin) -> dict[str, Any]:
        """Send a test alert to every channel; each outcome is in the answer and the history."""
        return await asyncio.to_thread(ctx.service.alerts.test, who.actor())

    @router.post("/alerts/check")
    async def check(who: Admin) -> dict[str, Any]:
        """Check the conditions now and send what is due (409 while another check runs)."""
        result: dict[str, Any] = await asyncio.to_thread(ctx.service.alerts.check)
        await asyncio.to_thread(ctx.service.audit.record, who.actor(), "alert-check", "alerts", "ok",
                                f"{len(result['open'])} open")  # a SQLite write: never on the event loop
        return result

    @router.get("/alerts/open")
    async def open_alerts(who: Admin) -> dict[str, Any]:
        """Alerts open now (as of the last check)."""
        return {"open": await asyncio.to_thread(ctx.service.alerts.open_alerts)}

    @router.get("/alerts/history")
    async def history(who: Admin, limit: int = Query(default=100, ge=1, le=2000)) -> dict[str, Any]:
        """Alerts sent or failed to send, newest first."""
        return {"history": await asyncio.to_thread(ctx.service.alerts.history, limit)}

    @router.get("/alerts/settings")
    async def thresholds(who: Admin, database: str | None = Query(default=None, max_length=40)) -> dict[str, Any]:
        """Each threshold: value in force, source (stored/environment/default), the environment's value;
        with ?database=NAME a database profile's own (source profile/installation)."""
        if database and database != "default":
            return {"thresholds": await asyncio.to_thread(ProfileThresholds(ctx.service).view, database)}
        return {"thresholds": await asyncio.to_thread(ctx.service.alert_thresholds.view)}

    @router.put("/alerts/settings")
    async def set_thresholds(body: ThresholdsBody, who: Admin,
                             database: str | None = Query(default=None, max_length=40)) -> dict[str, Any]:
        """Store thresholds (only the fields given; null: the environment's value again); 422 when out of range;
        with ?database=NAME a database profile's own (null: the installation's again)."""
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        if database and database != "default":
            return {"thresholds": await asyncio.to_thread(ProfileThresholds(ctx.service).update, who.actor(),
                                                          database, changes)}
        return {"thresholds": await asyncio.to_thread(ctx.service.alert_thresholds.update, who.actor(), changes)}

    @router.patch("/alerts/channels/{channel_id}")
    async def edit_channel(channel_id: int, body: ChannelPatch, who: Admin) -> dict[str, Any]:
        """Switch a channel on or off and/or replace an email channel's recipients."""
        a = ctx.service.alerts
        if body.enabled is None and body.recipients is None:
            raise InvalidInput("give enabled (true/false) and/or recipients")
        view: dict[str, Any] = {}
        if body.recipients is not None:
            view = await asyncio.to_thread(a.set_recipients, who.actor(), channel_id, body.recipients)
        if body.enabled is not None:
            view = await asyncio.to_thread(a.set_enabled, who.actor(), channel_id, body.enabled)
        return view
