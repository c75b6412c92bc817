"""Jobs in the metadata database: any instance reads a job's status and progress and can ask it to stop."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel, col, select

if TYPE_CHECKING:
    from .db import Database
    from .jobs import Job

log = logging.getLogger("ehr_backup.jobs")
OWNER = f"{socket.gethostname()}:{os.getpid()}"
PUBLISH_S = 1.0  # progress is written at most this often per job
LOST_AFTER = timedelta(seconds=30)  # a running job whose instance wrote nothing for this long is gone
KEEP_DAYS = 7  # finished jobs' rows are forgotten after this


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobState(SQLModel, table=True):
    """A job as its instance last wrote it (status, progress), and whether someone asked it to stop."""

    __tablename__ = "job_states"

    id: str = Field(primary_key=True)
    kind: str = ""
    status: str = Field(default="running", index=True)
    backup_id: str | None = None
    target: str = ""
    started_by: str = ""
    owner: str = ""  # host:pid of the instance running it
    progress: str = "{}"  # JSON, as Job.as_dict gives it
    error: str | None = None
    error_status: int | None = None
    report: str | None = None  # JSON: a failed restore's table-by-table comparison
    created_at: datetime
    updated_at: datetime = Field(index=True)
    finished_at: datetime | None = None
    cancel_requested: bool = False


@dataclass
class TaskView:
    """What the API reads of a task that runs on another instance."""

    kind: str
    target: str
    backup_id: str | None


class RemoteJob:
    """A job another instance runs: its last written state; cancel() sets the flag that instance polls."""

    def __init__(self, store: JobStore, row: JobState) -> None:
        self._store = store
        self.row = row
        self.id = row.id
        self.kind = row.kind
        self.task = TaskView(row.kind, row.target, row.backup_id)
        self.status = row.status

    def as_dict(self) -> dict[str, Any]:
        """The public JSON form, as the running instance's Job.as_dict gives it."""
        r = self.row
        status, error = r.status, r.error
        updated = r.updated_at
        if status == "running" and updated is not None and utcnow() - updated > LOST_AFTER:
            status, error = "lost", (f"the instance running it ({r.owner}) has written nothing since "
                                     f"{updated:%Y-%m-%d %H:%M:%S} UTC: it stopped")
        finished = r.finished_at
        return {"jobId": r.id, "kind": r.kind, "status": status, "backupId": r.backup_id, "target": r.target,
                "startedBy": r.started_by, "progress": json.loads(r.progress or "{}"), "error": error,
                "finishedAt": finished.isoformat(timespec="seconds").replace("+00:00", "Z") if finished else None,
                "instance": r.owner, **({"report": json.loads(r.report)} if r.report else {})}

    def cancel(self) -> None:
        """Ask the instance running it to stop it (it polls the flag about once a second)."""
        self._store.request_cancel(self.id)


class JobStore:
    """Writes this instance's jobs to the job_states table and polls their cancel flags."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self, job: Job) -> None:
        """Record a new job and keep publishing it until it ends."""
        self._write(job, new=True)
        self._forget_old()
        with self._lock:
            self._jobs[job.id] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="job-publisher", daemon=True)
                self._thread.start()

    def ended(self, job: Job) -> None:
        """Write a finished job's outcome."""
        with self._lock:
            self._jobs.pop(job.id, None)
        try:
            self._write(job)
        except SQLAlchemyError:
            log.warning("the outcome of job %s could not be recorded", job.id, exc_info=True)

    def load(self, job_id: str) -> RemoteJob | None:
        """A job of any instance by id."""
        with self._db.reading() as s:
            row = s.get(JobState, job_id)
        return RemoteJob(self, row) if row is not None else None

    def request_cancel(self, job_id: str) -> None:
        """Set a job's cancel flag."""
        with self._db.writing() as s:
            row = s.get(JobState, job_id)
            if row is not None and row.status == "running":
                row.cancel_requested = True
                s.add(row)

    def _write(self, job: Job, *, new: bool = False) -> None:
        now = utcnow()
        view = job.as_dict()
        with self._db.writing() as s:
            row = None if new else s.get(JobState, job.id)
            if row is None:
                row = JobState(id=job.id, kind=job.kind, backup_id=job.task.backup_id, target=job.task.target,
                               started_by=job.started_by, owner=OWNER, created_at=now, updated_at=now)
            row.status, row.error, row.error_status = job.status, job.error, job.error_status
            row.progress = json.dumps(view["progress"])
            row.backup_id = job.task.backup_id
            row.report = json.dumps(job.error_report) if job.error_report else None
            row.updated_at = now
            if job.done.is_set():
                row.finished_at = now
            s.add(row)

    def _loop(self) -> None:
        """Publish progress and pick up cancel requests about once a second while jobs run here."""
        while True:
            self._wake.wait(PUBLISH_S)
            with self._lock:
                jobs = [j for j in self._jobs.values() if not j.done.is_set()]
                if not jobs and not self._jobs:
                    self._thread = None
                    return
            try:
                with self._db.reading() as s:
                    stop = set(s.exec(select(JobState.id).where(col(JobState.id).in_([j.id for j in jobs]),
                                                                 col(JobState.cancel_requested))).all())
                for job in jobs:
                    if job.id in stop:
                        job.cancel()
                    self._write(job)
            except SQLAlchemyError:
                log.warning("job progress could not be written", exc_info=True)

    def _forget_old(self) -> None:
        """Drop rows of jobs finished more than KEEP_DAYS ago (a few at a time, as jobs start)."""
        cutoff = utcnow() - timedelta(days=KEEP_DAYS)
        with self._db.writing() as s:
            for row in s.exec(select(JobState).where(col(JobState.finished_at) < cutoff).limit(100)).all():
                s.delete(row)
