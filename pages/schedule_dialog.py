"""The New/Edit schedule dialog: every field of a schedule, a live preview of its times, Save refused in place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from nicegui import run, ui

from ehr_backup.errors import BackupError
from ehr_backup.retention import RetentionPolicy
from ehr_backup.storage import LOCATIONS

from .frame import PageSession, guarded, tid
from .theme import notify

Saved = Callable[[], Awaitable[Any]]
BUCKETS = ("daily", "weekly", "monthly", "yearly")
EXAMPLE_CRON = "30 2 * * *"  # the example description needs a fire time even while the expression is unfinished


def zoned(iso: str, timezone: str | None) -> str:
    """A fire time in the schedule's own zone, as people read it."""
    when = datetime.fromisoformat(iso)
    try:
        when = when.astimezone(ZoneInfo(timezone)) if timezone else when
    except (KeyError, ValueError, OSError):  # an unknown zone name: keep the offset the time came with
        pass
    return when.strftime("%a %Y-%m-%d %H:%M %Z")


def _whole(value: Any) -> Any:
    """A number field's float as an int when it is whole; anything else as it is, for the service to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class ScheduleDialog:
    """Create a schedule (schedule=None) or edit one; the preview follows every keystroke."""

    def __init__(self, ps: PageSession, host: ui.element, saved: Saved, schedule: dict[str, Any] | None = None) -> None:
        self.ps = ps
        self.saved = saved
        self.editing = schedule
        s = schedule or {}
        self.asked = 0  # previews answer out of order: only the newest asked is shown
        policy = s.get("policy") if schedule else RetentionPolicy().as_dict()
        defaults = RetentionPolicy()
        settings = ps.ctx.service.settings
        with host, ui.dialog() as self.dialog, tid(ui.card().classes("w-[48rem] max-w-full"), "schedule-dialog"):
            self.dialog.on_value_change(lambda e: None if e.value else self.dialog.delete())  # fresh each opening
            ui.label(f"Edit schedule {schedule['name']}" if schedule else "New schedule").classes("text-lg font-bold")
            with ui.row().classes("w-full items-end gap-3"):
                self.name = tid(ui.input("Name", value=s.get("name", ""), placeholder="nightly").classes("w-48"),
                                "schedule-name")
                if schedule:
                    self.name.disable()  # the name identifies its runs and the backups it made
                self.kind = tid(ui.select({"backup": "Make a backup", "verify": "Re-verify backups",
                                           "drill": "Restore drill"},
                                          value=s.get("kind", "backup"), label="What").classes("w-48"),
                                "schedule-kind")
                self.enabled = tid(ui.switch("Enabled", value=s.get("enabled", True)), "schedule-enabled")
            with ui.row().classes("w-full items-end gap-3"):
                self.cron = tid(ui.input("Cron: minute hour day month weekday", value=s.get("cron", ""),
                                         placeholder="30 2 * * *", on_change=self.refresh)
                                .props("debounce=250").classes("w-80 font-mono"), "schedule-cron")
                self.zone = tid(ui.input("Time zone", value=s.get("timezone") or "", placeholder="Europe/Berlin",
                                         on_change=self.refresh).props("debounce=250").classes("w-56"),
                                "schedule-timezone")
            with tid(ui.column().classes("w-full gap-0 bg-grey-2 rounded p-3"), "schedule-preview"):
                self.reading = tid(ui.label().classes("font-bold"), "schedule-reading")
                self.cron_error = tid(ui.label().classes("text-negative"), "schedule-preview-error")
                self.runs = tid(ui.column().classes("gap-0 text-sm"), "schedule-next-runs")
            with ui.column().classes("w-full gap-2") as backup_only:
                with ui.row().classes("w-full items-end gap-3"):
                    current = s.get("database", "default")  # the database profile it backs up
                    self.database = tid(ui.select({current: current}, value=current, label="Database")
                                        .classes("w-40"), "schedule-database")
                    self.location = tid(ui.select(dict(LOCATIONS), value=s.get("location", "default"),
                                                  label="Location").classes("w-40"), "schedule-location")
                    self.custom_path = tid(ui.input("Folder (absolute path)", value=s.get("customPath") or "")
                                           .classes("w-96"), "schedule-custom-path")
                    self.custom_path.bind_visibility_from(self.location, "value", value="custom")
                    self.compression = tid(ui.select({"default": f"Configured ({settings.compression})",
                                                      "gzip": "gzip (smallest)", "zstd": "zstd (fastest)"},
                                                     value=s.get("compression") or "default", label="Compression")
                                           .classes("w-44"), "schedule-compression")
                self.description = tid(ui.input("Description of each backup",
                                                 value=s.get("description", "Scheduled {date}"),
                                                 on_change=self.refresh).props("debounce=250").classes("w-full"),
                                       "schedule-description")
                ui.label("Placeholders: {date} {time} {datetime} {weekday} {schedule} {database}") \
                    .classes("text-xs text-grey-8")
                self.example = tid(ui.label().classes("text-sm"), "schedule-example")
                with ui.row().classes("w-full items-end gap-3"):
                    self.rotate = tid(ui.checkbox("Rotate after each run", value=policy is not None),
                                      "schedule-rotate")
                    self.counts = {kind: tid(ui.number(kind.capitalize(), min=0, max=10_000, step=1, precision=0,
                                                       value=(policy or {}).get(kind, getattr(defaults, kind)))
                                             .classes("w-24"), f"schedule-policy-{kind}") for kind in BUCKETS}
                    self.within = tid(ui.number("Keep all of the last … days", min=1, step=1, precision=0,
                                                value=(policy or {}).get("keepWithinDays")).classes("w-52"),
                                      "schedule-policy-within")
                    for field in (*self.counts.values(), self.within):
                        field.bind_enabled_from(self.rotate, "value")
                ui.label("No rotation: every backup this schedule makes stays until deleted.") \
                    .classes("text-xs text-grey-8").bind_visibility_from(self.rotate, "value", backward=lambda v: not v)
            backup_only.bind_visibility_from(self.kind, "value", value="backup")
            with ui.row().classes("w-full items-end gap-3"):
                self.retries = tid(ui.number("Retries after a failure", value=s.get("retries", 2), min=0, max=10,
                                             step=1, precision=0).classes("w-44"), "schedule-retries")
                self.delay = tid(ui.number("Retry delay (seconds)", value=s.get("retryDelaySeconds", 600), min=10,
                                           max=86_400, step=10, precision=0).classes("w-44"), "schedule-retry-delay")
            self.error = tid(ui.label().classes("text-negative break-all"), "schedule-error")
            with ui.row():
                ui.button("Cancel", on_click=self.dialog.close).props("flat")
                tid(ui.button("Save", icon="save", on_click=guarded(ps, "save schedule")(self.save)), "schedule-save")

    async def open(self) -> None:
        """Show the dialog with its preview (a new schedule's time zone starts as the server's)."""
        self.dialog.open()
        names = await run.io_bound(lambda: ["default", *(p.name for p in self.ps.ctx.service.profiles.all())])
        if names is not None:
            self.database.set_options(list(dict.fromkeys([*names, self.database.value])), value=self.database.value)
        await self.refresh()

    async def refresh(self) -> None:
        """Preview the expression, zone and template being typed: reading, next five runs, example."""
        self.asked += 1
        asked = self.asked
        if not await self.ps.check("preview schedule"):
            return
        service = self.ps.ctx.service
        expression, zone = (self.cron.value or "").strip(), (self.zone.value or "").strip() or None
        reading: dict[str, Any] | None = None
        problem = ""
        try:
            reading = await run.io_bound(service.schedule_preview, expression or EXAMPLE_CRON, zone)
        except BackupError as exc:
            problem = exc.message
        try:
            example = await run.io_bound(service.schedule_preview, EXAMPLE_CRON if problem or not expression
                                         else expression, None if problem else zone, self.description.value or "")
            said = f"Example: {example['exampleDescription']}" if example else ""
            example_failed = False
        except BackupError as exc:
            said, example_failed = exc.message, True
        if asked != self.asked or self.dialog.is_deleted:  # typed on, or closed meanwhile
            return
        if reading and not self.zone.value:
            self.zone.value = reading["timezone"]  # the server's zone, said rather than implied
            return  # setting it previews again
        self.example.text = said
        self.example.classes(replace="text-sm " + ("text-negative" if example_failed else "text-grey-8"))
        self.cron_error.text = problem
        self.runs.clear()
        if reading is None or not expression:
            self.reading.text = "" if reading is None else "Type a cron expression, e.g. 30 2 * * * for 02:30 daily"
            return
        self.reading.text = f"{reading['reading']} ({reading['timezone']})"
        with self.runs:
            ui.label("Next runs:").classes("text-grey-8")
            for n, iso in enumerate(reading["nextRuns"]):
                tid(ui.label(zoned(iso, reading["timezone"])), f"schedule-next-run-{n}")

    def fields(self) -> dict[str, Any]:
        """The schedule's fields as the service takes them."""
        policy = None
        if self.rotate.value:
            policy = {kind: _whole(field.value) for kind, field in self.counts.items()}
            policy["keepWithinDays"] = _whole(self.within.value) if self.within.value else None
        return {"kind": self.kind.value, "cron": self.cron.value or "", "timezone": (self.zone.value or "").strip()
                or None, "location": self.location.value, "custom_path": (self.custom_path.value or "").strip() or None,
                "compression": None if self.compression.value == "default" else self.compression.value,
                "description": self.description.value or "", "policy": policy, "enabled": bool(self.enabled.value),
                "retries": _whole(self.retries.value), "retry_delay_s": _whole(self.delay.value),
                "database": self.database.value if self.kind.value == "backup" else None}

    async def save(self) -> None:
        """Create or change the schedule; a refusal stays in the dialog, where it can be fixed."""
        service = self.ps.ctx.service
        self.error.text = ""
        try:
            if self.editing:
                done = await run.io_bound(service.schedule_update, self.ps.actor, self.editing["name"],
                                          **self.fields())
            else:
                done = await run.io_bound(service.schedule_create, self.ps.actor, (self.name.value or "").strip(),
                                          **self.fields())
        except BackupError as exc:
            self.error.text = exc.message
            return
        if done is None:
            return
        notify(f"Schedule {done['name']} saved: {done['reading']}", type="positive")
        await self.saved()
        self.dialog.close()  # last: a closed dialog is deleted, and with it this handler's context
