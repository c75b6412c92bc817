"""/admin/users: add, disable, reset password, set role, unlock sign-in; create and revoke API tokens."""

from __future__ import annotations

from fastapi import Request
from nicegui import run, ui

from ehr_backup.catalogue import as_utc
from ehr_backup.web import WebContext

from .frame import PageSession, admin_page, guarded, tid


def register(ctx: WebContext) -> None:
    """Add /admin/users."""
    auth = ctx.auth

    @ui.page("/admin/users", title="Users · EHR Backup")
    async def users_page(request: Request) -> None:
        ps = admin_page(ctx, request, "Users & API tokens")

        @ui.refreshable
        def user_list() -> None:
            users = auth.users()
            throttled = auth.login_states()
            with tid(ui.grid(columns="1.2fr 0.5fr 0.5fr 1.5fr auto").classes("w-full items-center gap-2"),
                     "user-list"):
                for title in ("User", "Role", "State", "Sign-in", ""):
                    ui.label(title).classes("font-bold")
                for u in users:
                    ui.label(u.username)
                    tid(ui.label("admin" if u.is_admin else "user"), f"role-{u.username}")
                    tid(ui.label("disabled" if u.disabled else "active"), f"state-{u.username}")
                    sign_in = throttled.get(u.username)
                    tid(ui.label(sign_in.describe() if sign_in else "—").classes("text-sm"),
                        f"login-state-{u.username}")
                    with ui.row().classes("gap-1"):
                        _user_actions(ps, u.username, u.is_admin, u.disabled, user_list)
                        _unlock_action(ps, u.username, bool(sign_in and sign_in.failures), user_list)

        @ui.refreshable
        def token_list() -> None:
            names = {u.id: u.username for u in auth.users()}
            with tid(ui.grid(columns="1fr 1fr 1.5fr 1fr 1fr auto").classes("w-full items-center gap-2"),
                     "token-list"):
                for title in ("Token", "User", "Label", "Created", "State", ""):
                    ui.label(title).classes("font-bold")
                for t in auth.tokens():
                    ui.label(f"{t.prefix}…").classes("font-mono")
                    ui.label(names.get(t.user_id, "?"))
                    ui.label(t.label or "—")
                    ui.label(as_utc(t.created_at).astimezone().strftime("%Y-%m-%d %H:%M"))  # type: ignore
                    ui.label("revoked" if t.revoked_at else "active")

                    @guarded(ps, f"revoke token {t.id}")
                    async def revoke(token_id: int = t.id or 0) -> None:
                        await run.io_bound(auth.revoke_token, ps.actor, token_id)
                        ui.notify("Token revoked", type="positive")
                        token_list.refresh()

                    b = tid(ui.button("Revoke", on_click=revoke).props("flat dense color=negative"),
                            f"revoke-{t.prefix}")
                    if t.revoked_at:
                        b.disable()

        with ui.column().classes("p-6 gap-6 w-full max-w-5xl mx-auto"):
            with ui.card().classes("w-full"):
                ui.label("Add a user").classes("text-lg font-bold")
                with ui.row().classes("items-end gap-4"):
                    name = tid(ui.input("Username"), "new-username")
                    password = tid(ui.input("Password", password=True), "new-password")
                    admin = tid(ui.checkbox("Administrator"), "new-admin")

                    @guarded(ps, "add user")
                    async def add() -> None:
                        await run.io_bound(auth.add_user, ps.actor, name.value or "", password.value or "",
                                           admin=bool(admin.value))
                        ui.notify(f"User {name.value} added", type="positive")
                        name.value, password.value, admin.value = "", "", False
                        user_list.refresh()
                        token_user.options = [u.username for u in auth.users()]
                        token_user.update()

                    tid(ui.button("Add user", on_click=add), "add-user")
            user_list()
            with ui.card().classes("w-full"):
                ui.label("API tokens").classes("text-lg font-bold")
                ui.label("A token is shown once, when it is made; only its hash is kept. Scripts send it as "
                         "Authorization: Bearer <token>.").classes("text-sm")
                with ui.row().classes("items-end gap-4"):
                    token_user = tid(ui.select([u.username for u in auth.users()], label="User").classes("w-48"),
                                     "token-user")
                    label = tid(ui.input("Label"), "token-label")

                    @guarded(ps, "create token")
                    async def create_token() -> None:
                        token = await run.io_bound(auth.create_token, ps.actor, token_user.value or "",
                                                   label.value or "")
                        if token is None:
                            return
                        with ui.dialog() as d, tid(ui.card(), "token-dialog"):
                            ui.label("Copy this token now: it will not be shown again.")
                            tid(ui.input(value=token).props("readonly").classes("w-[32rem] font-mono"),
                                "token-value")
                            ui.button("Done", on_click=d.close)
                        d.open()
                        token_list.refresh()

                    tid(ui.button("Create token", on_click=create_token), "create-token")
                token_list()


def _user_actions(ps: PageSession, username: str, is_admin: bool, disabled: bool, refresh: ui.refreshable) -> None:
    auth = ps.ctx.auth

    @guarded(ps, f"toggle disabled {username}")
    async def toggle_disabled() -> None:
        await run.io_bound(lambda: auth.update_user(ps.actor, username, disabled=not disabled))
        refresh.refresh()

    @guarded(ps, f"toggle admin {username}")
    async def toggle_admin() -> None:
        await run.io_bound(lambda: auth.update_user(ps.actor, username, admin=not is_admin))
        refresh.refresh()

    def reset_password() -> None:
        with ui.dialog() as d, tid(ui.card(), "passwd-dialog"):
            ui.label(f"New password for {username}")
            pw = tid(ui.input("New password", password=True), "passwd-value")

            @guarded(ps, f"reset password {username}")
            async def save() -> None:
                await run.io_bound(lambda: auth.update_user(ps.actor, username, password=pw.value or ""))
                ui.notify("Password changed; the user's sessions were ended", type="positive")
                d.close()

            tid(ui.button("Save", on_click=save), "passwd-save")
        d.open()

    tid(ui.button("Enable" if disabled else "Disable", on_click=toggle_disabled).props("flat dense"),
        f"toggle-disabled-{username}")
    tid(ui.button("Remove admin" if is_admin else "Make admin", on_click=toggle_admin).props("flat dense"),
        f"toggle-admin-{username}")
    tid(ui.button("Reset password", on_click=reset_password).props("flat dense"), f"passwd-{username}")


def _unlock_action(ps: PageSession, username: str, has_failures: bool, refresh: ui.refreshable) -> None:
    @guarded(ps, f"unlock {username}")
    async def unlock() -> None:
        cleared = await run.io_bound(ps.ctx.auth.unlock, ps.actor, username)
        if cleared is not None:
            ui.notify(f"Sign-in of {username} unlocked ({cleared} failed attempts forgotten)",
                      type="positive")
        refresh.refresh()

    button = tid(ui.button("Unlock", on_click=unlock).props("flat dense"), f"unlock-{username}")
    if not has_failures:
        button.disable()
