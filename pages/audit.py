"""/admin/audit: the audit trail with filters, chain check and CSV export."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request
from nicegui import run, ui

from ehr_backup.catalogue import as_utc
from ehr_backup.web import WebContext

from .frame import admin_page, guarded, tid

LIMIT = 1000


def _day(text: str | None) -> datetime | None:
    try:
        return datetime.strptime(text or "", "%Y-%m-%d").astimezone() if text else None
    except ValueError:
        return None


def register(ctx: WebContext) -> None:
    """Add /admin/audit."""
    audit = ctx.service.audit

    @ui.page("/admin/audit", title="Audit log · EHR Backup")
    async def audit_page(request: Request) -> None:
        ps = admin_page(ctx, request, "Audit log")
        state: dict[str, Any] = {"entries": []}

        def query(limit: int | None = LIMIT) -> list[Any]:
            since = _day(date_from.value)
            until = _day(date_to.value)
            return list(audit.entries(actor=actor.value or None, action=action.value or None,
                                      since=since.astimezone(UTC) if since else None,
                                      until=(until + timedelta(days=1)).astimezone(UTC) if until else None,
                                      limit=limit))

        async def reload() -> None:
            state["entries"] = await run.io_bound(query) or []
            table.rows = [{
                "seq": e.seq, "utc": as_utc(e.ts).strftime("%Y-%m-%d %H:%M:%S UTC"),  # type: ignore[union-attr]
                "local": as_utc(e.ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),  # type: ignore[union-attr]
                "actor": e.actor, "address": e.address, "action": e.action, "target": e.target,
                "outcome": e.outcome, "detail": e.detail} for e in state["entries"]]
            table.update()

        with ui.column().classes("p-6 gap-4 w-full"):
            with ui.row().classes("items-end gap-4"):
                actor = tid(ui.input("User"), "filter-user")
                action = tid(ui.select(["", "create", "verify", "restore", "delete", "download", "decrypt",
                                        "login", "login.ticket", "logout", "access", "user.add", "user.disable",
                                        "user.passwd", "user.role", "user.unlock", "token.create", "token.revoke",
                                        "folder.create", "audit.export", "cancel"],
                                       value="", label="Action").classes("w-40"),
                             "filter-action")
                date_from = tid(ui.input("From (YYYY-MM-DD)"), "filter-from")
                date_to = tid(ui.input("To (YYYY-MM-DD)"), "filter-to")
                tid(ui.button("Apply", on_click=guarded(ps, "audit filter")(reload)), "filter-apply")

                @guarded(ps, "audit export")
                async def export() -> None:
                    out = io.StringIO()
                    every = await run.io_bound(query, None) or []  # all matching entries, not just those shown
                    await run.io_bound(audit.export_csv, out, list(reversed(every)))
                    await run.io_bound(audit.record, ps.actor, "audit.export", "csv", "ok", f"{len(every)} entries")
                    ui.download.content(out.getvalue().encode(), "ehr-backup-audit.csv", "text/csv")

                tid(ui.button("Export CSV", icon="download", on_click=export).props("outline"), "export-csv")

                @guarded(ps, "audit chain check")
                async def check_chain() -> None:
                    report = await run.io_bound(ctx.service.verify_audit)
                    if report is None:
                        return
                    chain.text = (f"Chain intact: {report.entries} entries" if report.ok
                                  else f"CHAIN BROKEN: {report.reason}")
                    chain.classes(replace="text-positive" if report.ok else "text-negative")
                    chain_notes.text = " · ".join(report.notes)

                tid(ui.button("Check chain", icon="link", on_click=check_chain).props("outline"), "check-chain")
            chain = tid(ui.label(""), "chain-result")
            chain_notes = tid(ui.label("").classes("text-sm text-grey-8"), "chain-notes")
            columns = [{"name": k, "label": label, "field": k, "align": "left", "sortable": k in ("seq", "utc")}
                       for k, label in (("seq", "#"), ("utc", "Time (UTC)"), ("local", "Time (local)"),
                                        ("actor", "User"), ("address", "Address"), ("action", "Action"),
                                        ("target", "Target"), ("outcome", "Outcome"), ("detail", "Detail"))]
            ui.label(f"The newest {LIMIT} matching entries are shown; Export CSV writes all of them.").classes(
                "text-sm text-grey-8")
            table = tid(ui.table(columns=columns, rows=[], row_key="seq", pagination=50).classes("w-full")
                        .props("dense wrap-cells"), "audit-table")
            await reload()
