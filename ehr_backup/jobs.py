"""Background jobs: a prepared task runs on its own thread; pages and the API read its progress."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import BackupError, Cancelled, InvalidInput, NotFound
from .jobstore import JobStore, RemoteJob
from .service import Task

log = logging.getLogger("ehr_backup.jobs")
KEEP = 200
JOB_ID = re.compile(r"[0-9a-f]{16}")  # secrets.token_hex(8)


@dataclass
class Job:
    """One running or finished task."""

    id: str
    task: Task
    started_by: str
    status: str = "running"  # running | succeeded | failed | cancelled
    error: str | None = None
    error_status: int | None = None
    error_report: Any = None  # a failed restore's table-by-table comparison
    result: Any = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def kind(self) -> str:
        """create, verify or restore."""
        return self.task.kind

    def as_dict(self) -> dict[str, Any]:
        """The public JSON form."""
        return {"jobId": self.id, "kind": self.kind, "status": self.status, "backupId": self.task.backup_id,
                "target": self.task.target, "startedBy": self.started_by,
                "progress": self.task.progress.as_dict(), "error": self.error,
                "finishedAt": _iso(self.finished),
                **({"report": self.error_report} if self.error_report else {}),
                **({"result": self.result} if self.status == "succeeded" else {})}

    def cancel(self) -> None:
        """Ask the task to stop; it cleans up and ends as cancelled."""
        self.task.cancel.set()


def _iso(when: float | None) -> str | None:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if when else None


class JobManager:
    """Start tasks on threads and keep the most recent jobs for inspection."""

    def __init__(self, render: Any = None, after: Any = None, store: JobStore | None = None) -> None:
        self._store = store  # PostgreSQL metadata: jobs are written where every instance reads them
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._render = render or (lambda r: r)
        self._after = after  # called with each finished job (the alert check is poked); must not block

    @property
    def store(self) -> JobStore | None:
        """Where jobs are shared with other instances (PostgreSQL metadata), or None."""
        return self._store

    def start(self, task: Task, started_by: str) -> Job:
        """Run a prepared task in the background."""
        job = Job(id=secrets.token_hex(8), task=task, started_by=started_by)
        with self._lock:
            self._jobs[job.id] = job
            if len(self._jobs) > KEEP:
                for old in sorted(self._jobs.values(), key=lambda j: j.created)[:len(self._jobs) - KEEP]:
                    if old.done.is_set():
                        del self._jobs[old.id]
        if self._store is not None:
            self._store.started(job)
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.kind}-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job) -> None:
        try:
            job.result = self._render(job.task.run())
            job.status = "succeeded"
        except Cancelled as exc:
            job.status, job.error, job.error_status = "cancelled", exc.message, exc.status
        except BackupError as exc:
            job.status, job.error, job.error_status = "failed", exc.message, exc.status
            job.error_report = getattr(exc, "report", None)
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            job.status, job.error, job.error_status = "failed", "internal error; see the server log", 500
        finally:
            job.finished = time.time()
            job.task.progress.finish()  # the job's duration is fixed from now on
            job.done.set()
            if self._store is not None:
                self._store.ended(job)
            if self._after is not None:
                try:
                    self._after(job)
                except Exception:  # a hook never changes how the job ended
                    log.warning("after-job hook failed for job %s", job.id, exc_info=True)

    def get(self, job_id: str) -> Job | None:
        """A job by id."""
        with self._lock:
            return self._jobs.get(job_id)

    def find(self, job_id: str) -> Job | RemoteJob:
        """A job by id: InvalidInput for what cannot be a job id, NotFound for one not (or no longer) kept."""
        if not JOB_ID.fullmatch(job_id):
            raise InvalidInput("invalid job id: a job id is 16 hexadecimal characters, as returned when the job "
                               "started")
        found: Job | RemoteJob | None = self.get(job_id)
        if found is None and self._store is not None:  # another instance's job
            found = self._store.load(job_id)
        if found is None:
            raise NotFound("no such job: it never existed here, or finished long ago (the newest "
                           f"{KEEP} are kept until the server restarts)")
        return found

    def active(self) -> list[Job]:
        """Jobs still running, oldest first."""
        with self._lock:
            return sorted((j for j in self._jobs.values() if not j.done.is_set()), key=lambda j: j.created)

    def recent(self, limit: int = 10) -> list[Job]:
        """Finished jobs, newest first (the page's "Recent activity")."""
        with self._lock:
            ended = [j for j in self._jobs.values() if j.done.is_set()]
        return sorted(ended, key=lambda j: j.finished or j.created, reverse=True)[:limit]
