"""The editable parts of /admin/alerts: a channel's on/off switch and recipients, and the thresholds form."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import run, ui

from .frame import PageSession, guarded, local_time, tid
from .profile_thresholds import profile_thresholds_form
from .theme import notify

Reload = Callable[[], Awaitable[None]]


def channel_controls(ps: PageSession, c: dict[str, Any], reload: Reload) -> None:
    """The switch that turns a channel on or off and, for email, its recipients with a Save button."""
    alerts = ps.ctx.service.alerts
    cid = c["id"]

    @guarded(ps, f"switch alert channel {cid}")
    async def switch(event: Any) -> None:
        on = bool(event.value)
        await run.io_bound(alerts.set_enabled, ps.actor, cid, on)
        notify(f"Channel {cid} {'on' if on else 'off: it receives nothing'}", type="positive")

    async def switched(event: Any) -> None:
        await switch(event)
        await reload()  # also puts the switch back when the change was refused

    tid(ui.switch("On", value=bool(c["enabled"]), on_change=switched), f"channel-enabled-{cid}")
    if c["kind"] != "email":
        return
    to = tid(ui.input("Recipients", value=", ".join(c.get("recipients") or [])).classes("w-72"),
             f"channel-recipients-{cid}")

    @guarded(ps, f"change the recipients of alert channel {cid}")
    async def save() -> None:
        await run.io_bound(alerts.set_recipients, ps.actor, cid, to.value or "")
        notify("Recipients saved", type="positive")
        await reload()

    tid(ui.button("Save recipients", on_click=save).props("flat dense"), f"save-recipients-{cid}")


def source_text(t: dict[str, Any]) -> str:
    """Where a threshold's value comes from, for people."""
    if t["source"] == "stored":
        return f"stored by {t['updatedBy']}, {local_time(t['updatedAt'])} (environment: {t['environment']})"
    if t["source"] == "environment":
        return f"from {t['variable']}"
    return f"default ({t['variable']} not set)"


# four columns from a tablet's width up; one under another on a phone (the grid made a 390 px page 702 px wide)
THRESHOLDS_CSS = """.ehr-thresholds { display: grid; grid-template-columns: minmax(0, 1fr); gap: .25rem 1rem;
  align-items: center; }
.ehr-thresholds > * { min-width: 0; overflow-wrap: anywhere; }
@media (min-width: 768px) { .ehr-thresholds { grid-template-columns: minmax(8rem, 16rem) auto minmax(0, 1fr) auto; } }"""


def thresholds_form(ps: PageSession, view: dict[str, Any], extra: list[tuple[str, str]], reload: Reload) -> None:
    """One number per threshold with where it comes from, Save, and a way back to the environment's value."""
    store = ps.ctx.service.alert_thresholds
    inputs: dict[str, Any] = {}
    ui.add_css(THRESHOLDS_CSS)
    with tid(ui.element("div").classes("ehr-thresholds w-full"), "thresholds"):
        for name, t in view.items():
            ui.label(t["label"][0].upper() + t["label"][1:]).classes("text-sm font-bold")
            inputs[name] = tid(ui.number(value=t["value"], min=t["min"], max=t["max"], step=1, format="%d",
                                         suffix=t["unit"]).classes("w-40"), f"threshold-{name}")
            tid(ui.label(source_text(t)).classes("text-sm"), f"threshold-source-{name}")
            if t["source"] == "stored":

                @guarded(ps, f"use the environment's {name} again")
                async def reset(name: str = name) -> None:
                    await run.io_bound(store.update, ps.actor, {name: None})
                    notify(f"{name}: the environment's value holds again", type="positive")
                    await reload()

                tid(ui.button("Use environment", on_click=reset).props("flat dense"), f"threshold-reset-{name}")
            else:
                ui.label("")
        for label, value in extra:
            ui.label(label).classes("text-sm font-bold")
            ui.label(value).classes("text-sm")
            ui.label("")
            ui.label("")

    @guarded(ps, "change the alert thresholds")
    async def save() -> None:
        changes = {name: ("" if field.value is None else field.value) for name, field in inputs.items()
                   if field.value != view[name]["value"]}
        if not changes:
            notify("Nothing changed")
            return
        await run.io_bound(store.update, ps.actor, changes)
        notify("Thresholds saved", type="positive")
        await reload()

    tid(ui.button("Save thresholds", on_click=save), "save-thresholds")
    profile_thresholds_form(ps)  # a database profile may set its own
