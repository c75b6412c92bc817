"""/login and the one-time /setup page for the first administrator."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from nicegui import run, ui

from ehr_backup.audit import Actor
from ehr_backup.browser import browser_nonce
from ehr_backup.clientaddr import client_address
from ehr_backup.errors import BackupError, Unauthenticated
from ehr_backup.web import WebContext, safe_next

from .frame import tid
from .theme import apply, auth_card


def _sign_in(ctx: WebContext, token: str, browser: str, target: str) -> None:
    ticket = ctx.auth.issue_ticket(token, browser)
    ui.navigate.to(f"/auth/complete?ticket={quote(ticket)}&next={quote(safe_next(target))}")


def register(ctx: WebContext) -> None:
    """Add /login and /setup."""

    @ui.page("/login", title="Sign in · EHR Backup")
    def login_page(request: Request, next: str = "/eh") -> None:
        address = client_address(request)
        browser = browser_nonce(request.scope)
        apply()
        with auth_card("Sign in", "to manage the EHR database's backups"):
            username = tid(ui.input("Username").props("autofocus autocomplete=username").classes("w-full"),
                           "username")
            password = tid(ui.input("Password", password=True, password_toggle_button=True)
                           .props("autocomplete=current-password").classes("w-full"), "password")
            message = tid(ui.label("").classes("text-negative").props('role="alert"'), "login-error")

            async def attempt() -> None:
                message.text = ""
                try:
                    result = await run.io_bound(ctx.auth.login, username.value or "", password.value or "",
                                                address, browser)
                    if result is not None:  # None: the page went away meanwhile
                        _sign_in(ctx, result[1], browser, next)
                except Unauthenticated as exc:
                    message.text = exc.message
                    password.value = ""

            password.on("keydown.enter", attempt)
            tid(ui.button("Log in", icon="login", on_click=attempt).classes("w-full"), "login-button")

    @ui.page("/setup", title="Set up · EHR Backup")
    def setup_page(request: Request, token: str = "") -> None:
        address = client_address(request)
        browser = browser_nonce(request.scope)
        apply()
        with auth_card("Create the first administrator", "a one-time step: this link works once"):
            if ctx.auth.has_users() or not ctx.check_setup_token(token):
                tid(ui.label("This setup link is not valid: it was used already, or an administrator exists. "
                             "Sign in instead, or run `ehr-backup user add NAME --admin` on the server."),
                    "setup-invalid")
                ui.link("Go to sign in", "/login").classes("ehr-link")
                return
            username = tid(ui.input("Username").classes("w-full"), "setup-username")
            password = tid(ui.input("Password", password=True).props("autocomplete=new-password").classes("w-full"),
                           "setup-password")
            confirm = tid(ui.input("Repeat password", password=True).props("autocomplete=new-password")
                          .classes("w-full"), "setup-confirm")
            message = tid(ui.label("").classes("text-negative").props('role="alert"'), "setup-error")

            async def create() -> None:
                if password.value != confirm.value:
                    message.text = "the passwords differ"
                    return
                if not ctx.check_setup_token(token):
                    message.text = "this setup link has been used already"
                    return
                try:  # add_first_admin refuses when any user exists, atomically: two setups cannot both win
                    created = await run.io_bound(ctx.auth.add_first_admin, Actor("setup-link", address),
                                                 username.value or "", password.value or "")
                    if created is None:  # the page went away meanwhile
                        return
                    ctx.consume_setup_token()
                    result = await run.io_bound(ctx.auth.login, username.value, password.value, address,
                                                browser)
                    if result is not None:
                        _sign_in(ctx, result[1], browser, "/eh")
                except BackupError as exc:
                    message.text = exc.message

            tid(ui.button("Create administrator", icon="person_add", on_click=create).classes("w-full"), "setup-button")
