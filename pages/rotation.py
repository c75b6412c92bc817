"""Rotation on the backup page: the rule that keeps each backup, the pin toggle, and a preview before applying."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import run, ui

from ehr_backup.retention import RetentionPolicy
from ehr_backup.storage import LOCATIONS

from .frame import PageSession, guarded, tid
from .rotation_preview import Preview
from .theme import notify

Reload = Callable[[], Awaitable[Any]]
# the rules as people read them
LABELS = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "yearly": "yearly", "within": "recent",
          "newest-good": "newest good", "pinned": "pinned", "safety-age": "safety backup", "not-ours": "not made here",
          "unverified": "not verified yet", "verify-failed": "failed verification", "missing": "file missing",
          "running": "running", "hold": "held: latest backup failed"}
PINNABLE = ("completed", "discovered", "missing")


def words(reasons: list[str]) -> str:
    """Rule codes as words."""
    return ", ".join(LABELS.get(r, r) for r in reasons)


def rotation_cell(ps: PageSession, row: dict[str, Any], reload: Reload, host: ui.element) -> None:
    """One backup's Rotation column: what keeps it (or that the next rotation removes it) and the pin toggle."""
    bid = row["id"]
    kept = row.get("keptBy") or []
    with ui.column().classes("gap-0"):
        with ui.row().classes("gap-1 items-center no-wrap"):
            tid(ui.badge(f"kept: {words(kept)}" if kept else "next rotation removes it",
                         color="teal" if kept else "orange"), f"kept-{bid}")
            pin = tid(ui.button(icon="push_pin", on_click=lambda: _pin_dialog(ps, row, reload, host))
                      .props("flat dense round").tooltip("Unpin" if row["pinned"] else "Pin: keep it whatever "
                                                         "rotation says (e.g. a legal hold)"), f"pin-{bid}")
            pin.props("color=primary" if row["pinned"] else "color=grey")
            if row["status"] not in PINNABLE:
                pin.disable()
        if row["pinned"]:
            tid(ui.label(f"Pinned: {row['pinReason'] or ''}").classes("text-xs break-all"), f"pin-reason-{bid}")


def _pin_dialog(ps: PageSession, row: dict[str, Any], reload: Reload, host: ui.element) -> None:
    bid = row["id"]
    with host, ui.dialog() as dialog, tid(ui.card().classes("w-[32rem]"), "pin-dialog"):
        _gone_when_closed(dialog)
        if row["pinned"]:
            ui.label("Unpin this backup?").classes("text-lg font-bold")
            ui.label(f"It was pinned: {row['pinReason'] or ''}").classes("break-all")
            ui.label("Rotation may remove it again.")
        else:
            ui.label("Pin this backup").classes("text-lg font-bold")
            ui.label("Rotation and Delete leave a pinned backup alone until it is unpinned. The reason is "
                     "recorded in the audit log.")
            reason = tid(ui.input("Why (e.g. legal hold, case 2026-114)",
                                  validation={"At most 500 characters": lambda v: len(v or "") <= 500})
                         .classes("w-full"), "pin-reason")
        ui.label(row["description"] or bid).classes("text-sm text-grey-8 break-all")

        @guarded(ps, ("unpin " if row["pinned"] else "pin ") + bid)
        async def go() -> None:
            if row["pinned"]:
                done = await run.io_bound(ps.ctx.service.unpin, ps.actor, bid)
            else:
                done = await run.io_bound(ps.ctx.service.pin, ps.actor, bid, reason.value or "")
            if done is None:
                return
            notify("Backup pinned" if done["pinned"] else "Backup unpinned", type="positive")
            await reload()
            dialog.close()  # last: a closed dialog is deleted, and with it this handler's context

        with ui.row():
            ui.button("Cancel", on_click=dialog.close).props("flat")
            button = tid(ui.button("Unpin" if row["pinned"] else "Pin", on_click=go), "pin-confirm")
            if not row["pinned"]:
                button.bind_enabled_from(reason, "value", backward=lambda v: bool((v or "").strip()))
    dialog.open()


def _gone_when_closed(dialog: ui.dialog) -> None:
    """Remove a dialog once it is closed (each opening builds a fresh one)."""
    dialog.on_value_change(lambda e: None if e.value else dialog.delete())


def rotation_button(ps: PageSession, state: dict[str, Any], reload: Reload) -> None:
    """The button that opens the rotation preview."""
    tid(ui.button("Rotation…", icon="auto_delete",
                  on_click=lambda: RotationDialog(ps, reload, state["dialogs"], state["rows"]).open())
        .props("flat"), "rotation-open")


def database_choices(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The rotation dialog's databases: a profile's by its name (rotation takes a profile), shown as
    `database (profile)`; the default profile's by the database's own name, as before."""
    out: dict[str, str] = {}
    for r in rows:
        if not r.get("database"):
            continue
        profile = r.get("profile") or "default"
        if profile == "default":
            out.setdefault(r["database"], r["database"])
        else:
            out.setdefault(profile, f"{r['database']} ({profile})")
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


class RotationDialog:
    """Edit the policy, preview how many backups each rule keeps and what goes (a page at a time), then apply."""

    def __init__(self, ps: PageSession, reload: Reload, host: ui.element, rows: list[dict[str, Any]]) -> None:
        self.ps = ps
        self.reload = reload
        self.preview: dict[str, Any] | None = None
        databases = database_choices(rows)
        defaults = RetentionPolicy()
        with host, ui.dialog() as self.dialog, tid(ui.card().classes("w-[56rem] max-w-full"), "rotation-dialog"):
            _gone_when_closed(self.dialog)
            ui.label("Rotate backups (grandfather-father-son)").classes("text-lg font-bold")
            ui.label("Keeps the newest backup of each of the last N days, ISO weeks, months and years that have a "
                     "backup proven good by verification, per database and location. Pinned backups, the newest "
                     "verified one, unverified ones and files this catalogue did not make always stay, and while "
                     "a database's latest backup failed nothing of it is deleted. Safety backups are kept "
                     f"{ps.ctx.service.settings.safety_keep_days} days.").classes("text-sm")
            with ui.row().classes("w-full items-end gap-3"):
                self.counts = {kind: tid(ui.number(kind.capitalize(), value=getattr(defaults, kind), min=0,
                                                   max=10_000, step=1, precision=0,
                                                   on_change=self._changed).classes("w-24"), f"rotation-{kind}")
                               for kind in ("daily", "weekly", "monthly", "yearly")}
                self.within = tid(ui.number("Keep all of the last … days", min=1, step=1, precision=0,
                                            on_change=self._changed).classes("w-52"), "rotation-within")
                self.zone = tid(ui.input("Time zone (blank: the server's)", on_change=self._changed)
                                .classes("w-56"), "rotation-timezone")
            with ui.row().classes("w-full items-end gap-3"):
                self.location = tid(ui.select({"all": "All locations", **LOCATIONS}, value="all", label="Location",
                                              on_change=self._changed).classes("w-44"), "rotation-location")
                self.database = tid(ui.select({"all": "All databases", **databases}, value="all",
                                              label="Database", on_change=self._changed).classes("w-56"),
                                    "rotation-database")
                self.discovered = tid(ui.checkbox("Include verified files found on disk",
                                                  on_change=self._changed), "rotation-discovered")
            self.summary = tid(ui.label(), "rotation-summary")
            self.listing = Preview(ps, LABELS)
            self.result = tid(ui.label().classes("font-bold"), "rotation-result")
            with ui.row():
                ui.button("Close", on_click=self.dialog.close).props("flat")
                tid(ui.button("Preview", icon="visibility", on_click=guarded(ps, "preview rotation")(self.show)),
                    "rotation-preview")
                self.apply_button = tid(ui.button("Delete what the preview shows", icon="delete_sweep",
                                                  on_click=guarded(ps, "apply rotation")(self.apply))
                                        .props("color=negative"), "rotation-apply")
                self.apply_button.disable()

    def open(self) -> None:
        """Show the dialog."""
        self.dialog.open()

    def _changed(self) -> None:
        """A changed policy or filter makes the shown preview stale: preview again before applying."""
        self.preview = None
        self.apply_button.disable()
        self.summary.text = "Preview to see what this policy keeps."
        self.listing.clear()

    def _options(self) -> dict[str, Any]:
        policy = RetentionPolicy(**{kind: int(field.value or 0) for kind, field in self.counts.items()},
                                 keep_within_days=int(self.within.value) if self.within.value else None,
                                 timezone=(self.zone.value or "").strip() or None)
        return {"policy": policy, "location": None if self.location.value == "all" else self.location.value,
                "database": None if self.database.value == "all" else self.database.value,
                "include_discovered": bool(self.discovered.value)}

    async def show(self) -> None:
        """Preview: the backups each rule keeps, counted, and those that go, listed a page at a time."""
        options = self._options()
        preview = await run.io_bound(self.ps.ctx.service.prune, self.ps.actor, dry_run=True, **options)
        if preview is None:
            return
        self.preview, self.options = preview, options
        self.result.text = ""
        self.summary.text = (f"{len(preview['keep']):,} kept, {len(preview['forget']):,} to delete (policy "
                             f"{preview['policy']['daily']} daily, {preview['policy']['weekly']} weekly, "
                             f"{preview['policy']['monthly']} monthly, {preview['policy']['yearly']} yearly; "
                             f"time zone {preview['timezone']})")
        going = len(preview["forget"])
        self.apply_button.set_enabled(going > 0)
        self.apply_button.text = f"Delete {going} backup{'s' if going != 1 else ''}"
        await self.listing.show(preview)

    async def apply(self) -> None:
        """Delete what the shown preview lists as going (and only that), then show what happened."""
        if self.preview is None:
            return
        shown = [f["id"] for f in self.preview["forget"]]
        done = await run.io_bound(self.ps.ctx.service.prune, self.ps.actor, dry_run=False, expect=shown,
                                  **self.options)
        if done is None:
            return
        self.preview = None
        self.apply_button.disable()
        self.listing.clear()  # what it listed is gone now; the result says what happened
        skipped = "; ".join(f"{n} {why}" for why, n in Counter(s["reason"] for s in done["skipped"]).items())
        self.result.text = (f"Deleted {len(done['deleted'])} backup{'s' if len(done['deleted']) != 1 else ''}"
                            + (f"; kept after all: {skipped}" if skipped else "")
                            + (f"; removed {done['removedTemporaryFiles']} temporary files"
                               if done["removedTemporaryFiles"] else ""))
        notify(self.result.text, type="positive" if not skipped else "warning", multi_line=True)
        await self.reload()
