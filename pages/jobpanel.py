"""A card following one job's live progress (Cancel while it runs, Dismiss once ended) and the recent-activity list."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nicegui import run, ui

from ehr_backup.jobs import Job
from ehr_backup.jobs_everywhere import instance_of
from ehr_backup.jobs_everywhere import recent as merged_recent
from ehr_backup.jobstore import RemoteJob

from .frame import PageSession, human_size, tid
from .theme import notify

# what each step of a restore is called on the page (the API names them by their progress phase)
STEP_LABELS = {"authenticating": "Authenticate the backup file", "safety backup": "Safety backup of the database",
               "loading": "Load into a fresh database", "counting rows": "Check row counts against the backup",
               "applying database properties": "Apply the database's settings",
               "swapping": "Swap the restored copy in", "restoring the chosen tables": "Restore the chosen tables"}
# (icon, colour, text classes) per step state; "failed" is the current step of a job that did not succeed
STEP_LOOK = {"done": ("check_circle", "positive", "text-grey-8"), "current": ("arrow_right", "primary", "font-bold"),
             "waiting": ("radio_button_unchecked", "grey", "text-grey-7"), "failed": ("error", "negative",
                                                                                      "font-bold text-negative")}


OUTCOMES = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled", "running": "running"}
RECENT = 10  # lines in "Recent activity"
# how long a finished job's card stays to be read before it folds into "Recent activity" (Dismiss: at once)
COLLAPSE_SECONDS = 8.0


def job_title(kind: str, description: str | None, target: str) -> str:
    """A job card's title: the backup's description when it has one (the file id otherwise)."""
    return f"{kind.capitalize()}: {description or target}"


def activity_line(kind: str, title: str, status: str, elapsed: float) -> dict[str, str]:
    """One line of "Recent activity": kind, what, outcome, duration (pure: tested without a page)."""
    return {"kind": kind.capitalize(), "what": title, "outcome": OUTCOMES.get(status, status),
            "took": f"{elapsed:.1f} s" if elapsed < 60 else f"{elapsed // 60:.0f} min {elapsed % 60:.0f} s"}


def describe(job_status: str, p: dict[str, Any]) -> tuple[str, str]:
    """The phase line and the detail line for a progress snapshot (pure: tested without a page)."""
    running = job_status == "running"
    phase = f"Phase: {p['phase']}" + (f" — table {p['table']}" if running and p["table"] else "")
    if not running:
        return phase, f"took {p['elapsed']:.0f} s"
    counts = [f"file {p['files']} of {p['filesTotal']}"] if p.get("filesTotal") else []  # a catalogue rebuild
    counts += [f"read {human_size(p['bytesRead'])}" + (f" of {human_size(p['total'])}" if "filesTotal" in p
                                                        and p["total"] else "")] if p["bytesRead"] else []
    counts += [f"written {human_size(p['bytesWritten'])}"] if p["bytesWritten"] else []
    return phase, " · ".join([*counts, f"{p['elapsed']:.0f} s elapsed"])


def collapse_due(ended_at: float | None, now: float, after: float | None) -> bool:
    """Whether a job card has shown its ended job long enough to fold into Recent activity (a running one: never)."""
    return after is not None and ended_at is not None and now - ended_at >= after


def drill_found(job: Any) -> tuple[int, str] | None:
    """A drill job's report: its id and outcome (also when the drill failed), else None."""
    if job.kind != "drill" or not job.done.is_set():
        return None
    result = getattr(job, "result", None)  # another instance's job (RemoteJob) carries no result here
    found = result if isinstance(result, dict) else getattr(job, "error_report", None)
    if not isinstance(found, dict) or found.get("id") is None:
        return None
    return int(found["id"]), str(found.get("outcome", "?"))


def step_state(job_status: str, state: str) -> str:
    """A step as shown: a finished job's current step is done (it succeeded) or failed (it did not)."""
    if state == "current" and job_status != "running":
        return "done" if job_status == "succeeded" else "failed"
    return state


class JobPanel:
    """A card showing one job's live progress, with a Cancel button while it runs."""

    def __init__(self, ps: PageSession, job: Job | RemoteJob, on_done: Callable[[Any], Any],
                 title: str | None = None, *, collapse_after: float | None = None) -> None:
        """collapse_after: seconds after the job ended until the card goes by itself (None: it stays)."""
        self.ps = ps
        self.job = job
        self.on_done = on_done
        self.reported = False
        self.collapse_after = collapse_after
        self.ended_at: float | None = None  # time.monotonic() when the card first showed the job ended
        self.step_rows: list[tuple[ui.icon, ui.label]] = []
        with tid(ui.card().classes("w-full"), f"job-{job.kind}") as self.card:
            with ui.row().classes("items-center w-full"):
                tid(ui.label(title or job_title(job.kind, None, job.task.target)).classes("font-bold ehr-wrap"),
                    "job-title")
                if instance := instance_of(job):  # another instance runs it (PostgreSQL metadata)
                    tid(ui.badge(f"on {instance}", color="grey-7").props("outline"), "job-instance") \
                        .tooltip("Runs on another app instance; Cancel asks that instance to stop it")
                ui.space()
                self.cancel = tid(ui.button("Cancel", on_click=self._cancel).props("outline color=negative"),
                                  "cancel-job")
                # once the job has ended the card can go; its line stays in "Recent activity"
                self.dismiss = tid(ui.button(icon="close", on_click=self.card.delete)
                                   .props('flat round dense aria-label="Dismiss"'), "dismiss-job")
                self.dismiss.tooltip("Dismiss (the job stays in Recent activity)")
                self.dismiss.set_visibility(False)
            self.steps = tid(ui.column().classes("gap-0"), "job-steps")
            self.phase = tid(ui.label(), "job-phase")
            self.detail = tid(ui.label().classes("text-sm text-grey-8"), "job-detail")
            self.bar = ui.linear_progress(value=0, show_value=False)
            self.status = tid(ui.label(), "job-status")
        self.update()

    async def _cancel(self) -> None:
        if not await self.ps.check(f"cancel {self.job.kind} {self.job.task.target}"):
            return
        await run.io_bound(self.ps.ctx.service.audit.record, self.ps.actor, "cancel", self.job.task.target, "ok",
                           self.job.kind)
        await run.io_bound(self.job.cancel)  # another instance's job: a flag in the metadata database
        self.cancel.disable()
        notify("Cancelling…")

    def update(self) -> None:
        """Refresh from the job's progress (nothing changes any more once the job has ended and been shown)."""
        if self.reported:
            return
        finished = self.job.done.is_set()
        status = self.job.status if finished else "running"
        p = self.job.task.progress.as_dict()
        self.phase.text, self.detail.text = describe(status, p)
        self._show_steps(status, p.get("steps") or [])
        total = p["total"] or 0
        self.bar.value = min(1.0, p["bytesRead"] / total) if total else 0
        if finished:
            self.reported = True
            self.ended_at = time.monotonic()
            self.cancel.set_visibility(False)
            self.dismiss.set_visibility(True)
            self.bar.set_visibility(False)
            self.phase.set_visibility(not self.step_rows)  # the steps say where it ended
            self.status.text = {"succeeded": "Finished successfully", "cancelled": "Cancelled: nothing was kept",
                                "failed": f"Failed: {self.job.error}",
                                "lost": f"Lost: {self.job.error}"}.get(self.job.status, self.job.status)
            self.status.classes(replace="text-positive" if self.job.status == "succeeded" else "text-negative")
            self.on_done(self.job)

    def collapse_if_due(self, now: float) -> bool:
        """Remove the card once its ended job has been shown long enough; whether the card is gone."""
        if not self.card.is_deleted and collapse_due(self.ended_at, now, self.collapse_after):
            self.card.delete()
        return self.card.is_deleted

    def _show_steps(self, status: str, steps: list[dict[str, str]]) -> None:
        """One line per step of a job of several (a restore): done ticked, the current one highlighted."""
        if not steps:
            return
        if len(self.step_rows) != len(steps):
            self.steps.clear()
            self.step_rows = []
            with self.steps:
                for i, s in enumerate(steps):
                    with ui.row().classes("items-center gap-2 no-wrap"):
                        icon = ui.icon("radio_button_unchecked", size="sm")
                        label = tid(ui.label(STEP_LABELS.get(s["name"], s["name"])), f"job-step-{i}")
                        self.step_rows.append((icon, label))
            self.phase.set_visibility(False)  # the steps replace the phase line
        for (icon, label), s in zip(self.step_rows, steps, strict=True):
            state = step_state(status, s["state"])
            name, colour, classes = STEP_LOOK[state]
            icon.name = name
            icon.props["color"] = colour
            icon.update()
            label.classes(replace=classes)
            label.props["data-state"] = state


class RecentActivity:
    """Finished jobs of this server (and of other instances), one compact line each, newest first (at most RECENT)."""

    def __init__(self, ps: PageSession, title_of: Callable[[Any], str]) -> None:
        self.ps = ps
        self.title_of = title_of
        self.remote: list[RemoteJob] = []  # other instances' finished jobs, as the page last read them
        self.shown: list[tuple[str, str]] = []
        with tid(ui.card().classes("w-full gap-1"), "recent-activity") as self.card:
            ui.label("Recent activity").classes("text-lg font-bold")
            self.lines = ui.column().classes("w-full gap-0")
        self.card.set_visibility(False)  # shown by show(), once the page has its rows

    def show(self) -> None:
        """Draw the list again from the job manager."""
        jobs = merged_recent(self.ps.ctx.jobs.recent(RECENT), self.remote, RECENT)
        self.shown = [(j.id, j.status) for j in jobs]
        self.card.set_visibility(bool(jobs))
        self.lines.clear()
        with self.lines:
            for i, job in enumerate(jobs):
                line = activity_line(job.kind, self.title_of(job), job.status,
                                     job.task.progress.as_dict()["elapsed"])
                with tid(ui.row().classes("items-center gap-3 no-wrap w-full text-sm"), f"recent-{i}"):
                    ui.label(line["kind"]).classes("w-16 text-grey-8")
                    ui.label(line["what"]).classes("ehr-wrap")
                    ui.space()
                    if instance := instance_of(job):
                        tid(ui.label(f"on {instance}").classes("text-grey-7"), f"recent-instance-{i}")
                    outcome = tid(ui.label(line["outcome"]), f"recent-outcome-{i}")
                    outcome.classes({"succeeded": "text-positive", "failed": "text-negative"}.get(job.status,
                                                                                                 "text-grey-8"))
                    ui.label(line["took"]).classes("w-20 text-right text-grey-8")
                # what the folded card said and linked to stays here: why it failed, the drill's report
                if job.status == "failed" and job.error:
                    tid(ui.label(job.error).classes("text-xs text-negative ehr-wrap pl-16"), f"recent-error-{i}")
                if (drill := drill_found(job)) is not None:
                    tid(ui.link(f"Report of drill {drill[0]} ({drill[1]})", f"/admin/backup/drill/{drill[0]}")
                        .classes("text-sm pl-16 ehr-link"), f"recent-drill-{i}")

    def show_remote(self, remote: list[RemoteJob]) -> None:
        """Take in other instances' finished jobs; draw again only when the lines would change."""
        self.remote = remote
        if [(j.id, j.status) for j in merged_recent(self.ps.ctx.jobs.recent(RECENT), remote, RECENT)] != self.shown:
            self.show()
