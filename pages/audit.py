"""/admin/audit: the audit trail with filters, chain check and CSV export."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import Request
from nicegui import run, ui

from ehr_backup.catalogue import as_utc
from ehr_backup.web import WebContext

from .deferred import Deferred
from .frame import admin_page, guarded, tid
from .loading import read
from .theme import badge_slot_html, page_body, section

LIMIT = 1000
ACTIONS = ["", "create", "verify", "restore", "delete", "download", "decrypt", "login", "login.ticket", "logout",
           "access", "user.add", "user.disable", "user.passwd", "user.role", "user.unlock", "token.create",
           "token.revoke", "folder.create", "audit.export", "cancel"]
COLUMNS = (("seq", "#"), ("utc", "Time (UTC)"), ("local", "Time (local)"), ("actor", "User"),
           ("address", "Address"), ("action", "Action"), ("target", "Target"), ("outcome", "Outcome"),
           ("detail", "Detail"))


def parse_day(text: str | None, what: str) -> tuple[date | None, str]:
    """A filter's day from YYYY-MM-DD (empty: no limit); or why the text is not understood."""
    text = (text or "").strip()
    if not text:
        return None, ""
    if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", text):
        try:
            return datetime.strptime(text, "%Y-%m-%d").date(), ""
        except ValueError:
            return None, f"{what}: {text} is not a day of the calendar"
    hint = ""
    if m := re.fullmatch(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})", text):  # 29/11/2026: which is the month?
        hint = f" (for {m[1]} {m[2]} {m[3]} write {m[3]}-{int(m[2]):02d}-{int(m[1]):02d} if {m[2]} is the month)"
    return None, f"{what}: {text} is not understood: write the day as YYYY-MM-DD or pick it{hint}"


def local_equals_utc(stamps: list[datetime]) -> bool:
    """Whether the server's local time is UTC at every one of these moments (then one time column is enough)."""
    return all((s.astimezone().utcoffset() or timedelta(0)) == timedelta(0) for s in stamps)


def _date_input(label: str, testid: str) -> ui.input:
    """A text field for YYYY-MM-DD with a calendar next to it."""
    field = tid(ui.input(label, placeholder="YYYY-MM-DD").classes("w-44"), testid)
    with field.add_slot("append"):
        with ui.button(icon="event").props("flat round dense") as pick:
            pick.props["aria-label"] = f"Pick the day: {label}"  # a value in the props dict, never parsed
            with ui.menu() as menu:
                ui.date(mask="YYYY-MM-DD").bind_value(field).on_value_change(menu.close)
        tid(pick, f"{testid}-pick")
    return field


def register(ctx: WebContext) -> None:
    """Add /admin/audit."""
    audit = ctx.service.audit

    @ui.page("/admin/audit", title="Audit log · EHR Backup")
    async def audit_page(request: Request) -> None:
        ps = admin_page(ctx, request, "Audit log")
        body = Deferred()  # built once the browser connects (pages/deferred.py)
        if not await body.connected():
            return
        state: dict[str, Any] = {"entries": []}

        def days() -> tuple[date | None, date | None] | None:
            since, bad_from = parse_day(date_from.value, "From")
            until, bad_to = parse_day(date_to.value, "To")
            filter_error.text = " · ".join(m for m in (bad_from, bad_to) if m)
            if not filter_error.text and since and until and until < since:
                filter_error.text = "To is before From: no entry can match"
            return None if filter_error.text else (since, until)

        def query(since: date | None, until: date | None, limit: int | None = LIMIT) -> list[Any]:
            start = datetime.combine(since, datetime.min.time()).astimezone(UTC) if since else None
            end = (datetime.combine(until, datetime.min.time()).astimezone() + timedelta(days=1)).astimezone(UTC) \
                if until else None
            return list(audit.entries(actor=actor.value or None, action=action.value or None, since=start,
                                      until=end, limit=limit))

        async def reload() -> None:
            chosen = days()
            if chosen is None:  # said under the filter; the table keeps what it showed
                return
            entries, list_error.text = await read("The audit log", query, *chosen)
            if list_error.text:  # said above the table, which keeps what it showed
                return
            state["entries"] = entries or []
            stamps = [as_utc(e.ts) for e in state["entries"]]
            table.rows = [{
                "seq": e.seq, "utc": ts.strftime("%Y-%m-%d %H:%M:%S UTC"),  # type: ignore[union-attr]
                "local": ts.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),  # type: ignore[union-attr]
                "actor": e.actor, "address": e.address, "action": e.action, "target": e.target,
                "outcome": e.outcome, "detail": e.detail} for e, ts in zip(state["entries"], stamps, strict=True)]
            same = local_equals_utc([s for s in stamps if s is not None])
            table.columns = [c for c in columns if not (same and c["name"] == "local")]
            table.update()

        with page_body():
            with section("Filter", "filter_alt"):
                with ui.row().classes("items-end gap-4 w-full flex-wrap"):
                    actor = tid(ui.input("User").classes("w-40"), "filter-user")
                    action = tid(ui.select(ACTIONS, value="", label="Action").classes("w-40"), "filter-action")
                    date_from = _date_input("From", "filter-from")
                    date_to = _date_input("To", "filter-to")
                    tid(ui.button("Apply", icon="search", on_click=guarded(ps, "audit filter")(reload)),
                        "filter-apply")
                filter_error = tid(ui.label("").classes("text-negative text-sm").props('role="alert"'),
                                   "filter-error")
            with section("Entries", "policy"):
                with ui.row().classes("items-center gap-2 w-full flex-wrap"):
                    ui.label(f"The newest {LIMIT} matching entries are shown; Export CSV writes all of them."
                             ).classes("text-sm ehr-muted")
                    ui.space()

                    @guarded(ps, "audit export")
                    async def export() -> None:
                        chosen = days()
                        if chosen is None:
                            return
                        out = io.StringIO()
                        every = await run.io_bound(query, *chosen, None) or []  # every match, not just those shown
                        await run.io_bound(audit.export_csv, out, list(reversed(every)))
                        await run.io_bound(audit.record, ps.actor, "audit.export", "csv", "ok",
                                           f"{len(every)} entries")
                        ui.download.content(out.getvalue().encode(), "ehr-backup-audit.csv", "text/csv")
                        await reload()  # the export is itself an entry

                    tid(ui.button("Export CSV", icon="download", on_click=export).props("outline no-caps"),
                        "export-csv")

                    @guarded(ps, "audit chain check")
                    async def check_chain() -> None:
                        report = await run.io_bound(ctx.service.verify_audit)
                        if report is None:
                            return
                        chain.text = (f"Chain intact: {report.entries} entries" if report.ok
                                      else f"CHAIN BROKEN: {report.reason}")
                        chain.classes(replace="text-positive" if report.ok else "text-negative")
                        chain_notes.text = " · ".join(report.notes)
                        await reload()

                    tid(ui.button("Check chain", icon="link", on_click=check_chain).props("outline no-caps"),
                        "check-chain")
                chain = tid(ui.label("").props('role="status"'), "chain-result")
                chain_notes = tid(ui.label("").classes("text-sm ehr-muted"), "chain-notes")
                list_error = tid(ui.label("").classes("text-negative text-sm").props('role="alert"'), "audit-error")
                columns = [{"name": k, "label": label, "field": k, "align": "left",
                            "sortable": k in ("seq", "utc")} for k, label in COLUMNS]
                table = tid(ui.table(columns=columns, rows=[], row_key="seq", pagination=50)
                            .classes("w-full").props("dense wrap-cells flat"), "audit-table")
                table.add_slot("body-cell-outcome", badge_slot_html("outcome"))
                table.props["no-data-label"] = "No audit entry matches the filter."
            await reload()
            body.built()
