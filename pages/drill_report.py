"""/admin/backup/drill/{id}: a restore drill's evidence report, with PDF and JSON downloads; and the
Drill action of the backup list (runs the drill as a job, then links here)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from nicegui import run, ui

from ehr_backup.errors import BackupError
from ehr_backup.jobs import Job
from ehr_backup.web import WebContext

from .frame import PageSession, admin_page, guarded, local_time, tid
from .jobpanel import drill_found
from .theme import page_body

API = "/api/admin/backup"
PHASES = ("authenticate", "load", "check")  # the order they run in
# label beside value from a tablet's width up, label above value on a phone; ids and hashes wrap anywhere
FACTS_CSS = """.ehr-facts { display: grid; grid-template-columns: minmax(0, 1fr); gap: 0 1rem; }
.ehr-facts > * { min-width: 0; overflow-wrap: anywhere; }
.ehr-facts > :nth-child(2n) { margin-bottom: .5rem; }
@media (min-width: 640px) { .ehr-facts { grid-template-columns: 14rem minmax(0, 1fr); row-gap: .25rem; }
  .ehr-facts > :nth-child(2n) { margin-bottom: 0; } }"""


def register(ctx: WebContext) -> None:
    """Add /admin/backup/drill/{drill_id} (admins only: the AuthGate guards /admin)."""

    @ui.page("/admin/backup/drill/{drill_id}", title="Restore drill · EHR Backup")
    async def drill_page(request: Request, drill_id: int) -> None:
        ps = admin_page(ctx, request, "Restore drill report")
        ui.add_css(FACTS_CSS)
        with page_body():
            tid(ui.link("Backups", "/admin/backup").classes("ehr-back ehr-link no-underline"), "back-to-backups")
            try:
                drill = await run.io_bound(ctx.service.drill_get, drill_id)
            except BackupError as exc:
                tid(ui.label(exc.message).classes("text-negative"), "drill-missing")
                return
            if drill is None:
                return
            _report(ps, drill)


def _report(ps: PageSession, drill: dict[str, Any]) -> None:
    """Draw a drill's report; every value is set as text."""
    ev = drill.get("evidence") or {}
    outcome = drill["outcome"]
    color = {"passed": "positive", "failed": "negative"}.get(outcome, "info")
    with ui.row().classes("items-center gap-4"):
        ui.label(f"Drill {drill['id']}").classes("text-2xl font-bold")
        tid(ui.badge(outcome.upper(), color=color).classes("text-lg"), "drill-outcome")
    tid(ui.label(drill["message"] or "").classes("ehr-wrap"), "drill-message")
    backup = ev.get("backup") or {}
    server = ev.get("server") or {}
    facts = [("Backup", drill["backupId"]), ("Backup file SHA-256", backup.get("sha256")),
             ("Database", drill["database"]),
             ("Backup made", f"{local_time(backup.get('createdAt'))} by {backup.get('createdBy') or '—'}"),
             ("Drill ran", f"{local_time(drill['startedAt'])} → {local_time(drill['finishedAt'])} by {drill['actor']}"),
             ("Drill server", f"{server.get('display') or drill['server']} (PostgreSQL {server.get('version') or '?'})"),
             ("Backup's server / pg_dump", f"{backup.get('serverVersion') or '?'} / {backup.get('pgDumpVersion') or '?'}"),
             ("App version", (ev.get("app") or {}).get("version")),
             ("Scratch database", f"{drill['scratchDatabase']} ({'dropped' if drill['scratchDropped'] else 'NOT dropped yet'})"),
             ("Recovery time", "—" if drill["recoverySeconds"] is None else f"{drill['recoverySeconds']} s"),
             ("Phases", ", ".join(f"{k} {ev['phases'][k]} s" for k in PHASES if k in (ev.get("phases") or {})) or "—"),
             ("Report SHA-256 (JSON / PDF)", f"{drill['report']['jsonSha256']} / {drill['report']['pdfSha256']}")]
    with tid(ui.element("div").classes("ehr-facts w-full"), "drill-facts"):
        for label, value in facts:
            ui.label(label).classes("font-bold")
            ui.label("—" if value is None else str(value))
    with ui.row().classes("gap-2"):
        for kind, icon in (("pdf", "picture_as_pdf"), ("json", "data_object")):
            @guarded(ps, f"download drill report {drill['id']}")
            async def download(kind: str = kind) -> None:
                ui.download.from_url(f"{API}/drills/{drill['id']}/report.{kind}")

            b = tid(ui.button(f"Download {kind.upper()}", icon=icon, on_click=download).props("outline"),
                    f"drill-download-{kind}")
            if not drill["report"][kind]:
                b.disable()
    tables = ev.get("tables") or {}
    ui.label(f"Tables ({len(tables)}): rows recorded at backup time and rows in the restored copy") \
        .classes("text-lg font-bold")
    with tid(ui.grid(columns="minmax(0, 1fr) auto auto auto").classes("w-full gap-x-4"), "drill-tables"):
        for title in ("Table", "Recorded", "Restored", ""):
            ui.label(title).classes("font-bold")
        for name, t in tables.items():
            ui.label(name).classes("break-all font-mono")
            ui.label("—" if t["expected"] is None else str(t["expected"]))
            ui.label("—" if t["restored"] is None else str(t["restored"]))
            ui.label("ok" if t["ok"] else "DIFFERS").classes("text-positive" if t["ok"] else "text-negative")
    checks = ev.get("checks") or []
    ui.label(f"Checks ({len(checks)})").classes("text-lg font-bold")
    with tid(ui.column().classes("w-full gap-1"), "drill-checks"):
        if not checks:
            ui.label("No check queries are defined (ehr-backup drill check add).").classes("text-sm")
        for c in checks:
            against = "the live database's" if c["compareLive"] else "expected"
            ui.label(f"{c['name']}: {'passed' if c['passed'] else 'FAILED'} — got {c['actual']!r}, {against} "
                     f"{c['expected']!r}" + (f" ({c['error']})" if c.get("error") else "")) \
                .classes("text-positive" if c["passed"] else "text-negative")
            ui.label(c["sql"]).classes("font-mono text-xs break-all")
    for note in ev.get("notes") or []:
        ui.label(f"Note: {note}").classes("text-sm")


def follow_drill(card: ui.element, job: Job) -> None:
    """When the drill job ends, put a link to its report into its job card."""
    def check() -> None:
        if not job.done.is_set():
            return
        timer.deactivate()
        found = drill_found(job)
        if found is None:
            return
        with card:
            tid(ui.link(f"Open the report of drill {found[0]} ({found[1]})", f"/admin/backup/drill/{found[0]}")
                .classes("ehr-link"), "drill-report-link")

    with card:
        timer = ui.timer(0.5, check)
