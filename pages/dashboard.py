"""The dashboard at the top of the backup page: per database, how fresh its last good backup is against its
schedule (green, amber, red), its last verification and drill, open alerts and the next run."""

from __future__ import annotations

from typing import Any

from nicegui import ui

from .frame import PageSession, local_time, tid
from .loading import error_line, read

COLORS = {"green": "positive", "amber": "warning", "red": "negative"}
WORDS = {"green": "Up to date", "amber": "Late", "red": "Overdue"}


def dashboard_card(ps: PageSession) -> Any:
    """A refreshable card; call `.load()` (async) to fetch the overview and redraw."""
    state: dict[str, Any] = {"cards": None, "error": ""}

    @ui.refreshable
    def card() -> None:
        cards = state["cards"]
        with tid(ui.row().classes("w-full gap-4"), "dashboard"):
            if state["error"]:
                error_line(state["error"], "dashboard-error")
                return
            if cards is None:
                ui.label("Loading…").classes("text-sm")
                return
            for item in cards:
                _database(item)

    async def load() -> None:
        cards, error = await read("The overview", ps.ctx.service.dashboard)
        if (cards is not None or error) and (cards, error) != (state["cards"], state["error"]):
            state["cards"], state["error"] = cards, error
            card.refresh()

    card.load = load  # type: ignore[attr-defined]
    return card


def _database(item: dict[str, Any]) -> None:
    name = item["database"]
    status = item["status"]
    with tid(ui.card().classes("min-w-[18rem] grow"), f"dashboard-{name}"):
        with ui.row().classes("items-center gap-2 w-full no-wrap"):
            ui.label(name).classes("text-lg font-bold break-all")
            ui.space()
            tid(ui.badge(WORDS[status], color=COLORS[status]).classes("text-sm"), f"dashboard-status-{name}")
        if item["lastGoodAt"]:
            ui.label(f"Last good backup {_age(item['ageSeconds'])} ago ({local_time(item['lastGoodAt'])}); "
                     f"expected {item['measuredAgainst']}").classes("text-sm")
        else:
            ui.label("No good backup yet").classes("text-sm text-negative")
        verification = item["lastVerification"]
        if verification:
            outcome = "passed" if verification["ok"] else "FAILED"
            tid(ui.label(f"Last verification {outcome}, {local_time(verification['at'])}")
                .classes("text-sm" if verification["ok"] else "text-sm text-negative"), f"dashboard-verify-{name}")
        drill = item["lastDrill"]
        if drill:
            seconds = drill.get("recoverySeconds")
            recovery = f", recovered in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
            tid(ui.label(f"Last restore drill {drill['outcome']}{recovery}, {local_time(drill['at'])}")
                .classes("text-sm" if drill["outcome"] == "passed" else "text-sm text-negative"),
                f"dashboard-drill-{name}")
        else:
            ui.label("No restore drill yet").classes("text-sm text-grey-8")
        if item["nextRun"]:
            ui.label(f"Next scheduled backup {local_time(item['nextRun'])}").classes("text-sm")
        for alert in item["alerts"]:
            with ui.row().classes("items-start gap-1 no-wrap"):  # a Material icon, not the ⚠ glyph
                ui.icon("warning", size="xs").classes("text-negative").props["aria-hidden"] = "true"
                tid(ui.label(alert["message"]).classes("text-sm text-negative break-words"),
                    f"dashboard-alert-{name}")


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 3600:
        return f"{max(seconds, 0) // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
