"""Jobs as the pages show them: this instance's and, on PostgreSQL metadata, those of every other instance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .jobstore import RemoteJob

if TYPE_CHECKING:
    from .jobs import Job, JobManager



def running(jobs: JobManager) -> list[Job | RemoteJob]:
    """Jobs running here (from memory) and on other instances (job_states), oldest first. Reads the database."""
    mine: list[Job | RemoteJob] = list(jobs.active())
    if jobs.store is None:  # SQLite metadata: one instance, nothing to read
        return mine
    return sorted([*mine, *jobs.store.running_elsewhere()], key=lambda j: j.created)


def ended_elsewhere(jobs: JobManager, limit: int) -> list[RemoteJob]:
    """Jobs other instances finished, newest first (none on SQLite metadata). Reads the database."""
    return [] if jobs.store is None else jobs.store.ended_elsewhere(limit)


def recent(local: Sequence[Job], remote: Sequence[RemoteJob], limit: int) -> list[Job | RemoteJob]:
    """ "Recent activity": finished jobs of this instance and of others merged, newest first (pure)."""
    merged: list[Job | RemoteJob] = [*local, *(r for r in remote if r.done.is_set())]
    return sorted(merged, key=lambda j: j.finished or j.created, reverse=True)[:limit]


def instance_of(job: Job | RemoteJob) -> str | None:
    """The instance running a job when it is not this one (host:pid), else None."""
    return job.instance if isinstance(job, RemoteJob) else None
