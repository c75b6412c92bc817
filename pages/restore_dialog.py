"""The restore dialog: the whole database (swap or recreate) or chosen tables; progress; the report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from nicegui import background_tasks, run, ui

from ehr_backup.errors import BackupError
from ehr_backup.jobs import Job
from ehr_backup.restore.operation import default_jobs

from .frame import PageSession, local_time, tid
from .jobpanel import JobPanel
from .theme import notify

MODES = {"swap": "Swap in a fresh copy (keeps the current database for rollback)",
         "recreate": "Recreate in place (no room for a second copy: safety backup first, not atomic)"}


class RestoreDialog:
    """Confirm by typing the database name, then show progress and the table-by-table comparison."""

    def __init__(self, ps: PageSession, row: dict[str, Any], on_done: Callable[[], Awaitable[Any]] | None = None,
                 host: ui.element | None = None) -> None:
        self.host = host  # where the dialog lives: not in the list, which refreshes while the dialog is open
        self.ps = ps
        self.row = row
        self.on_done = on_done
        self.job: Job | None = None
        self.panel: JobPanel | None = None
        self.tables: list[str] = []

    async def open(self) -> None:
        """Build and show the dialog."""
        # the target: the database profile the backup was made from, unless another is chosen below
        self.target = self.row.get("profile") or "default"
        service = self.ps.ctx.service
        try:  # off the event loop: with the demo database this may start its server
            conn = await run.io_bound(service.connection, self.target)
            self.profiles = await run.io_bound(lambda: ["default", *(p.name for p in service.profiles.all())])
        except BackupError as exc:
            notify(exc.message, type="negative")
            return
        if conn is None or self.profiles is None:
            return
        db = self.db = conn.dbname
        with self.host or ui.element().classes("hidden"):
            self._build(conn, db)
            # beside the dialog, not in the row that opened it: the list refreshes (deleting that row) while
            # the restore runs, and a timer whose parent is gone cannot be deleted when the dialog closes
            self.timer = ui.timer(0.5, self.tick, active=False)
        self.dialog.open()

    def _build(self, conn: Any, db: str) -> None:
        with ui.dialog().props("persistent") as self.dialog, tid(ui.card().classes("w-[46rem] max-w-full"),
                                                                 "restore-dialog"):
            ui.label("Restore a backup").classes("text-lg font-bold")
            self.heading = ui.label(self._heading(conn)).classes("break-words")
            if len(self.profiles) > 1 or self.target not in self.profiles:  # only with database profiles
                self.profile = tid(ui.select(sorted({*self.profiles, self.target}), value=self.target,
                                             label="Into database profile", on_change=self._target_changed)
                                   .classes("w-64"), "restore-profile")
            self.what = tid(ui.radio({"all": "The whole database", "tables": "Chosen tables, beside the live ones"},
                                     value="all", on_change=self._what_changed).props("inline"), "restore-what")
            with ui.column().classes("w-full gap-1") as self.whole:
                self.warning = tid(ui.label(self._warning(db)), "restore-warning")
                with ui.row().classes("w-full items-end gap-4"):
                    self.mode = tid(ui.select(MODES, value="swap", label="How").classes("w-96"), "restore-mode")
                    self.jobs = tid(ui.number("Parallel connections", value=default_jobs(), min=1, max=8, step=1,
                                              precision=0).classes("w-44"), "restore-jobs")
                self.roles = tid(ui.checkbox("Create roles the database needs that this server lacks (existing "
                                             "roles are never changed)", value=False), "restore-roles")
                ui.label("Leave unticked on the server the backup was made on: a role dropped since stays "
                         "dropped.").classes("text-xs text-grey-8")
            with ui.column().classes("w-full gap-1") as self.chosen:
                ui.label("The chosen tables are restored, with their indexes, constraints and comments, into a new "
                         "schema of this database, beside the live tables, so that you can compare and copy rows "
                         "back. The live tables are not touched.")
                self.picker = tid(ui.select([], multiple=True, label="Tables", with_input=True)
                                  .classes("w-full").props("use-chips"), "restore-tables")
                self.into = tid(ui.input("Restore into schema", value=f"restored_{date.today():%Y%m%d}")
                                .classes("w-64"), "restore-into")
            self.chosen.set_visibility(False)
            self.confirm = tid(ui.input(self._confirm_label(db)).classes("w-full"), "restore-confirm")
            self.progress = ui.column().classes("w-full")
            self.report = tid(ui.column().classes("w-full"), "restore-report")
            with ui.row():
                self.close_button = tid(ui.button("Close", on_click=self.close).props("flat"), "restore-close")
                self.start_button = tid(ui.button("Restore", on_click=self.start).props("color=negative"),
                                        "restore-start")
                self.start_button.bind_enabled_from(self.confirm, "value", backward=lambda v: v == self.db)

    def _heading(self, conn: Any) -> str:
        return (f"Backup “{self.row['description'] or self.row['id']}” made {local_time(self.row['createdAt'])}"
                f" into database “{conn.dbname}” on {conn.display.split('/')[0]}.")

    @staticmethod
    def _warning(db: str) -> str:
        return (f"This replaces ALL data in “{db}”: everything created or changed since the backup is gone from "
                "it. The backup is built into a fresh database and checked first; only then is it swapped in, and "
                "the current database is kept so that you can roll back. If anything fails before the swap, "
                "nothing is changed.")

    @staticmethod
    def _confirm_label(db: str) -> str:
        return f"Type the database name ({db}) to confirm"

    async def _target_changed(self, e: Any) -> None:
        """Another profile chosen: the texts and the name to type are that profile's database's."""
        try:
            conn = await run.io_bound(self.ps.ctx.service.connection, e.value)
        except BackupError as exc:
            notify(exc.message, type="negative")
            return
        if conn is None:
            return
        self.target, self.db = e.value, conn.dbname
        self.heading.text = self._heading(conn)
        self.warning.text = self._warning(conn.dbname)
        self.confirm.props["label"] = self._confirm_label(conn.dbname)
        self.confirm.value = ""  # typed for another database: type again
        self.confirm.update()

    def close(self) -> None:
        """Close and remove the dialog (a later restore opens a new one)."""
        self.timer.deactivate()
        self.dialog.close()
        self.dialog.delete()
        self.timer.delete()

    async def _what_changed(self) -> None:
        tables = self.what.value == "tables"
        self.whole.set_visibility(not tables)
        self.chosen.set_visibility(tables)
        if tables and not self.tables:
            if not await self.ps.check(f"contents of {self.row['id']}"):
                return
            try:
                contents = await run.io_bound(self.ps.ctx.service.contents, self.ps.actor, self.row["id"])
            except BackupError as exc:
                notify(exc.message, type="negative", multi_line=True)
                return
            if contents is None:
                return
            self.tables = [f"{t['schema']}.{t['name']}" for t in contents["tables"]]
            self.picker.set_options(self.tables)

    async def start(self) -> None:
        """Start the restore job."""
        if not await self.ps.check(f"restore {self.row['id']}"):
            return
        options: dict[str, Any]
        if self.what.value == "tables":
            if not self.picker.value:
                notify("Choose at least one table", type="warning")
                return
            options = {"tables": list(self.picker.value), "into_schema": self.into.value or ""}
        else:
            options = {"mode": self.mode.value, "jobs": int(self.jobs.value or 1),
                       "roles": True if self.roles.value else None}
        options["database"] = self.target
        try:
            task = await run.io_bound(lambda: self.ps.ctx.service.prepare_restore(self.ps.actor, self.row["id"],
                                                                                  **options))
        except BackupError as exc:
            notify(exc.message, type="negative", multi_line=True)
            return
        if task is None:
            return
        self.start_button.set_visibility(False)
        for element in (self.confirm, self.what, self.mode, self.jobs, self.roles, self.picker, self.into,
                        *([self.profile] if hasattr(self, "profile") else [])):
            element.disable()
        self.close_button.disable()
        self.job = self.ps.ctx.jobs.start(task, self.ps.principal.username)
        with self.progress:
            self.panel = JobPanel(self.ps, self.job, self.finished)
        self.timer.activate()

    def tick(self) -> None:
        """Follow the job."""
        if self.panel:
            self.panel.update()

    def finished(self, job: Job) -> None:
        """Show the outcome and the table-by-table comparison (red when the restore failed)."""
        self.timer.deactivate()
        self.close_button.enable()
        with self.report:
            report = job.result if job.status == "succeeded" else job.error_report
            if job.status != "succeeded":
                tid(ui.label(f"Restore {job.status}: {job.error}. The database was left as it was.")
                    .classes("text-negative break-words"), "restore-failed")
            else:
                r = job.result
                where = f"schema {r['intoSchema']} of " if r.get("intoSchema") else ""
                tid(ui.label(f"Restore complete in {r['seconds']} s into {where}{r['database']}. Row counts match "
                             f"the backup for all {len(r['tables'])} tables.").classes("text-positive"),
                    "restore-result")
                if r.get("previousDatabase"):
                    tid(ui.label(f"The previous database is kept as {r['previousDatabase']}: “Roll back” under "
                                 "Previous databases puts it back.").classes("text-sm"), "restore-previous")
                if r.get("safetyBackup"):
                    ui.label(f"Safety backup taken first: {r['safetyBackup']}").classes("text-sm")
                for note in (r.get("notes") or []) + [f"Not restored: {x}" for x in r.get("leftOut") or []]:
                    ui.label(note).classes("text-sm text-grey-8 break-words")
            if report and report.get("tables"):
                rows = [{"table": t, "expected": c["expected"], "loaded": c["loaded"],
                         "actual": "—" if c["actual"] is None else c["actual"],
                         "state": "matches" if c["expected"] == c["loaded"] == c["actual"] else "DIFFERS"}
                        for t, c in report["tables"].items()]
                tid(ui.table(columns=[{"name": k, "label": label, "field": k, "align": "left" if k == "table" else "right"}
                                      for k, label in (("table", "Table"), ("expected", "In backup"),
                                                       ("loaded", "Loaded"), ("actual", "Restored"),
                                                       ("state", ""))],
                             rows=rows).classes("w-full").props("dense"), "restore-comparison")
        if self.on_done is not None:  # the list, the kept databases, a safety backup: not tied to the dialog,
            background_tasks.create(self.on_done())  # which the user may close at once

