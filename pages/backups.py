"""/admin/backup: create with live progress, schedules, list, download, verify, restore, delete, storage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from nicegui import run, ui

from ehr_backup.errors import BackupError
from ehr_backup.jobs import Job
from ehr_backup.storage import LOCATIONS
from ehr_backup.web import WebContext

from .dashboard import dashboard_card
from .drill_report import follow_drill
from .frame import PageSession, admin_page, guarded, human_size, local_time, tid
from .jobpanel import JobPanel
from .kept import kept_databases
from .restore_dialog import RestoreDialog
from .rotation import rotation_button, rotation_cell
from .schedules import schedules_section
from .storage import storage_card

STATUS_COLORS = {"completed": "positive", "running": "info", "failed": "negative", "cancelled": "grey",
                 "missing": "warning", "discovered": "orange"}


def register(ctx: WebContext) -> None:
    """Add /admin/backup."""
    service = ctx.service

    @ui.page("/admin/backup", title="Database Backup & Restore · EHR Backup")
    async def backup_page(request: Request) -> None:
        ps = admin_page(ctx, request, "Database Backup & Restore")
        state: dict[str, Any] = {"location": "all", "newest_first": True, "rows": [], "locations": []}
        panels: list[JobPanel] = []

        async def reload() -> None:
            location = None if state["location"] == "all" else state["location"]
            rows = await run.io_bound(service.list, location=location) or []
            if rows != state["rows"]:  # redraw only a changed list: a click on a button being replaced is lost
                state["rows"] = rows
                backup_list.refresh()
            await dashboard.load()  # first: it is at the top
            await kept.load()
            await storage.load()
            await schedules.load()

        def job_done(job: Job) -> None:
            if job.status == "succeeded":
                ui.notify(f"{job.kind.capitalize()} finished: {job.task.target}", type="positive")
            elif job.status == "failed":
                ui.notify(f"{job.kind.capitalize()} failed: {job.error}", type="negative", multi_line=True)
            ui.timer(0.1, reload, once=True)

        def watch(job: Job) -> JobPanel:
            with jobs_box:
                panel = JobPanel(ps, job, job_done)
            panels.append(panel)
            return panel

        def tick() -> None:
            for panel in panels:
                panel.update()

        with ui.column().classes("p-6 gap-6 w-full max-w-6xl mx-auto"):
            if service.using_demo():
                tid(ui.label("DATABASE_URL is not set: this installation backs up the demo database "
                             "(ehr-backup demo) with a demo key. Set DATABASE_URL and BACKUP_ENCRYPTION_KEY "
                             "for real use.").classes("bg-orange-100 p-3 rounded w-full"), "demo-banner")
            dialogs = ui.element()  # dialogs live here, outside the list that refreshes under them
            state["dialogs"] = dialogs
            dashboard = dashboard_card(ps)
            dashboard()
            _create_card(ps, state, watch)
            jobs_box = ui.column().classes("w-full gap-2")

            schedules = schedules_section(ps, dialogs, watch)
            schedules()
            storage = storage_card(ps)
            storage()
            kept = kept_databases(ps, reload)
            kept()

            with ui.row().classes("items-center gap-4 w-full"):
                ui.label("Backups").classes("text-xl font-bold")
                ui.space()

                @guarded(ps, "filter backups")
                async def set_filter(e: Any) -> None:
                    state["location"] = e.value
                    await reload()

                tid(ui.select({"all": "All locations", **{k: v for k, v in LOCATIONS.items()}}, value="all",
                              label="Location", on_change=set_filter).classes("w-48"), "filter-location")

                def toggle_sort() -> None:
                    state["newest_first"] = not state["newest_first"]
                    sort_button.text = "Newest first" if state["newest_first"] else "Oldest first"
                    backup_list.refresh()

                sort_button = tid(ui.button("Newest first", icon="swap_vert", on_click=toggle_sort)
                                  .props("flat"), "sort")
                tid(ui.button("Refresh", icon="refresh", on_click=guarded(ps, "refresh backups")(reload))
                    .props("flat"), "refresh")
                rotation_button(ps, state, reload)

            @ui.refreshable
            def backup_list() -> None:
                rows = sorted(state["rows"], key=lambda r: r["createdAt"] or "", reverse=state["newest_first"])
                if not rows:
                    tid(ui.label("No backups yet."), "no-backups")
                    return
                with tid(ui.grid(columns="2fr 1fr 1.4fr 1fr 0.7fr 0.9fr 1.1fr 1.3fr auto").classes(
                        "w-full items-center gap-x-4 gap-y-2"), "backup-list"):
                    for title in ("Description", "Location", "Created", "Created by", "Size", "Status",
                                  "Last verification", "Rotation", ""):
                        ui.label(title).classes("font-bold")
                    for row in rows:
                        _backup_row(ps, row, watch, reload, state["dialogs"])

            backup_list()
            await reload()
            for job in ctx.jobs.active():  # a job keeps running when its browser goes away: show it again
                watch(job)
            ui.timer(0.5, tick)


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
                                      compression=compression.value)
            if task is None:
                return
            watch(ps.ctx.jobs.start(task, ps.principal.username))
            ui.notify("Backup started", type="info")

        tid(ui.button("Create Backup", icon="backup", on_click=create), "create-button")


class DirectoryBrowser:
    """A server-side folder chooser: navigate, create a folder, choose."""

    def __init__(self, ps: PageSession, on_choose: Callable[[str], Any]) -> None:
        self.ps = ps
        self.on_choose = on_choose
        self.path = ""
        with ui.dialog() as self.dialog, tid(ui.card().classes("w-[40rem]"), "browser"):
            ui.label("Choose a folder").classes("text-lg font-bold")
            self.current = tid(ui.label().classes("font-mono"), "browse-path")
            self.reason = tid(ui.label().classes("text-negative text-sm"), "browse-reason")
            tid(ui.button("Up", icon="arrow_upward", on_click=self.up).props("flat"), "browse-up")
            self.listing = ui.column().classes("gap-0 max-h-80 overflow-auto w-full")
            with ui.row().classes("items-end"):
                self.new_name = tid(ui.input("New folder name"), "new-folder-name")
                tid(ui.button("Create folder", on_click=self.make).props("outline"), "new-folder")
            with ui.row():
                tid(ui.button("Choose this folder", on_click=self.choose), "browse-choose")
                ui.button("Close", on_click=self.dialog.close).props("flat")

    async def open_at(self, path: str | None) -> None:
        """Open the dialog at a folder (default: the home folder)."""
        await self.show(path or None)
        self.dialog.open()

    async def show(self, path: str | None) -> None:
        """List a folder."""
        if not await self.ps.check("browse folders"):
            return
        try:
            data = await run.io_bound(self.ps.ctx.service.browse, path)
        except BackupError as exc:
            ui.notify(exc.message, type="negative")
            return
        if data is None:
            return
        self.path = data["path"]
        self.parent = data["parent"]
        self.current.text = self.path
        self.reason.text = "" if data["allowed"] else f"Backups cannot go here: {data['reason']}"
        self.listing.clear()
        unusable = {e["name"]: e["reason"] for e in data.get("entries", []) if not e["allowed"]}
        with self.listing:
            for name in data["dirs"]:
                tid(ui.button(name, icon="folder", on_click=lambda n=name: self.show(f"{self.path.rstrip('/')}/{n}"))
                    .props("flat no-caps align=left").classes("w-full"), f"dir-{name}")
                if name in unusable:  # listed, but its name cannot be part of a backup location
                    tid(ui.label(f"↳ {name} cannot be chosen: {unusable[name]}")
                        .classes("text-xs text-grey-7 pl-8"), "unusable-dir")

    async def up(self) -> None:
        """Go to the parent folder."""
        if self.parent:
            await self.show(self.parent)

    async def make(self) -> None:
        """Create a folder here and enter it."""
        if not await self.ps.check("create folder"):
            return
        try:
            made = await run.io_bound(self.ps.ctx.service.create_folder, self.ps.actor, self.path,
                                      self.new_name.value or "")
        except BackupError as exc:
            ui.notify(exc.message, type="negative")
            return
        self.new_name.value = ""
        await self.show(made)

    def choose(self) -> None:
        """Use the current folder as the custom location."""
        self.on_choose(self.path)
        self.dialog.close()


def _backup_row(ps: PageSession, row: dict[str, Any], watch: Callable[[Job], Any],
                reload: Callable[[], Any], dialogs: ui.element) -> None:
    service = ps.ctx.service
    bid = row["id"]
    claim = " (unverified claim)" if row.get("unverified") else ""  # a found file's header, not yet proven
    tid(ui.label((row["description"] or "—") + claim).classes("break-all").tooltip(bid), f"row-{bid}")
    ui.label(LOCATIONS.get(row["location"], row["location"]))
    ui.label(local_time(row["createdAt"]) + (" (file time)" if row.get("unverified") else ""))
    with ui.column().classes("gap-0"):
        ui.label((row["createdBy"] or "—") + claim)
        if row.get("schedule"):
            tid(ui.badge(f"schedule {row['schedule']}", color="indigo").classes("break-all"), f"from-schedule-{bid}")
    ui.label(human_size(row["size"]))
    status = row["status"] + (" (found on disk, unverified)" if row.get("unverified") else "")
    tid(ui.badge(status, color=STATUS_COLORS.get(row["status"], "grey")), f"status-{bid}")
    verified = "—" if row["verifyOk"] is None else \
        (f"✔ {local_time(row['verifiedAt'])}" if row["verifyOk"] else f"✘ {row['verifyMessage']}")
    with ui.column().classes("gap-0"):
        tid(ui.label(verified).classes("text-sm"), f"verified-{bid}")
        drill = row.get("lastDrill")
        if drill:
            passed = drill["outcome"] == "passed"
            seconds = drill.get("recoverySeconds")
            took = f", {seconds:.1f} s" if passed and isinstance(seconds, int | float) else ""
            tid(ui.label(f"drill {'passed' if passed else 'FAILED'}{took}")
                .classes("text-xs" if passed else "text-xs text-negative"), f"drill-state-{bid}")
    rotation_cell(ps, row, reload, dialogs)
    usable = row["status"] in ("completed", "discovered")
    with ui.row().classes("gap-1 no-wrap"):
        @guarded(ps, f"download {bid}")
        async def download() -> None:
            ui.download.from_url(f"/api/admin/backup/download/{bid}")

        @guarded(ps, f"verify {bid}")
        async def verify() -> None:
            task = await run.io_bound(service.prepare_verify, ps.actor, bid)
            if task is not None:
                watch(ps.ctx.jobs.start(task, ps.principal.username))

        for label, icon, handler, name in (("Download", "download", download, "download"),
                                           ("Verify", "verified", verify, "verify")):
            b = tid(ui.button(icon=icon, on_click=handler).props("flat dense").tooltip(label), f"{name}-{bid}")
            if not usable:
                b.disable()
        @guarded(ps, f"drill {bid}")
        async def drill() -> None:  # restore into a scratch database, check, drop; then a link to the report
            task = await run.io_bound(service.prepare_drill, ps.actor, bid)
            if task is not None:
                job = ps.ctx.jobs.start(task, ps.principal.username)
                follow_drill(watch(job).card, job)

        drill_button = tid(ui.button(icon="fact_check", on_click=drill).props("flat dense")
                           .tooltip("Drill: restore into a scratch database and check"), f"drill-{bid}")
        if not usable:
            drill_button.disable()
        restore = tid(ui.button(icon="settings_backup_restore",
                                on_click=lambda: RestoreDialog(ps, row, reload, dialogs).open()).props("flat dense")
                      .tooltip("Restore"), f"restore-{bid}")
        if not usable:
            restore.disable()
        tid(ui.button(icon="delete", on_click=lambda: _confirm_delete(ps, row, reload))
            .props("flat dense color=negative").tooltip("Delete"), f"delete-{bid}")


def _confirm_delete(ps: PageSession, row: dict[str, Any], reload: Callable[[], Any]) -> None:
    with ui.dialog() as dialog, tid(ui.card(), "delete-dialog"):
        ui.label("Delete this backup?").classes("text-lg font-bold")
        ui.label(f"{row['description'] or row['id']} ({row['id']})").classes("break-all")
        ui.label("The file and its catalogue entry are removed for good.")

        @guarded(ps, f"delete {row['id']}")
        async def delete() -> None:
            await run.io_bound(ps.ctx.service.delete, ps.actor, row["id"])
            dialog.close()
            ui.notify("Backup deleted", type="positive")
            await reload()

        with ui.row():
            ui.button("Cancel", on_click=dialog.close).props("flat")
            tid(ui.button("Delete", on_click=delete).props("color=negative"), "delete-confirm")
    dialog.open()
