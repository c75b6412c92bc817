"""The shared page frame: header with accent and way back, the session guard for page events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

from fastapi import Request
from nicegui import run, ui

from ehr_backup.audit import Actor
from ehr_backup.auth import Principal
from ehr_backup.clientaddr import client_address
from ehr_backup.errors import BackupError, Unauthenticated
from ehr_backup.web import WebContext

from . import theme
from .theme import ACCENTS, notify

T = TypeVar("T")


def tid(element: T, name: str) -> T:
    """Give an element a stable data-testid (browser tests) and marker (NiceGUI user tests)."""
    # set the value directly: a props string is parsed, so data (a folder name, an id) in it could add
    # props of its own, and NiceGUI evaluates `:`-props as JavaScript
    element.props["data-testid"] = name  # type: ignore[attr-defined]
    element.mark(name)  # type: ignore[attr-defined]
    return element


def origin_key(value: str | None) -> str:
    """The module a user came from: eh (default) or rh."""
    return value if value in ACCENTS else "eh"


@dataclass
class PageSession:
    """The signed-in user of one page, re-checked before every action the page performs."""

    ctx: WebContext
    principal: Principal
    token: str
    address: str

    @property
    def actor(self) -> Actor:
        """The audit actor."""
        return self.principal.actor()

    async def check(self, what: str = "page action", *, activity: bool = True) -> bool:
        """Re-validate the session; on failure audit, tell the user and go to the login page."""
        try:
            principal = await run.io_bound(lambda: self.ctx.auth.session(self.token, self.address,
                                                                         touch=activity))
            if principal is None:  # cancelled: the page went away
                return False
            self.principal = principal
            return True
        except Unauthenticated as exc:
            await run.io_bound(self.ctx.auth.refusals.record, self.actor, "access", what[:200], exc.message)
            notify(exc.message, type="warning")
            ui.navigate.to("/login")
            return False


def page_session(ctx: WebContext, request: Request) -> PageSession:
    """The page's session, as the AuthGate middleware established it."""
    return PageSession(ctx, request.state.principal, request.state.session_token, client_address(request))


def admin_page(ctx: WebContext, request: Request, title: str) -> PageSession:
    """Start an admin page: its session, and the header in the accent of the module the user came from."""
    ps = page_session(ctx, request)
    header(ps, title, origin_key(request.query_params.get("from")))
    return ps


def guarded(ps: PageSession, what: str) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Decorate a page event handler: check the session first, show service errors as notifications."""

    def wrap(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @wraps(handler)
        async def run_handler(*args: Any, **kwargs: Any) -> Any:
            if not await ps.check(what):
                return None
            try:
                return await handler(*args, **kwargs)
            except BackupError as exc:
                notify(exc.message, type="negative", multi_line=True)
                return None
        return run_handler

    return wrap


NAV = (("Backups", "backup", "/admin/backup"), ("Audit log", "policy", "/admin/audit"),
       ("Users", "group", "/admin/users"), ("Alerts", "notifications", "/admin/alerts"),
       ("Destinations", "cloud", "/admin/destinations"))


def header(ps: PageSession, title: str, origin: str, *, back: bool = True) -> None:
    """The page header: the way back to the module, the page's title, navigation, user, theme and logout."""
    accent = theme.apply(origin)
    with ui.header().classes("ehr-header items-center gap-x-3 gap-y-1 px-3 py-2 flex-wrap"):
        if back:  # a page of the module: the way back to the module screen (the header names the page)
            tid(ui.link(accent["name"], accent["path"]).classes("ehr-back no-underline font-medium"), "back-link")
            ui.label("·").classes("gt-xs").props('aria-hidden="true"')
            ui.label(title).classes("text-lg font-semibold").props('role="heading" aria-level="1"')
        else:  # the module screen itself: its name, no link back to itself
            ui.icon(accent["icon"]).classes("text-2xl")
            ui.label(title).classes("text-lg font-semibold").props('role="heading" aria-level="1"')
        ui.space()
        if ps.principal.is_admin:
            with ui.row().classes("gt-sm items-center gap-4 no-wrap").props('role="navigation"'):
                for label, _icon, path in NAV:
                    tid(ui.link(label, f"{path}?from={origin}").classes("no-underline font-medium"),
                        f"nav-{label.split()[0].lower()}")
            with ui.button(icon="menu").props('flat round aria-label="Pages"').classes("lt-md"):
                with ui.menu():
                    for label, icon, path in NAV:
                        with ui.menu_item(on_click=lambda p=path: ui.navigate.to(f"{p}?from={origin}")):
                            with ui.row().classes("items-center gap-2 no-wrap"):
                                ui.icon(icon)
                                ui.label(label)
        tid(ui.label(f"{ps.principal.username}{' (admin)' if ps.principal.is_admin else ''}").classes("gt-xs"),
            "whoami")
        theme.theme_toggle()

        async def logout() -> None:
            await run.io_bound(ps.ctx.auth.logout, ps.token, ps.actor)
            ui.navigate.to("/login")

        tid(ui.button("Log out", icon="logout", on_click=logout).props("flat no-caps"), "logout")

    async def watch_session() -> None:
        await ps.check("session check", activity=False)

    ui.timer(30, watch_session)


def local_time(iso: str | None) -> str:
    """An ISO UTC time as the server's local time."""
    if not iso:
        return "—"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def human_size(n: int | None) -> str:
    """A byte count for people."""
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
