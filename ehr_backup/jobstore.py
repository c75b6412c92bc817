"""Jobs in the metadata database: any instance reads a job's status and progress and can ask it to stop."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel, and_, col, func, or_, select

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


def as_utc(value: datetime | None) -> datetime | None:
    """A stored time as UTC (SQLite gives it back without a zone)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


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


class StoredProgress:
    """A progress snapshot as another instance last wrote it (read like a running task's Progress)."""

    # what a row written by an older version may lack
    EMPTY: ClassVar[dict[str, Any]] = {"phase": "", "table": None, "bytesRead": 0, "bytesWritten": 0,
                                       "total": None, "elapsed": 0.0, "finished": False}

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = {**self.EMPTY, **data}

    def as_dict(self) -> dict[str, Any]:
        """The snapshot, in the form Progress.as_dict gives."""
        return self.data


@dataclass
class TaskView:
    """What the API and the pages read of a task that runs on another instance."""

    kind: str
    target: str
    backup_id: str | None
    progress: StoredProgress = field(default_factory=lambda: StoredProgress({}))


def seen_status(status: str, updated: datetime | None, owner: str, now: datetime) -> tuple[str, str | None]:
    """A stored job's status as readers see it: a running job whose instance went quiet is lost (pure)."""
    updated = as_utc(updated)
    if status == "running" and updated is not None and now - updated > LOST_AFTER:
        return "lost", (f"the instance running it ({owner}) has written nothing since "
                        f"{updated:%Y-%m-%d %H:%M:%S} UTC: it stopped")
    return status, None


class RemoteJob:
    """A job another instance runs: its last written state; cancel() sets the flag that instance polls.

    It reads like a local Job (status, error, done, task.progress, created, finished), so the pages' job
    cards and "Recent activity" show it the same way; refresh() brings in what its instance wrote since.
    """

    def __init__(self, store: JobStore, row: JobState) -> None:
        self._store = store
        self.id = row.id
        self.kind = row.kind
        self.instance = row.owner  # host:pid of the instance running it, shown on the pages
        self.started_by = row.started_by
        self.task = TaskView(row.kind, row.target, row.backup_id)
        self.done = threading.Event()
        self.refresh(row)

    def refresh(self, row: JobState) -> None:
        """Take in the row as its instance last wrote it."""
        self.row = row
        status, lost = seen_status(row.status, row.updated_at, row.owner, utcnow())
        self.status, self.error = status, lost or row.error
        self.task.backup_id = row.backup_id
        self.task.progress = StoredProgress(json.loads(row.progress or "{}"))
        created, finished = as_utc(row.created_at), as_utc(row.finished_at)
        self.created = created.timestamp() if created else 0.0
        self.finished = finished.timestamp() if finished else None
        if status != "running":
            if self.finished is None:
                updated = as_utc(row.updated_at)
                self.finished = updated.timestamp() if updated else None
            self.done.set()

    def as_dict(self) -> dict[str, Any]:
        """The public JSON form, as the running instance's Job.as_dict gives it."""
        r = self.row
        finished = as_utc(r.finished_at)
        return {"jobId": r.id, "kind": r.kind, "status": self.status, "backupId": r.backup_id, "target": r.target,
                "startedBy": r.started_by, "progress": self.task.progress.as_dict(), "error": self.error,
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

    def running_elsewhere(self, limit: int = 50) -> list[RemoteJob]:
        """Jobs other instances are running now (not lost), oldest first: the pages show them as cards."""
        alive = utcnow() - LOST_AFTER
        with self._db.reading() as s:
            rows = s.exec(select(JobState).where(JobState.status == "running", JobState.owner != OWNER,
                                                 col(JobState.updated_at) >= alive)
                          .order_by(col(JobState.created_at)).limit(limit)).all()
        return [RemoteJob(self, r) for r in rows]

    def ended_elsewhere(self, limit: int = 10) -> list[RemoteJob]:
        """Jobs other instances finished (or lost), newest first: the pages' "Recent activity"."""
        alive = utcnow() - LOST_AFTER
        ended = func.coalesce(JobState.finished_at, JobState.updated_at)
        with self._db.reading() as s:
            rows = s.exec(select(JobState).where(JobState.owner != OWNER, or_(
                col(JobState.finished_at).is_not(None),
                and_(col(JobState.status) == "running", col(JobState.updated_at) < alive)))
                .order_by(ended.desc()).limit(limit)).all()
        return [RemoteJob(self, r) for r in rows]

    def refresh(self, jobs: list[RemoteJob]) -> None:
        """Bring other instances' jobs up to date in one query."""
        if not jobs:
            return
        with self._db.reading() as s:
            rows = {r.id: r for r in s.exec(select(JobState).where(col(JobState.id).in_([j.id for j in jobs])))}
        for job in jobs:
            if job.id in rows:
                job.refresh(rows[job.id])

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
