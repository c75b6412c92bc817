"""/admin/backup: create with live progress, schedules, list, download, verify, restore, delete, storage."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from nicegui import background_tasks, run, ui
from sqlalchemy.exc import SQLAlchemyError

from ehr_backup.errors import BackupError
from ehr_backup.jobs import Job
from ehr_backup.jobs_everywhere import ended_elsewhere, running
from ehr_backup.jobstore import RemoteJob
from ehr_backup.storage import LOCATIONS
from ehr_backup.web import WebContext

from .dashboard import dashboard_card
from .deferred import Deferred
from .drill_report import follow_drill
from .backups_table import BackupTable
from .folder_browser import DirectoryBrowser
from .frame import PageSession, admin_page, guarded, tid
from .jobpanel import COLLAPSE_SECONDS, RECENT, JobPanel, RecentActivity, job_title
from .kept import kept_databases
from .restore_dialog import RestoreDialog
from .rebuild import rebuild_button
from .rotation import _pin_dialog, rotation_button
from .schedules import schedules_section
from .storage import storage_card
from .theme import notify


log = logging.getLogger("ehr_backup.pages")


def register(ctx: WebContext) -> None:
    """Add /admin/backup."""
    service = ctx.service

    @ui.page("/admin/backup", title="Database Backup & Restore · EHR Backup")
    async def backup_page(request: Request) -> None:
        ps = admin_page(ctx, request, "Database Backup & Restore")
        body = Deferred()  # the HTML carries the frame and a "Loading…" status; the rest comes over the socket
        if not await body.connected():
            return
        state: dict[str, Any] = {"rows": []}
        panels: list[JobPanel] = []

        async def reload() -> None:
            await table.load()
            state["rows"] = [*table.views.values(), *({"id": "", "description": "", "database": d}
                                                      for d in table.databases)]  # for the rotation dialog
            await dashboard.load()
            await kept.load()
            await storage.load()
            await schedules.load()
            await state["load_profiles"]()
            names = [d["name"] for d in await run.io_bound(ctx.service.destination_list) or []]
            state["destinations"].set_options(names, value=[v for v in state["destinations"].value or [] if v in names])

        titles: dict[str, str] = {}  # job id -> its card's title, looked up once

        def title_of(job: Job | RemoteJob) -> str:
            """The job's title: its backup's description, from the rows shown or the catalogue."""
            if job.id not in titles:
                bid = job.task.backup_id
                view = table.views.get(bid or "")
                record = None if view or not bid else service.catalogue.get(bid)
                description = view["description"] if view else record.description if record else None
                titles[job.id] = job_title(job.kind, description, job.task.target)
            return titles[job.id]

        def job_done(job: Job | RemoteJob) -> None:
            if job.status == "succeeded":
                notify(f"{title_of(job)}: finished", type="positive")
            elif job.status == "failed":
                notify(f"{title_of(job)}: failed: {job.error}", type="negative", multi_line=True)
            recent.show()
            if not ps_client.is_deleted:  # a page already gone has nothing to refresh
                background_tasks.create(_in(ps_client, reload), name="reload backups")

        def watch(job: Job | RemoteJob) -> JobPanel:
            watched.add(job.id)
            jobs_box.set_visibility(True)
            with jobs_box:  # an ended job's card folds into Recent activity after a few seconds
                panel = JobPanel(ps, job, job_done, title_of(job), collapse_after=COLLAPSE_SECONDS)
            panels.append(panel)
            return panel

        watched: set[str] = set()  # ids of the jobs given a card on this page (a dismissed one stays gone)
        ticks = itertools.count()

        async def tick() -> None:
            now = time.monotonic()
            for panel in panels:
                panel.update()
            panels[:] = [p for p in panels if not p.collapse_if_due(now)]  # gone: dismissed or folded away
            jobs_box.set_visibility(bool(panels))  # empty, it would still add a gap between the cards
            n = next(ticks)
            if ctx.jobs.store is not None and n % 2 == 0:  # PostgreSQL metadata: other instances' jobs
                await others(discover=n % 6 == 0)

        async def others(discover: bool) -> None:
            """Bring other instances' jobs on this page up to date (each second); find new ones (every 3 s)."""
            remote = [p.job for p in panels if isinstance(p.job, RemoteJob) and not p.reported]
            if not remote and not discover:
                return
            found = await run.io_bound(_poll_others, ctx.jobs, remote, discover)
            if found is None:
                return
            started, ended = found
            for job in started:
                if job.id not in watched:
                    watch(job)
            if discover:
                recent.show_remote(ended)

        ps_client = ui.context.client
        with ui.column().classes("p-6 gap-6 w-full max-w-7xl mx-auto"):
            if service.using_demo():
                tid(ui.label("DATABASE_URL is not set: this installation backs up the demo database "
                             "(ehr-backup demo) with a demo key. Set DATABASE_URL and BACKUP_ENCRYPTION_KEY "
                             "for real use.").classes("bg-orange-100 p-3 rounded w-full"), "demo-banner")
            # dialogs live here, outside the list that refreshes under them; absolute: no gap of its own
            dialogs = ui.element().classes("absolute")
            state["dialogs"] = dialogs
            dashboard = dashboard_card(ps)
            dashboard()
            _create_card(ps, state, watch)
            jobs_box = ui.column().classes("w-full gap-2")
            jobs_box.set_visibility(False)
            recent = RecentActivity(ps, title_of)

            schedules = schedules_section(ps, dialogs, watch)
            schedules()
            storage = storage_card(ps)
            storage()
            kept = kept_databases(ps, reload)
            kept()

            with ui.card().classes("w-full"):
                with ui.row().classes("items-center gap-4 w-full"):
                    ui.label("Backups").classes("text-xl font-bold")
                    ui.space()
                    tid(ui.button("Refresh", icon="refresh", on_click=guarded(ps, "refresh backups")(reload))
                        .props("flat"), "refresh")
                    rotation_button(ps, state, reload)
                    rebuild_button(ps, state, reload)  # pages/rebuild.py: catalogue from the files alone
                table = BackupTable(ps, lambda action, row: _row_action(ps, action, row, watch, reload, dialogs))

        body.built()
        await reload()
        # a job keeps running when its browser goes away: show it again; and, with PostgreSQL metadata, the
        # jobs other instances run (a card with their progress and a Cancel that asks them to stop)
        going, ended = await run.io_bound(_jobs_at_load, ctx.jobs) or ([], [])
        for job in going:
            if job.id not in watched:  # unless one started from this page meanwhile
                watch(job)
        recent.remote = ended
        recent.show()
        ui.timer(0.5, tick)


def _poll_others(jobs: Any, remote: list[RemoteJob],
                 discover: bool) -> tuple[list[RemoteJob], list[RemoteJob]] | None:
    """Refresh the other instances' jobs shown; with discover, also those started or ended since (off the loop).
    None when the metadata database did not answer (the page tries again at the next tick)."""
    try:
        jobs.store.refresh(remote)
        if not discover:
            return [], []
        return jobs.store.running_elsewhere(), ended_elsewhere(jobs, RECENT)
    except SQLAlchemyError as exc:
        log.warning("other instances' jobs could not be read: %s", exc.__class__.__name__)
        return None


def _jobs_at_load(jobs: Any) -> tuple[list[Any], list[RemoteJob]]:
    """The running jobs (here and elsewhere) and other instances' finished ones, as a page opens (off the loop)."""
    try:
        return running(jobs), ended_elsewhere(jobs, RECENT)
    except SQLAlchemyError as exc:  # other instances' jobs are missing; this one's still show
        log.warning("other instances' jobs could not be read: %s", exc.__class__.__name__)
        return list(jobs.active()), []


async def _in(client: Any, work: Callable[[], Awaitable[Any]]) -> None:
    """Run page work in a client's context, unless the page has gone meanwhile."""
    if client.is_deleted:
        return
    with client:
        await work()


def _create_card(ps: PageSession, state: dict[str, Any], watch: Callable[[Job], Any]) -> None:
    service = ps.ctx.service
    with ui.card().classes("w-full"):
        ui.label("Create a backup").classes("text-lg font-bold")
        with ui.row().classes("w-full items-end gap-4"):
            description = tid(ui.input("Description", validation={"At most 500 characters": lambda v: len(v or "")
                                                                  <= 500}).classes("w-80"), "description")
            location = tid(ui.select({k: v for k, v in LOCATIONS.items()}, value="default", label="Location")
                           .classes("w-40"), "location")
            compression = tid(ui.select({"gzip": "gzip (smallest)", "zstd": "zstd (fastest)"},
                                        value=service.settings.compression, label="Compression").classes("w-40"),
                              "compression")
            database = tid(ui.select({"default": "default (DATABASE_URL)"}, value="default", label="Database")
                           .classes("w-56"), "create-database")  # the database profile to back up
            # S3 destinations the backup is also copied to (ehr_backup/destinations/); names are validated
            copies = tid(ui.select([], multiple=True, label="Also copy to").classes("min-w-48"), "destinations")
            state["destinations"] = copies  # its options are read off the event loop, in reload()
        with ui.row().classes("w-full items-end gap-2") as custom_row:
            custom_path = tid(ui.input("Folder (absolute path)").classes("w-96"), "custom-path")
            tid(ui.button("Browse…", icon="folder_open", on_click=lambda: browser.open_at(custom_path.value))
                .props("outline"), "browse")
        custom_row.bind_visibility_from(location, "value", value="custom")
        browser = DirectoryBrowser(ps, lambda path: custom_path.set_value(path))

        @guarded(ps, "create backup")
        async def create() -> None:
            task = await run.io_bound(service.prepare_create, ps.actor, description=description.value or "",
                                      location=location.value,
                                      custom_path=custom_path.value if location.value == "custom" else None,
                                      compression=compression.value, database=database.value,
                                      destinations=list(copies.value or []))
            if task is None:
                return
            watch(ps.ctx.jobs.start(task, ps.principal.username))
            description.value = ""  # ready for the next one; the job card carries this one's name
            notify("Backup started", type="info")

        tid(ui.button("Create Backup", icon="backup", on_click=create), "create-button")

    async def load_profiles() -> None:
        """The database selector's choices: the default profile and every stored one."""
        names = await run.io_bound(lambda: [p.name for p in service.profiles.all()])
        if names is not None:
            database.set_options({"default": "default (DATABASE_URL)", **{n: n for n in names}},
                                 value=database.value if database.value in ("default", *names) else "default")

    state["load_profiles"] = load_profiles


async def _row_action(ps: PageSession, action: str, row: dict[str, Any], watch: Callable[[Job], Any],
                      reload: Callable[[], Awaitable[Any]], dialogs: ui.element) -> None:
    """Do a row's action (the row as the service listed it), after checking the session."""
    service = ps.ctx.service
    bid = row["id"]
    if action not in ("download", "verify", "drill", "restore", "delete", "pin", "copy"):
        return
    if not await ps.check(f"{action} {bid}"):
        return
    try:
        if action == "download":
            ui.download.from_url(f"/api/admin/backup/download/{bid}")
        elif action == "verify":
            task = await run.io_bound(service.prepare_verify, ps.actor, bid)
            if task is not None:
                watch(ps.ctx.jobs.start(task, ps.principal.username))
        elif action == "drill":  # restore into a scratch database, check, drop; then a link to the report
            task = await run.io_bound(service.prepare_drill, ps.actor, bid)
            if task is not None:
                job = ps.ctx.jobs.start(task, ps.principal.username)
                follow_drill(watch(job).card, job)
        elif action == "restore":
            with dialogs:
                await RestoreDialog(ps, row, reload, dialogs).open()
        elif action == "pin":
            _pin_dialog(ps, row, reload, dialogs)
        elif action == "copy":  # to an S3 destination (ehr_backup/destinations/copies.py)
            names = [d["name"] for d in await run.io_bound(service.destination_list) or []]
            with dialogs:
                _copy_dialog(ps, row, names, reload)
        else:
            with dialogs:
                _confirm_delete(ps, row, reload)
    except BackupError as exc:
        notify(exc.message, type="negative", multi_line=True)


def _copy_dialog(ps: PageSession, row: dict[str, Any], names: list[str], reload: Callable[[], Any]) -> None:
    with ui.dialog() as dialog, tid(ui.card(), "copy-dialog"):
        ui.label("Copy this backup to a destination").classes("text-lg font-bold")
        ui.label(f"{row['description'] or row['id']} ({row['id']})").classes("break-all")
        if not names:
            ui.label("No S3 destinations yet: add one on the Destinations page.")
        target = tid(ui.select(names, value=names[0] if names else None, label="Destination"), "copy-to")

        @guarded(ps, f"copy {row['id']}")
        async def copy() -> None:
            if not target.value:
                return
            copied = await run.io_bound(ps.ctx.service.copy, ps.actor, row["id"], target.value)
            if copied is not None:
                dialog.close()
                notify(f"Copied to {copied['destination']}: {copied['uri']}", type="positive")
                await reload()

        with ui.row():
            ui.button("Cancel", on_click=dialog.close).props("flat")
            tid(ui.button("Copy", on_click=copy), "copy-confirm")
    dialog.open()


def _confirm_delete(ps: PageSession, row: dict[str, Any], reload: Callable[[], Any]) -> None:
    with ui.dialog() as dialog, tid(ui.card(), "delete-dialog"):
        ui.label("Delete this backup?").classes("text-lg font-bold")
        ui.label(f"{row['description'] or row['id']} ({row['id']})").classes("break-all")
        ui.label("The file, its copies at S3 destinations and its catalogue entry are removed for good.")

        @guarded(ps, f"delete {row['id']}")
        async def delete() -> None:
            await run.io_bound(ps.ctx.service.delete, ps.actor, row["id"])
            dialog.close()
            notify("Backup deleted", type="positive")
            await reload()

        with ui.row():
            ui.button("Cancel", on_click=dialog.close).props("flat")
            tid(ui.button("Delete", on_click=delete).props("color=negative"), "delete-confirm")
    dialog.open()
