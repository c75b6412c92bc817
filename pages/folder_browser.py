"""The server-side folder chooser of custom locations: opens at an allowed folder, marks what cannot be chosen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import run, ui

from ehr_backup.errors import BackupError

from .frame import PageSession, tid
from .theme import notify


class DirectoryBrowser:
    """A folder chooser: navigate, create a folder, choose one that backups may use."""

    def __init__(self, ps: PageSession, on_choose: Callable[[str], Any]) -> None:
        self.ps = ps
        self.on_choose = on_choose
        self.path = ""
        self.parent: str | None = None
        with ui.dialog() as self.dialog, tid(ui.card().classes("w-full max-w-2xl gap-2"), "browser"):
            with ui.row().classes("items-center gap-2 no-wrap"):
                ui.icon("folder_open").classes("text-primary text-2xl")
                ui.label("Choose a folder").classes("ehr-section-title")
            self.note = tid(ui.label("").classes("text-sm ehr-muted"), "browse-note")
            with ui.row().classes("items-center gap-2 no-wrap w-full"):
                tid(ui.button(icon="arrow_upward", on_click=self.up)
                    .props('flat round dense aria-label="Up to the parent folder"'), "browse-up")
                self.current = tid(ui.label().classes("font-mono ehr-wrap"), "browse-path")
            self.reason = tid(ui.label().classes("text-negative text-sm ehr-wrap").props('role="status"'),
                              "browse-reason")
            self.listing = ui.column().classes("gap-0 max-h-80 overflow-auto w-full")
            with ui.row().classes("items-end gap-2 w-full flex-wrap"):
                self.new_name = tid(ui.input("New folder name").classes("grow"), "new-folder-name")
                tid(ui.button("Create folder", icon="create_new_folder", on_click=self.make)
                    .props("outline no-caps"), "new-folder")
            with ui.row().classes("gap-2 justify-end w-full"):
                ui.button("Close", on_click=self.dialog.close).props("flat")
                self.choose_button = tid(ui.button("Choose this folder", icon="check", on_click=self.choose),
                                         "browse-choose")

    async def open_at(self, path: str | None) -> None:
        """Open the dialog at a folder; one backups may not use opens the first allowed folder instead."""
        self.note.text = ""
        if not await self.show(path or None, quiet=bool(path)) and path:
            why = self.note.text
            if await self.show(None):
                self.note.text = f"Showing the first allowed folder instead of {path}: {why}"
        self.dialog.open()

    async def show(self, path: str | None, *, quiet: bool = False) -> bool:
        """List a folder; whether it could be listed."""
        if not await self.ps.check("browse folders"):
            return False
        try:
            data = await run.io_bound(self.ps.ctx.service.browse, path)
        except BackupError as exc:
            if quiet:
                self.note.text = exc.message
            else:
                notify(exc.message, type="negative")
            return False
        if data is None:
            return False
        self.path, self.parent = data["path"], data["parent"]
        self.current.text = self.path
        self.reason.text = "" if data["allowed"] else f"Backups cannot go here: {data['reason']}"
        self.choose_button.set_enabled(bool(data["allowed"]))
        unusable = {e["name"]: e["reason"] for e in data.get("entries", []) if not e["allowed"]}
        self.listing.clear()
        with self.listing:
            if not data["dirs"]:
                ui.label("No sub-folders.").classes("text-sm ehr-muted")
            for name in data["dirs"]:
                self._entry(name, unusable.get(name))
        return True

    def _entry(self, name: str, reason: str | None) -> None:
        """One sub-folder: open it; one whose name a location may not hold is marked, with the reason."""
        target = f"{self.path.rstrip('/')}/{name}"
        with ui.row().classes("items-center gap-2 no-wrap w-full"):
            tid(ui.button(name, icon="folder_off" if reason else "folder",
                          on_click=lambda t=target: self.show(t))
                .props("flat no-caps align=left").classes("grow ehr-wrap"), f"dir-{name}")
            if reason:  # listed, but its name cannot be part of a backup location
                tid(ui.label(f"{name} cannot be chosen: {reason}").classes("text-xs ehr-muted ehr-wrap"),
                    "unusable-dir")

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
            notify(exc.message, type="negative")
            return
        self.new_name.value = ""
        await self.show(made)

    def choose(self) -> None:
        """Use the current folder as the custom location."""
        self.on_choose(self.path)
        self.dialog.close()
