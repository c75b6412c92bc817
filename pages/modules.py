"""The Electronic Health (/eh) modules screen and the Radiation Health (/rh) dashboard."""

from __future__ import annotations

from fastapi import Request
from nicegui import ui

from ehr_backup.web import WebContext

from .frame import ACCENTS, header, page_session, tid
from .theme import page_body, page_title


def _module_card(title: str, text: str, icon: str, target: str, style: str, testid: str) -> None:
    # a card that acts as a link: reachable with Tab, opened with Enter or Space, announced as a link
    card = tid(ui.card().classes("w-full sm:w-72 cursor-pointer ehr-card").props('tabindex="0" role="link"'), testid)
    if style:
        card.style(style)
    card.on("click", lambda: ui.navigate.to(target))
    card.on("keydown.enter", lambda: ui.navigate.to(target))
    card.on("keydown.space", lambda: ui.navigate.to(target))
    with card:
        with ui.row().classes("items-center gap-3 no-wrap"):
            ui.icon(icon).classes("text-3xl")
            ui.label(title).classes("text-lg font-bold")
        ui.label(text)


def register(ctx: WebContext) -> None:
    """Add /eh and /rh."""

    def screen(request: Request, origin: str) -> None:
        ps = page_session(ctx, request)
        accent = ACCENTS[origin]
        header(ps, accent["name"], origin, back=False)  # the header names the module; the body, the screen
        with page_body():
            page_title("Modules" if origin == "eh" else "Dashboard")
            with ui.row().classes("gap-4 w-full"):
                if ps.principal.is_admin:
                    _module_card("Database Backup & Restore", "Create, verify, download and restore encrypted "
                                 "backups of the EHR database.", "backup", f"/admin/backup?from={origin}",
                                 accent["card"], "backup-card")
                    _module_card("Audit Log", "Who did what, and when.", "policy", f"/admin/audit?from={origin}",
                                 "", "audit-card")
                    _module_card("Users & API tokens", "Accounts, roles and tokens for scripts.", "group",
                                 f"/admin/users?from={origin}", "", "users-card")
                else:
                    with ui.card().classes("ehr-card"):
                        with ui.row().classes("items-center gap-3 no-wrap"):
                            ui.icon("lock").classes("text-3xl text-primary")
                            tid(ui.label("No modules of this system are available to your account. Database "
                                         "backup and restore is for administrators."), "no-modules")

    @ui.page("/eh", title="Electronic Health · EHR Backup")
    def eh(request: Request) -> None:
        screen(request, "eh")

    @ui.page("/rh", title="Radiation Health · EHR Backup")
    def rh(request: Request) -> None:
        screen(request, "rh")
