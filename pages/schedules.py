"""Schedules on the backup page: each with its times in words, next run and last outcome; run now, edit, delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import run, ui

from ehr_backup.errors import BackupError
from ehr_backup.jobs import Job
from ehr_backup.storage import LOCATIONS

from .frame import PageSession, guarded, local_time, tid
from .loading import error_line, read
from .schedule_dialog import ScheduleDialog, zoned
from .theme import notify

Reload = Callable[..., Awaitable[Any]]
OUTCOME_COLORS = {"succeeded": "positive", "failed": "negative", "skipped": "warning"}


def schedules_section(ps: PageSession, host: ui.element, watch: Callable[[Job], Any]) -> Any:
    """The schedules card (dialogs go in `host`, Run now's job to `watch`); `.load()` fetches and redraws its list."""
    service = ps.ctx.service
    state: dict[str, Any] = {"rows": None, "error": ""}

    async def new() -> None:
        if await ps.check("new schedule"):
            await ScheduleDialog(ps, host, load).open()

    @ui.refreshable
    def listing() -> None:
        rows = state["rows"]
        if state["error"]:
            error_line(state["error"], "schedules-error")
        elif rows is None:
            ui.label("Loading…").classes("text-sm")
        elif not rows:
            tid(ui.label("No schedules yet: backups are made only when someone asks."), "no-schedules")
        for row in rows or []:
            _schedule_row(ps, row, host, watch, load)

    def card() -> None:
        with tid(ui.card().classes("w-full"), "schedules-section"):
            with ui.row().classes("items-center w-full"):
                ui.label("Schedules").classes("text-lg font-bold")
                ui.space()
                # outside the part that redraws: the list reloads whenever a job ends, and a click on a
                # button being replaced would be lost
                tid(ui.button("New schedule", icon="add_alarm", on_click=new).props("outline"), "schedule-new")
            listing()

    async def load(redraw: bool = False) -> None:
        rows, error = await read("The schedules", service.schedule_list)
        if error and error != state["error"]:
            state["rows"], state["error"] = None, error
            listing.refresh()
        elif rows is not None and (redraw or rows != state["rows"] or state["error"]):  # unchanged stays put
            state["rows"], state["error"] = rows, ""
            listing.refresh()

    card.load = load  # type: ignore[attr-defined]
    return card


def _schedule_row(ps: PageSession, row: dict[str, Any], host: ui.element, watch: Callable[[Job], Any],
                  load: Reload) -> None:
    service = ps.ctx.service
    name = row["name"]
    with tid(ui.row().classes("w-full items-center gap-3 border-t pt-2"), f"schedule-row-{name}"):
        with ui.column().classes("gap-0 w-32"):
            ui.label(name).classes("font-bold break-all")
            ui.label({"verify": "re-verifies backups", "drill": "drills the newest verified backups"}.get(
                row["kind"], "makes a backup" if row.get("database", "default") == "default"
                else f"backs up {row['database']}")).classes("text-xs")
        with ui.column().classes("gap-0 w-52"):
            tid(ui.label(row["reading"]), f"schedule-reading-{name}")
            ui.label(f"{row['cron']} · {row['timezone']}").classes("text-xs font-mono text-grey-8")
        where = "—" if row["kind"] in ("verify", "drill") else LOCATIONS.get(row["location"], row["location"])
        ui.label(where + (f": {row['customPath']}" if row["customPath"] else "")).classes("w-24 break-all text-sm")
        with ui.column().classes("gap-0 w-44"):
            ui.label("next run").classes("text-xs text-grey-8")
            tid(ui.label(zoned(row["nextRuns"][0], row["timezone"]) if row["nextRuns"] else "— (disabled)")
                .classes("text-sm"), f"schedule-next-{name}")

        async def toggle(e: Any) -> None:
            if not await ps.check(f"{'enable' if e.value else 'disable'} schedule {name}"):
                return
            try:
                if await run.io_bound(service.schedule_update, ps.actor, name, enabled=bool(e.value)) is not None:
                    notify(f"Schedule {name} {'enabled' if e.value else 'disabled'}", type="positive")
            except BackupError as exc:
                notify(exc.message, type="negative", multi_line=True)
            await load(True)  # the switch shows what is stored, refused or not

        tid(ui.switch("Enabled", value=row["enabled"], on_change=toggle), f"schedule-enabled-{name}")
        with tid(ui.column().classes("gap-0 grow w-40"), f"schedule-outcome-{name}"):
            _outcome(row)
        with ui.row().classes("gap-1 no-wrap"):
            @guarded(ps, f"run schedule {name} now")
            async def run_now() -> None:
                started = await run.io_bound(ps.ctx.scheduler.run_now, ps.actor, name)
                if started is None:
                    return
                if started.handle is not None:
                    watch(started.handle)
                    notify(f"Schedule {name} started", type="info")
                else:
                    notify(f"Schedule {name} could not start: its last outcome says why", type="warning")
                await load()  # a run that could not start is recorded as failed: show it

            @guarded(ps, f"edit schedule {name}")
            async def edit() -> None:
                await ScheduleDialog(ps, host, load, row).open()

            # labelled, not icon-only: a screen reader names each action, and Delete is never a bare icon
            run_button = tid(ui.button("Run now", icon="play_arrow", on_click=run_now).props("flat dense no-caps"),
                             f"schedule-run-{name}")
            if row["running"]:
                run_button.disable()
            tid(ui.button("Edit", icon="edit", on_click=edit).props("flat dense no-caps"), f"schedule-edit-{name}")
            tid(ui.button("Delete", icon="delete", on_click=lambda: _confirm_delete(ps, row, host, load))
                .props("flat dense no-caps color=negative"), f"schedule-delete-{name}")


def _outcome(row: dict[str, Any]) -> None:
    """The last outcome: a failure stays red until a later run succeeds; skipped runs are shown too."""
    last = row["lastRun"]
    if row["running"]:
        ui.badge("running", color="info")
    if row["failing"]:
        ui.badge(f"failed: {row['failure'] or 'no reason recorded'}", color="negative") \
            .classes("whitespace-normal break-all text-left")
    if last is not None and (not row["failing"] or last["status"] == "skipped"):
        ui.badge(last["status"], color=OUTCOME_COLORS.get(last["status"], "grey"))
        if last["status"] == "skipped" and last["message"]:
            ui.label(last["message"]).classes("text-xs break-all")
    elif last is None and not row["running"]:
        ui.label("not run yet").classes("text-sm text-grey-8")
    if last is not None:
        ui.label(f"last run {local_time(last['finishedAt'])} ({last['trigger']})").classes("text-xs text-grey-8")
    if row["failing"] and row["lastSuccessAt"]:
        ui.label(f"last success {local_time(row['lastSuccessAt'])}").classes("text-xs text-grey-8")
    if row["retryAt"]:
        ui.label(f"retry at {local_time(row['retryAt'])}").classes("text-xs")


def _confirm_delete(ps: PageSession, row: dict[str, Any], host: ui.element, load: Reload) -> None:
    name = row["name"]
    with host, ui.dialog() as dialog, tid(ui.card(), "schedule-delete-dialog"):
        dialog.on_value_change(lambda e: None if e.value else dialog.delete())
        ui.label(f"Delete schedule {name}?").classes("text-lg font-bold break-all")
        ui.label("It makes no more runs and its run history goes. The backups it made stay.")

        @guarded(ps, f"delete schedule {name}")
        async def delete() -> None:
            await run.io_bound(ps.ctx.service.schedule_remove, ps.actor, name)
            notify(f"Schedule {name} deleted", type="positive")
            await load()
            dialog.close()  # last: a closed dialog is deleted, and with it this handler's context

        with ui.row():
            ui.button("Cancel", on_click=dialog.close).props("flat")
            tid(ui.button("Delete", on_click=delete).props("color=negative"), "schedule-delete-confirm")
    dialog.open()
