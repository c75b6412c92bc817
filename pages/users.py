"""/admin/users: add, disable, reset password, set role, unlock sign-in; create and revoke API tokens."""

from __future__ import annotations

from datetime import datetime

from fastapi import Request
from nicegui import run, ui

from ehr_backup.catalogue import as_utc, utcnow
from ehr_backup.errors import InvalidInput
from ehr_backup.models import ApiToken
from ehr_backup.token_expiry import CHOICES, choice_moment, is_expired, stamp
from ehr_backup.web import WebContext

from .audit import _date_input, parse_day
from .deferred import Deferred
from .frame import PageSession, admin_page, guarded, tid
from .theme import badge, notify, page_body, section

# copy the shown token: the Clipboard API where the page is a secure context, else the selected text
COPY_JS = """() => {
  const input = document.querySelector('[data-testid="token-value"] input');
  if (!input) return;
  input.select();
  const done = () => Quasar.Notify.create({message: 'Token copied', type: 'positive', position: 'bottom-right'});
  const fallback = () => { document.execCommand('copy'); done(); };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(input.value).then(done, fallback);
  else fallback();
}"""


def _when(value: datetime | None) -> str:
    return as_utc(value).astimezone().strftime("%Y-%m-%d %H:%M") if value else "never"  # type: ignore[union-attr]


def register(ctx: WebContext) -> None:
    """Add /admin/users."""
    auth = ctx.auth

    @ui.page("/admin/users", title="Users · EHR Backup")
    async def users_page(request: Request) -> None:
        ps = admin_page(ctx, request, "Users & API tokens")
        body = Deferred()  # built once the browser connects (pages/deferred.py)
        if not await body.connected():
            return

        @ui.refreshable
        def user_list() -> None:
            throttled = auth.login_states()
            with tid(ui.column().classes("w-full gap-0"), "user-list"):
                for u in auth.users():
                    sign_in = throttled.get(u.username)
                    with ui.row().classes("w-full items-center gap-x-3 gap-y-1 py-2 border-b flex-wrap"):
                        ui.label(u.username).classes("font-semibold ehr-wrap min-w-[8rem]")
                        tid(badge("admin" if u.is_admin else "user", "started" if u.is_admin else "neutral"),
                            f"role-{u.username}")
                        tid(badge("disabled" if u.disabled else "active", "failed" if u.disabled else "ok"),
                            f"state-{u.username}")
                        tid(ui.label(sign_in.describe() if sign_in else "—").classes("text-sm ehr-muted"),
                            f"login-state-{u.username}")
                        ui.space()
                        with ui.row().classes("gap-1 flex-wrap"):
                            if u.username == ps.principal.username:  # never offered: you cannot lock yourself out
                                tid(ui.label("you: your own role and state are changed by another admin")
                                    .classes("text-sm ehr-muted"), f"self-{u.username}")
                            else:
                                _user_actions(ps, u.username, u.is_admin, u.disabled, user_list)
                            _password_action(ps, u.username)
                            _unlock_action(ps, u.username, bool(sign_in and sign_in.failures), user_list)

        @ui.refreshable
        def token_list() -> None:
            names = {u.id: u.username for u in auth.users()}
            tokens = auth.tokens()
            with tid(ui.column().classes("w-full gap-0"), "token-list"):
                if not tokens:
                    tid(ui.label("No API tokens yet.").classes("ehr-muted"), "no-tokens")
                for t in tokens:
                    _token_row(ps, t, names.get(t.user_id, "?"), token_list)

        with page_body():
            with section("Add a user", "person_add"):
                with ui.row().classes("items-end gap-4 w-full flex-wrap"):
                    name = tid(ui.input("Username").props("autocomplete=off"), "new-username")
                    password = tid(ui.input("Password", password=True).props("autocomplete=new-password"),
                                   "new-password")
                    admin = tid(ui.checkbox("Administrator"), "new-admin")

                    @guarded(ps, "add user")
                    async def add() -> None:
                        await run.io_bound(auth.add_user, ps.actor, name.value or "", password.value or "",
                                           admin=bool(admin.value))
                        notify(f"User {name.value} added", type="positive")
                        name.value, password.value, admin.value = "", "", False
                        user_list.refresh()
                        token_user.options = [u.username for u in auth.users()]
                        token_user.update()

                    tid(ui.button("Add user", icon="person_add", on_click=add), "add-user")
            with section("Users", "group"):
                user_list()
            with section("API tokens", "key"):
                ui.label("A token is shown once, when it is made; only its hash is kept. Scripts send it as "
                         "Authorization: Bearer <token>.").classes("text-sm ehr-muted")
                with ui.row().classes("items-end gap-4 w-full flex-wrap"):
                    token_user = tid(ui.select([u.username for u in auth.users()], label="User").classes("w-48"),
                                     "token-user")
                    label = tid(ui.input("Label"), "token-label")
                    expiry = tid(ui.select(CHOICES, value="never", label="Expires").classes("w-40"),
                                 "token-expiry")
                    last_day = _date_input("Last day (UTC)", "token-last-day")
                    last_day.bind_visibility_from(expiry, "value", value="date")

                    @guarded(ps, "create token")
                    async def create_token() -> None:
                        day, unclear = parse_day(last_day.value if expiry.value == "date" else "", "Last day")
                        if unclear:
                            raise InvalidInput(unclear)
                        expires = choice_moment(expiry.value or "never", day, utcnow())
                        token = await run.io_bound(auth.create_token, ps.actor, token_user.value or "",
                                                   label.value or "", "admin", expires)
                        if token is None:
                            return
                        with ui.dialog() as d, tid(ui.card().classes("w-full max-w-xl"), "token-dialog"):
                            ui.label("Copy this token now: it will not be shown again.").classes("font-semibold")
                            tid(ui.label("It never expires." if expires is None else
                                         f"It is refused from {stamp(expires)} on.").classes("text-sm"),
                                "token-expires-note")
                            tid(ui.input("New token", value=token).props("readonly").classes("w-full font-mono"),
                                "token-value")
                            with ui.row().classes("gap-2"):
                                tid(ui.button("Copy", icon="content_copy").on("click", js_handler=COPY_JS),
                                    "token-copy")
                                ui.button("Done", on_click=d.close).props("outline")
                        d.open()
                        label.value = ""
                        token_list.refresh()

                    tid(ui.button("Create token", icon="add", on_click=create_token), "create-token")
                warning = tid(ui.label("").classes("text-sm text-negative"), "token-warning")

                def warn() -> None:  # a token acts as its user: one of a non-admin may call nothing
                    chosen = next((u for u in auth.users() if u.username == token_user.value), None)
                    warning.text = ("" if chosen is None or chosen.is_admin else
                                    f"{chosen.username} is not an administrator: a token of this user can do "
                                    "nothing in the backup API. Make the user an administrator first, or "
                                    "choose another user.")

                token_user.on_value_change(warn)
                token_list()
                body.built()


def _token_row(ps: PageSession, t: ApiToken, owner: str, refresh: ui.refreshable) -> None:
    with ui.row().classes("w-full items-center gap-x-4 gap-y-1 py-2 border-b flex-wrap"):
        ui.label(f"{t.prefix}…").classes("font-mono")
        ui.label(owner).classes("font-semibold ehr-wrap")
        ui.label(t.label or "—").classes("ehr-wrap")
        ui.label(f"created {_when(t.created_at)}").classes("text-sm ehr-muted")
        tid(ui.label(f"last used {_when(t.last_used_at)}").classes("text-sm ehr-muted"), f"used-{t.prefix}")
        expired = is_expired(t.expires_at, utcnow())
        ends = "never expires" if t.expires_at is None else f"{'expired' if expired else 'expires'} {stamp(t.expires_at)}"
        tid(ui.label(ends).classes("text-sm ehr-muted"), f"expires-{t.prefix}")
        tid(badge("revoked" if t.revoked_at else "expired" if expired else "active",
                  "failed" if t.revoked_at else "neutral" if expired else "ok"), f"token-state-{t.prefix}")
        if t.scope and t.scope != "admin":
            badge(f"scope: {t.scope}")
        ui.space()
        if not t.revoked_at:
            tid(ui.button("Revoke", icon="block", on_click=lambda: _confirm_revoke(ps, t, owner, refresh))
                .props("flat dense no-caps color=negative"), f"revoke-{t.prefix}")


def _confirm_revoke(ps: PageSession, t: ApiToken, owner: str, refresh: ui.refreshable) -> None:
    with ui.dialog() as d, tid(ui.card().classes("max-w-md"), "revoke-dialog"):
        ui.label("Revoke this token?").classes("ehr-section-title")
        ui.label(f"{t.prefix}… of {owner}{f' ({t.label})' if t.label else ''}: scripts that use it are "
                 "refused from now on. This cannot be undone.")

        @guarded(ps, f"revoke token {t.id}")
        async def revoke() -> None:
            await run.io_bound(ps.ctx.auth.revoke_token, ps.actor, t.id or 0)
            d.close()
            notify("Token revoked", type="positive")
            refresh.refresh()

        with ui.row().classes("gap-2 justify-end w-full"):
            ui.button("Cancel", on_click=d.close).props("flat")
            tid(ui.button("Revoke token", icon="block", on_click=revoke).props("color=negative"), "revoke-confirm")
    d.open()


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

    tid(ui.button("Enable" if disabled else "Disable", on_click=toggle_disabled).props("flat dense no-caps"),
        f"toggle-disabled-{username}")
    tid(ui.button("Remove admin" if is_admin else "Make admin", on_click=toggle_admin).props("flat dense no-caps"),
        f"toggle-admin-{username}")


def _password_action(ps: PageSession, username: str) -> None:
    auth = ps.ctx.auth

    def reset_password() -> None:
        with ui.dialog() as d, tid(ui.card(), "passwd-dialog"):
            ui.label(f"New password for {username}")
            pw = tid(ui.input("New password", password=True).props("autocomplete=new-password"), "passwd-value")

            @guarded(ps, f"reset password {username}")
            async def save() -> None:
                await run.io_bound(lambda: auth.update_user(ps.actor, username, password=pw.value or ""))
                notify("Password changed; the user's sessions were ended", type="positive")
                d.close()

            tid(ui.button("Save", on_click=save), "passwd-save")
        d.open()

    tid(ui.button("Reset password", on_click=reset_password).props("flat dense no-caps"), f"passwd-{username}")


def _unlock_action(ps: PageSession, username: str, has_failures: bool, refresh: ui.refreshable) -> None:
    @guarded(ps, f"unlock {username}")
    async def unlock() -> None:
        cleared = await run.io_bound(ps.ctx.auth.unlock, ps.actor, username)
        if cleared is not None:
            notify(f"Sign-in of {username} unlocked ({cleared} failed attempts forgotten)",
                      type="positive")
        refresh.refresh()

    button = tid(ui.button("Unlock", on_click=unlock).props("flat dense no-caps"), f"unlock-{username}")
    if not has_failures:
        button.disable()
