"""The storage card: per location used and free space, the fill forecast, and size/duration charts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nicegui import ui

from .frame import PageSession, human_size, local_time, tid
from .loading import error_line, read


def storage_card(ps: PageSession) -> Any:
    """A refreshable card; call `.load()` (async) to fetch the status and redraw."""
    service = ps.ctx.service
    state: dict[str, Any] = {"status": None, "error": ""}

    @ui.refreshable
    def card() -> None:
        status = state["status"]
        with tid(ui.card().classes("w-full"), "storage"):
            ui.label("Storage").classes("text-lg font-bold")
            if state["error"]:
                error_line(state["error"], "storage-error")
                return
            if status is None:
                ui.label("Loading…").classes("text-sm")
                return
            with ui.row().classes("gap-6"):
                for loc in status["locations"]:
                    _location(loc)
            with ui.row().classes("w-full gap-4"):
                if status["databases"]:
                    _sizes_chart(status["databases"])
                history = [loc for loc in status["locations"] if len(loc["history"]) > 1]
                if history:
                    _free_chart(history)

    async def load() -> None:
        # a chart's worth of history, not every backup
        state["status"], state["error"] = await read("Storage", service.status, CHART_POINTS)
        card.refresh()

    card.load = load  # type: ignore[attr-defined]
    return card


def _location(loc: dict[str, Any]) -> None:
    with tid(ui.column().classes("gap-0"), f"storage-{loc['key']}"):
        ui.label(loc["key"].capitalize()).classes("font-bold")
        ui.label(loc["path"]).classes("text-xs text-grey-8 break-all")
        ui.label(f"{human_size(loc['freeBytes'])} free · {loc['backups']} backups, "
                 f"{human_size(loc['usedBytes'])}").classes("text-negative" if loc["warnings"] else "")
        if loc["daysToFull"] is not None:
            tid(ui.label(f"full in about {loc['daysToFull']:.0f} days ({local_time(loc['fullAt'])})")
                .classes("text-sm"), f"forecast-{loc['key']}")
        for warning in loc["warnings"]:
            with ui.row().classes("items-start gap-1 no-wrap"):  # a Material icon, not the ⚠ glyph
                ui.icon("warning", size="xs").classes("text-negative").props["aria-hidden"] = "true"
                tid(ui.label(warning).classes("text-negative ehr-wrap"), f"low-space-{loc['key']}")


CHART_POINTS = 400


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _sizes_chart(databases: list[dict[str, Any]]) -> None:
    series = []
    for db in databases:
        history = db["history"]
        series.append({"name": f"{db['database']} size (MB)", "type": "line", "showSymbol": False,
                       "data": [[_ms(h["at"]), round((h["size"] or 0) / 2**20, 1)] for h in history]})
        series.append({"name": f"{db['database']} duration (s)", "type": "line", "yAxisIndex": 1,
                       "showSymbol": False, "data": [[_ms(h["at"]), h["seconds"]] for h in history]})
    tid(ui.echart({"title": {"text": "Backup size and duration", "textStyle": {"fontSize": 13}},
                   "tooltip": {"trigger": "axis"}, "legend": {"bottom": 0, "type": "scroll"},
                   "xAxis": {"type": "time"}, "yAxis": [{"type": "value", "name": "MB"},
                                                         {"type": "value", "name": "s"}],
                   "series": series}).classes("w-full md:w-[48%] h-64"), "chart-sizes")


def _free_chart(locations: list[dict[str, Any]]) -> None:
    series = []
    for loc in locations:
        points = [[_ms(h["at"]), round(h["freeBytes"] / 2**30, 2)] for h in loc["history"]]
        series.append({"name": f"{loc['key']} free (GB)", "type": "line", "showSymbol": False, "data": points})
        if loc["fullAt"]:  # the forecast: from the last sample down to zero
            series.append({"name": f"{loc['key']} forecast", "type": "line", "lineStyle": {"type": "dashed"},
                           "showSymbol": False, "data": [points[-1], [_ms(loc["fullAt"]), 0]]})
    tid(ui.echart({"title": {"text": "Free space and forecast", "textStyle": {"fontSize": 13}},
                   "tooltip": {"trigger": "axis"}, "legend": {"bottom": 0, "type": "scroll"},
                   "xAxis": {"type": "time"}, "yAxis": {"type": "value", "name": "GB"},
                   "series": series}).classes("w-full md:w-[48%] h-64"), "chart-free")
