"""The alert settings page's per-database part: a database profile's own maximum backup age."""

from __future__ import annotations

from typing import Any

from nicegui import run, ui

from ehr_backup.alerts.profile_thresholds import ProfileThresholds

from .frame import PageSession, guarded, local_time, tid
from .theme import notify


def profile_thresholds_form(ps: PageSession) -> None:
    """Choose a profile; its own value (or the installation's, shown as such), Save, Use installation's."""
    own = ProfileThresholds(ps.ctx.service)
    names = [p.name for p in ps.ctx.service.profiles.all()]
    if not names:
        return  # only DATABASE_URL's database: the thresholds above are its own
    state: dict[str, Any] = {"profile": names[0], "view": {}}
    ui.label("Per database profile").classes("text-md font-bold mt-2")
    chooser = tid(ui.select(names, value=names[0], label="Database profile").classes("w-60"),
                  "profile-threshold-database")

    @ui.refreshable
    def fields() -> None:
        view = state["view"]
        if not view:
            return
        t = view["maxBackupAgeHours"]
        with ui.row().classes("items-center gap-4"):
            ui.label(t["label"][0].upper() + t["label"][1:]).classes("text-sm font-bold")
            number = tid(ui.number(value=t["value"], min=t["min"], max=t["max"], step=1, format="%d",
                                   suffix=t["unit"]).classes("w-40"), "profile-threshold-maxBackupAgeHours")
            source = (f"set for {t['database']} by {t['updatedBy']}, {local_time(t['updatedAt'])} "
                      f"(installation: {t['installation']})" if t["source"] == "profile"
                      else "the installation's value")
            tid(ui.label(source).classes("text-sm"), "profile-threshold-source")

            @guarded(ps, "change a database profile's alert thresholds")
            async def save() -> None:
                value = "" if number.value is None else number.value
                state["view"] = await run.io_bound(own.update, ps.actor, state["profile"], {"maxBackupAgeHours": value})
                notify(f"Thresholds of {state['profile']} saved", type="positive")
                fields.refresh()

            tid(ui.button("Save", on_click=save).props("dense"), "profile-threshold-save")
            if t["source"] == "profile":

                @guarded(ps, "use the installation's thresholds for a database profile again")
                async def reset() -> None:
                    state["view"] = await run.io_bound(own.update, ps.actor, state["profile"],
                                                       {"maxBackupAgeHours": None})
                    notify(f"{state['profile']}: the installation's value holds again", type="positive")
                    fields.refresh()

                tid(ui.button("Use installation's", on_click=reset).props("flat dense"), "profile-threshold-reset")

    @guarded(ps, "show a database profile's alert thresholds")
    async def load(*_: Any) -> None:
        state["profile"] = chooser.value
        state["view"] = await run.io_bound(own.view, chooser.value) if chooser.value else {}
        fields.refresh()

    chooser.on_value_change(load)
    fields()
    ui.timer(0, load, once=True)
