"""A card following one job's live progress, with Cancel while it runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import run, ui

from ehr_backup.jobs import Job

from .frame import PageSession, human_size, tid


class JobPanel:
    """A card showing one job's live progress, with a Cancel button while it runs."""

    def __init__(self, ps: PageSession, job: Job, on_done: Callable[[Job], Any]) -> None:
        self.ps = ps
        self.job = job
        self.on_done = on_done
        self.reported = False
        with tid(ui.card().classes("w-full"), f"job-{job.kind}") as self.card:
            with ui.row().classes("items-center w-full"):
                ui.label(f"{job.kind.capitalize()}: {job.task.target}").classes("font-bold")
                ui.space()
                self.cancel = tid(ui.button("Cancel", on_click=self._cancel).props("outline color=negative"),
                                  "cancel-job")
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
        self.job.cancel()
        self.cancel.disable()
        ui.notify("Cancelling…")

    def update(self) -> None:
        """Refresh from the job's progress."""
        p = self.job.task.progress.as_dict()
        self.phase.text = f"Phase: {p['phase']}" + (f" — table {p['table']}" if p["table"] else "")
        self.detail.text = (f"read {human_size(p['bytesRead'])} · written {human_size(p['bytesWritten'])} · "
                            f"{p['elapsed']:.0f} s elapsed")
        total = p["total"] or 0
        self.bar.value = min(1.0, p["bytesRead"] / total) if total else 0
        if self.job.done.is_set() and not self.reported:
            self.reported = True
            self.cancel.set_visibility(False)
            self.bar.set_visibility(False)
            self.status.text = {"succeeded": "Finished successfully", "cancelled": "Cancelled: nothing was kept",
                                "failed": f"Failed: {self.job.error}"}[self.job.status]
            self.status.classes(replace="text-positive" if self.job.status == "succeeded" else "text-negative")
            self.on_done(self.job)
