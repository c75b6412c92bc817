"""Catalogue rebuild on the backup page: a preview of what would be added, completed and marked missing, then
Apply; each runs as a job with its progress (files and bytes read of the total) and Cancel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import background_tasks, run, ui

from ehr_backup.jobs import Job

from .frame import PageSession, guarded, human_size, local_time, tid
from .jobpanel import JobPanel
from .theme import notify

Reload = Callable[[], Awaitable[Any]]
SHOWN = 200  # lines per kind in the dialog: a rebuild of ten thousand backups stays a page, not a flood


def rebuild_button(ps: PageSession, state: dict[str, Any], reload: Reload) -> None:
    """The button that opens the rebuild dialog."""
    tid(ui.button("Rebuild catalogue…", icon="manage_search",
                  on_click=lambda: RebuildDialog(ps, reload, state["dialogs"]).open()).props("flat"), "rebuild-open")


class RebuildDialog:
    """Preview the rebuild (nothing written), then apply it; each runs as a job with progress and Cancel."""

    def __init__(self, ps: PageSession, reload: Reload, host: ui.element) -> None:
        self.ps = ps
        self.reload = reload
        self.paths: list[str] | None = None  # the folders the shown preview read; None: no preview shown
        self.panel: JobPanel | None = None  # the running (or last) rebuild's progress card
        self.client = ui.context.client
        with host, ui.dialog() as self.dialog, tid(ui.card().classes("w-[56rem] max-w-full"), "rebuild-dialog"):
            self.dialog.on_value_change(lambda e: None if e.value else self.dialog.delete())
            ui.label("Rebuild the catalogue from the backup files").classes("text-lg font-bold")
            ui.label("Every backup file in the locations is read and authenticated with the key (every byte, so "
                     "this takes as long as reading them all; it runs on the server, and Cancel stops it at "
                     "the next read). Backups the catalogue lacks are added with what their authenticated header "
                     "and trailer record; rows it has are completed, never duplicated; rows whose file is gone "
                     "are marked missing, not deleted. Files that do not authenticate are listed and never "
                     "recorded.").classes("text-sm")
            self.folder = tid(ui.input("Also read this custom folder (optional, absolute path)",
                                       on_change=self._changed).classes("w-full"), "rebuild-path")
            self.progress = ui.column().classes("w-full")
            self.summary = tid(ui.label("Preview to see what a rebuild changes."), "rebuild-summary")
            self.listing = ui.column().classes("w-full gap-0 max-h-96 overflow-auto")
            with ui.row():
                ui.button("Close", on_click=self.dialog.close).props("flat")
                self.preview_button = tid(ui.button("Preview", icon="visibility", on_click=guarded(
                    ps, "preview catalogue rebuild")(self.preview)), "rebuild-preview")
                self.apply_button = tid(ui.button("Apply", icon="playlist_add_check",
                                                  on_click=guarded(ps, "rebuild catalogue")(self.apply)),
                                        "rebuild-apply")
                self.apply_button.disable()
            ui.timer(0.5, self._tick)

    def open(self) -> None:
        """Show the dialog, following a rebuild that is running already (started here or elsewhere)."""
        self.dialog.open()
        running = next((j for j in self.ps.ctx.jobs.active() if j.kind == "rebuild"), None)
        if running is not None:
            self._follow(running)

    def _changed(self) -> None:
        self.paths = None
        self.apply_button.disable()
        if self.panel is None or self.panel.reported:
            self.summary.text = "Preview to see what a rebuild changes."
            self.listing.clear()

    def _paths(self) -> list[str]:
        text = (self.folder.value or "").strip()
        return [text] if text else []

    async def preview(self) -> None:
        """A dry run as a job: what would be added, completed and marked missing, and what is refused."""
        await self._start(self._paths(), dry_run=True)

    async def apply(self) -> None:
        """Rebuild for real (the files are read again: the catalogue gets what they hold now)."""
        if self.paths is None:
            return
        self.apply_button.disable()  # one rebuild per preview
        await self._start(self.paths, dry_run=False)

    async def _start(self, paths: list[str], *, dry_run: bool) -> None:
        """Start the job (Busy, with a message, while another rebuild runs) and follow it here."""
        task = await run.io_bound(self.ps.ctx.service.prepare_rebuild, self.ps.actor, paths=paths, dry_run=dry_run)
        if task is None:  # the server is shutting down
            return
        self.paths = paths if dry_run else None  # what Apply reads once this preview is shown
        self._follow(self.ps.ctx.jobs.start(task, self.ps.principal.username))

    def _follow(self, job: Job) -> None:
        if self.panel is not None and self.panel.job is job:
            return
        self.progress.clear()
        with self.progress:
            self.panel = JobPanel(self.ps, job, self._done, "Catalogue rebuild: reading and authenticating every "
                                                            "backup file")
        self.preview_button.disable()
        self.apply_button.disable()
        self.listing.clear()
        self.summary.text = "Reading and authenticating every backup file…"

    def _tick(self) -> None:
        if self.panel is not None:
            self.panel.update()

    def _done(self, job: Job) -> None:
        """Show how the job ended: the preview or what was applied, or why it stopped."""
        self.preview_button.enable()
        assert self.panel is not None
        if job.status == "cancelled":
            self.paths = None
            self.summary.text = f"Cancelled: {job.error}"
            self.panel.status.text = self.summary.text  # not "nothing was kept": an apply may have made changes
            return
        if job.status != "succeeded":
            self.paths = None
            self.summary.text = f"The rebuild failed: {job.error}"
            return
        result = job.result
        self._render(result)
        if result["dryRun"]:
            changes = len(result["added"]) + len(result["updated"]) + len(result["missing"])
            self.apply_button.set_enabled(changes > 0 and self.paths is not None)
            return
        notify(self.summary.text, type="warning" if result["refused"] else "positive", multi_line=True)
        background_tasks.create(self._reload(), name="reload after the catalogue rebuild")

    async def _reload(self) -> None:
        if not self.client.is_deleted:  # a page already gone has nothing to refresh
            with self.client:
                await self.reload()

    def _render(self, r: dict[str, Any]) -> None:
        verb = "would be" if r["dryRun"] else "were"
        self.summary.text = (f"{r['files']} files read: {len(r['added'])} {verb} added, {len(r['updated'])} "
                             f"completed, {len(r['missing'])} marked missing, {len(r['refused'])} refused "
                             f"(not authentic or not the catalogued file), {r['unchanged']} unchanged")
        self.listing.clear()
        with self.listing:
            for a in self._first(r["added"]):
                self._line("add", "teal", a["id"], f"{a['description'] or a['id']} · {a['database']} · "
                           f"{local_time(a['createdAt'])} · {human_size(a['size'])}")
            for u in self._first(r["updated"]):
                self._line("complete", "primary", u["id"], f"{u['id']}: {', '.join(u['changes'])}")
            for m in self._first(r["missing"]):
                self._line("missing", "warning", m, m)
            for f in self._first(r["refused"]):
                self._line("refused", "negative", f["file"], f"{f['file']} in {f['directory']}: {f['reason']}")
            for f in self._first(r["failedVerification"]):
                self._line("failing", "negative", f["id"], f"{f['id']}: catalogued, but its file is not "
                           "good: recorded as failing verification")
            for w in self._first(r["warnings"]):
                self._line("warning", "orange", w["file"], f"{w['file']}: {w['warning']}")
            longest = max(len(r[k]) for k in ("added", "updated", "missing", "refused", "failedVerification",
                                               "warnings"))
            if longest > SHOWN:
                tid(ui.label(f"The first {SHOWN} of each kind are shown; `ehr-backup catalogue rebuild --dry-run "
                             "--json` lists them all.").classes("text-sm italic"), "rebuild-more")

    @staticmethod
    def _first(items: list[Any]) -> list[Any]:
        return items[:SHOWN]

    @staticmethod
    def _line(what: str, color: str, key: str, text: str) -> None:
        with tid(ui.row().classes("w-full items-center gap-3 no-wrap"), f"rebuild-{what}-{key}"):
            ui.badge(what, color=color)
            ui.label(text).classes("text-sm grow break-all")
