"""Catalogue rebuild on the backup page: a preview of what would be added, completed and marked missing, then Apply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import run, ui

from .frame import PageSession, guarded, human_size, local_time, tid
from .theme import notify

Reload = Callable[[], Awaitable[Any]]
SHOWN = 200  # lines per kind in the dialog: a rebuild of ten thousand backups stays a page, not a flood


def rebuild_button(ps: PageSession, state: dict[str, Any], reload: Reload) -> None:
    """The button that opens the rebuild dialog."""
    tid(ui.button("Rebuild catalogue…", icon="manage_search",
                  on_click=lambda: RebuildDialog(ps, reload, state["dialogs"]).open()).props("flat"), "rebuild-open")


class RebuildDialog:
    """Preview the rebuild (nothing written), then apply it."""

    def __init__(self, ps: PageSession, reload: Reload, host: ui.element) -> None:
        self.ps = ps
        self.reload = reload
        self.paths: list[str] | None = None  # the folders the shown preview read; None: no preview shown
        with host, ui.dialog() as self.dialog, tid(ui.card().classes("w-[56rem] max-w-full"), "rebuild-dialog"):
            self.dialog.on_value_change(lambda e: None if e.value else self.dialog.delete())
            ui.label("Rebuild the catalogue from the backup files").classes("text-lg font-bold")
            ui.label("Every backup file in the locations is read and authenticated with the key (every byte, so "
                     "this takes as long as reading them all). Backups the catalogue lacks are added with what "
                     "their authenticated header and trailer record; rows it has are completed, never "
                     "duplicated; rows whose file is gone are marked missing, not deleted. Files that do not "
                     "authenticate are listed and never recorded.").classes("text-sm")
            self.folder = tid(ui.input("Also read this custom folder (optional, absolute path)",
                                       on_change=self._changed).classes("w-full"), "rebuild-path")
            self.summary = tid(ui.label("Preview to see what a rebuild changes."), "rebuild-summary")
            self.listing = ui.column().classes("w-full gap-0 max-h-96 overflow-auto")
            with ui.row():
                ui.button("Close", on_click=self.dialog.close).props("flat")
                tid(ui.button("Preview", icon="visibility", on_click=guarded(ps, "preview catalogue rebuild")
                              (self.preview)), "rebuild-preview")
                self.apply_button = tid(ui.button("Apply", icon="playlist_add_check",
                                                  on_click=guarded(ps, "rebuild catalogue")(self.apply)),
                                        "rebuild-apply")
                self.apply_button.disable()

    def open(self) -> None:
        """Show the dialog."""
        self.dialog.open()

    def _changed(self) -> None:
        self.paths = None
        self.apply_button.disable()
        self.summary.text = "Preview to see what a rebuild changes."
        self.listing.clear()

    def _paths(self) -> list[str]:
        text = (self.folder.value or "").strip()
        return [text] if text else []

    async def preview(self) -> None:
        """A dry run: what would be added, completed and marked missing, and what is refused."""
        paths = self._paths()
        self.summary.text = "Reading and authenticating every backup file…"
        result = await run.io_bound(self.ps.ctx.service.rebuild_catalogue, self.ps.actor, paths=paths, dry_run=True)
        if result is None:  # refused (the notification says why)
            self.summary.text = "Preview to see what a rebuild changes."
            return
        self.paths = paths
        self._render(result)
        changes = len(result["added"]) + len(result["updated"]) + len(result["missing"])
        self.apply_button.set_enabled(changes > 0)

    async def apply(self) -> None:
        """Rebuild for real (the files are read again: the catalogue gets what they hold now)."""
        if self.paths is None:
            return
        self.apply_button.disable()  # one rebuild per preview
        self.summary.text = "Rebuilding: reading and authenticating every backup file…"
        result = await run.io_bound(self.ps.ctx.service.rebuild_catalogue, self.ps.actor, paths=self.paths,
                                    dry_run=False)
        if result is None:
            self.summary.text = "The rebuild did not run (see the message); preview again."
            return
        self.paths = None
        self.apply_button.disable()
        self._render(result)
        notify(self.summary.text, type="warning" if result["refused"] else "positive", multi_line=True)
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
