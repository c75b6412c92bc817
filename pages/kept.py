"""Previous databases a restore kept: roll back to one, or drop it now."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import run, ui

from .frame import PageSession, guarded, local_time, tid
from .loading import error_line, read
from .theme import notify


def kept_databases(ps: PageSession, reload: Callable[[], Awaitable[Any]]) -> Any:
    """A card listing the kept databases; returns the refreshable that draws it (call .refresh())."""
    service = ps.ctx.service
    state: dict[str, Any] = {"rows": [], "error": ""}

    @ui.refreshable
    def card() -> None:
        rows = state["rows"]
        if not rows and not state["error"]:
            return  # nothing kept: no card
        with tid(ui.card().classes("w-full"), "kept-databases"):
            ui.label("Previous databases").classes("text-lg font-bold")
            if state["error"]:
                error_line(state["error"], "kept-error")
                return
            ui.label("A restore keeps the database it replaced, renamed, so that it can be put back. Each is "
                     f"dropped {service.settings.keep_previous_hours} hours after the restore.").classes("text-sm")
            newest: dict[str, str] = {}
            for r in rows:  # rows come newest first: roll back only to the newest of each database
                if r["kind"] == "previous":
                    newest.setdefault(r["database"], r["name"])
            for r in rows:
                with ui.row().classes("items-center w-full gap-4"):
                    ui.label(r["name"]).classes("font-mono break-all")
                    kind = "replaced by a restore" if r["kind"] == "previous" else "rolled back from"
                    ui.label(f"{kind} of {r['database']} · {local_time(r['createdAt'])}").classes("text-sm")
                    ui.space()
                    if newest.get(r["database"]) == r["name"]:
                        tid(ui.button("Roll back", icon="undo",
                                      on_click=lambda r=r: _confirm(ps, r, rollback=True, reload=reload))
                            .props("outline"), f"rollback-{r['name']}")
                    tid(ui.button("Drop", icon="delete",
                                  on_click=lambda r=r: _confirm(ps, r, rollback=False, reload=reload))
                        .props("flat color=negative"), f"drop-kept-{r['name']}")

    async def load() -> None:
        rows, state["error"] = await read("The databases restores kept", service.kept_databases)
        state["rows"] = rows or []
        card.refresh()

    card.load = load  # type: ignore[attr-defined]
    return card


def _confirm(ps: PageSession, row: dict[str, Any], *, rollback: bool,
             reload: Callable[[], Awaitable[Any]]) -> None:
    with ui.dialog() as dialog, tid(ui.card(), "kept-dialog"):
        if rollback:
            ui.label(f"Put {row['name']} back as {row['database']}?").classes("text-lg font-bold")
            ui.label(f"The database now called {row['database']} (the restored one) is kept in its place, so this "
                     "can be undone too. Sessions connected to it are ended.")
        else:
            ui.label(f"Drop {row['name']} now?").classes("text-lg font-bold")
            ui.label("It can then no longer be rolled back to.")
        confirm = tid(ui.input(f"Type the database name ({row['database']}) to confirm").classes("w-full"),
                      "kept-confirm")

        @guarded(ps, ("roll back to " if rollback else "drop ") + row["name"])
        async def go() -> None:
            if rollback:
                # on the server that holds it: a profile's kept database is not on DATABASE_URL's server
                result = await run.io_bound(ps.ctx.service.rollback, ps.actor, row["database"], row.get("profile"))
                if result is not None:
                    notify(f"{row['database']} is the previous database again", type="positive")
            else:
                await run.io_bound(ps.ctx.service.drop_kept, ps.actor, row["name"], row.get("profile"))
                notify(f"{row['name']} dropped", type="positive")
            dialog.close()
            await reload()

        with ui.row():
            ui.button("Cancel", on_click=dialog.close).props("flat")
            button = tid(ui.button("Roll back" if rollback else "Drop", on_click=go).props("color=negative"),
                         "kept-go")
            button.bind_enabled_from(confirm, "value", backward=lambda v: v == row["database"])
    dialog.open()
