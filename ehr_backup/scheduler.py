"""Running schedules: which run is due (a pure function), claiming it once across processes, running it as
a job attributed to the `scheduler` actor, retrying failures, and rotating after success.

Processes share the metadata database: a due run is claimed inside one write transaction (SQLite's
write lock), so of a web app and a headless scheduler only one takes it. A flock per schedule is held
while a run works: a run still going when the next is due makes that one skipped (and recorded), and a
`running` row whose lock is free belongs to a process that died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from . import cron
from .audit import Actor
from .catalogue import as_utc, utcnow
from .errors import BackupError, Busy, Cancelled
from .locks import DatabaseLock, lock_for
from .models import Schedule, ScheduleRun
from .schedules import policy_of, render, trim_runs

if TYPE_CHECKING:
    from .service import BackupService, Task

log = logging.getLogger("ehr_backup.scheduler")
SCHEDULER = Actor("scheduler")
GRACE = timedelta(minutes=2)  # a run started later than this after its time is a catch-up
OWNER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Due:
    """The run to make now: the newest fire time passed, and how many older ones it stands for."""

    at: datetime  # UTC
    missed: int  # older fire times in the same span that are not run (an outage, or a long run)
    catch_up: bool  # found well after its time: the scheduler was not running then


def due(expression: str, timezone: str, fired_until: datetime, now: datetime, grace: timedelta = GRACE) -> Due | None:
    """The run due at `now` for a schedule whose runs up to `fired_until` were taken, or None."""
    latest, count = cron.latest_due(expression, timezone, fired_until, now)
    if latest is None:
        return None
    return Due(at=latest.astimezone(UTC), missed=count - 1, catch_up=now - latest > grace)


@dataclass
class Started:
    """A run this process took: the task (None when it could not start) and the handle its starter gave."""

    run_id: int
    schedule: str
    task: Task | None
    handle: Any = None


def run_inline(task: Task, started_by: str) -> None:
    """A starter that runs the task on the calling thread (tests, and `schedule run-now` in the CLI)."""
    try:
        task.run()
    except BackupError as exc:
        log.warning("scheduled %s %s: %s", task.kind, task.target, exc.message)


class Scheduler:
    """Take due runs of every enabled schedule and start them; `serve` does so until stopped."""

    def __init__(self, service: BackupService, start: Callable[[Task, str], Any] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.service = service
        self.db = service.db
        self.clock = clock
        self._start = start or run_inline

    def _lock(self, name: str) -> DatabaseLock:
        return lock_for(self.service.settings, self.service.settings.data_dir / "locks" / "jobs",
                        f"schedule:{name}", noun=f"schedule {name}")

    # ----- taking due runs -------------------------------------------------------------------------------
    def tick(self) -> list[Started]:
        """Start every run due now; returns what this process started."""
        now = self.clock()
        started = []
        for sched in self.service.schedules.all():
            if not sched.enabled:
                continue
            try:
                one = self._tick_one(sched.name, now)
            except BackupError as exc:
                log.warning("schedule %s: %s", sched.name, exc.message)
                continue
            except Exception:
                log.warning("schedule %s could not be checked", sched.name, exc_info=True)
                continue
            if one is not None:
                started.append(one)
        return started

    def _tick_one(self, name: str, now: datetime) -> Started | None:
        lock = self._lock(name)
        try:
            lock.acquire(f"a scheduled run of {name}")
            held = True
        except Busy:
            held = False
        claimed: tuple[ScheduleRun, Schedule] | None = None
        notes: list[tuple[str, str]] = []
        try:
            with self.db.writing() as s:
                sched = s.exec(select(Schedule).where(Schedule.name == name)).first()
                if sched is None or not sched.enabled:
                    return None
                runs = list(s.exec(select(ScheduleRun).where(
                    ScheduleRun.schedule == name, col(ScheduleRun.status).in_(("running", "waiting")))
                    .order_by(col(ScheduleRun.id))))
                if held:  # nobody runs this schedule: a `running` row is left by a process that died
                    for run in (r for r in runs if r.status == "running"):
                        message = f"the program stopped before the run finished (it ran in {run.owner})"
                        self._settle(s, run, sched, False, message, now)
                        notes.append(("failed", message))
                going = [r for r in runs if r.status == "running" and not held]
                nxt = due(sched.cron, sched.timezone, as_utc(sched.fired_until) or now, now)
                waiting = [r for r in runs if r.status == "waiting"]
                if nxt is not None:
                    if not held and not going:
                        return None  # another process is taking it this moment
                    sched.fired_until = max(nxt.at, as_utc(sched.fired_until) or nxt.at)
                    s.add(sched)
                    for w in waiting:
                        w.status, w.finished_at = "skipped", now
                        w.message = f"retry not made: the next run (due {nxt.at:%Y-%m-%d %H:%M} UTC) took its place"
                        s.add(w)
                    said = _due_note(nxt, sched.timezone)
                    if not held:
                        message = (f"skipped: the run due {going[0].due_at:%Y-%m-%d %H:%M} UTC was still going"
                                   + (f"; {said}" if said else ""))
                        s.add(ScheduleRun(schedule=name, due_at=nxt.at, trigger="cron", status="skipped",
                                          started_at=now, finished_at=now, message=message))
                        trim_runs(s, name)
                        notes.append(("skipped", message))
                        return None
                    run = ScheduleRun(schedule=name, due_at=nxt.at, trigger="catch-up" if nxt.catch_up else "cron",
                                      status="running", started_at=now, owner=OWNER, message=said)
                    s.add(run)
                    s.flush()
                    claimed = (run, sched)
                elif held:
                    ready = [w for w in waiting if (as_utc(w.retry_at) or now) <= now]
                    if ready:
                        run = ready[0]
                        run.status, run.started_at, run.owner = "running", now, OWNER
                        s.add(run)
                        claimed = (run, sched)
        finally:
            if claimed is None and held:
                lock.release()
            for outcome, message in notes:
                self.service.audit.record(SCHEDULER, "schedule-run", name, outcome, message)
        if claimed is None:
            return None
        run, sched = claimed
        return self._launch(run, sched, lock)

    def run_now(self, actor: Actor, name: str) -> Started:
        """Run a schedule now (a person asked); Busy while one of its runs goes, else what stops it starting."""
        sched = self.service.schedules.get(name)
        lock = self._lock(name)
        for attempt in range(20):  # the loop holds the lock for a moment while it looks at the schedule
            try:
                lock.acquire(f"a run of {name} asked for by {actor.name}")
                break
            except Busy:
                if attempt == 19 or self._running(name):
                    self.service.audit.record(actor, "schedule-run-now", name, "refused", "a run of it is going")
                    raise Busy(f"schedule {name} is running now; try again when it has finished") from None
                time.sleep(0.1)
        now = self.clock()
        try:
            with self.db.writing() as s:
                run = ScheduleRun(schedule=name, due_at=now, trigger="manual", status="running", started_at=now,
                                  owner=OWNER, message=f"run now, asked for by {actor.name}")
                s.add(run)
        except BaseException:
            lock.release()
            raise
        self.service.audit.record(actor, "schedule-run-now", name, "ok")
        return self._launch(run, sched, lock, reraise=True)

    def _running(self, name: str) -> bool:
        with self.db.reading() as s:
            return s.exec(select(ScheduleRun).where(ScheduleRun.schedule == name,
                                                    ScheduleRun.status == "running")).first() is not None

    # ----- running --------------------------------------------------------------------------------------
    def _launch(self, run: ScheduleRun, sched: Schedule, lock: DatabaseLock, *, reraise: bool = False) -> Started:
        from .service import Task

        assert run.id is not None
        service = self.service
        try:
            if sched.kind == "verify":
                inner = Task("verify", f"schedule {sched.name}",
                             lambda progress, cancel: service.reverify_tonight(SCHEDULER), [])
            elif sched.kind == "drill":  # the newest verified backup of each database (ehr_backup/drills.py)
                inner = Task("drill", f"schedule {sched.name}",
                             lambda progress, cancel: service.drills.run_scheduled(SCHEDULER, progress, cancel), [])
            else:
                when = (as_utc(run.due_at) or self.clock()).astimezone(cron.zone(sched.timezone))
                description = render(sched.description, when, sched.name, service.connection(sched.database).dbname)
                inner = service.prepare_create(SCHEDULER, description=description, location=sched.location,
                                               custom_path=sched.custom_path, compression=sched.compression,
                                               kind="scheduled", schedule=sched.name, database=sched.database,
                                               destinations=[d for d in sched.destinations.split(",") if d])
        except BackupError as exc:
            lock.release()
            self._finish(run.id, False, f"could not start: {exc.message}", None)
            if reraise:  # a person asked: they get the typed error (507 no space, 409 busy …)
                raise
            return Started(run.id, sched.name, None)
        run_id = run.id

        def work(progress: Any, cancel: threading.Event) -> Any:
            try:
                result = inner.run()
            except Cancelled as exc:
                self._finish(run_id, False, f"cancelled: {exc.message}", inner.backup_id, retry=False)
                raise
            except BaseException as exc:
                message = exc.message if isinstance(exc, BackupError) else f"internal error: {exc.__class__.__name__}"
                self._finish(run_id, False, message, inner.backup_id)
                raise
            self._finish(run_id, True, self._after_success(sched, result), inner.backup_id)
            return result

        task = Task(inner.kind, inner.target, work, [lock], progress=inner.progress, cancel=inner.cancel,
                    backup_id=inner.backup_id)
        handle = self._start(task, SCHEDULER.name)
        return Started(run_id, sched.name, task, handle)

    def _after_success(self, sched: Schedule, result: Any) -> str:
        """What the run made, then the schedule's rotation (its failure is reported, not the run's)."""
        if sched.kind == "verify":
            verified, failed = (result.get("verified", 0), result.get("failed", 0)) if isinstance(result, dict) else (0, 0)
            return f"re-verified {verified + failed} backups: {verified} good, {failed} failed"
        if sched.kind == "drill":
            return f"drilled {result.get('drilled', 0)} backups: all passed" if isinstance(result, dict) else "drilled"
        said = f"made {getattr(result, 'id', 'a backup')}"
        policy = policy_of(sched)
        if policy is None:
            return said
        try:
            # its own profile's backups only: a schedule moved to another profile leaves the old one's alone
            pruned = self.service.prune(SCHEDULER, schedule=sched.name, database=sched.database or "default",
                                        policy=policy, dry_run=False)
        except BackupError as exc:
            return f"{said}; rotation not applied: {exc.message}"
        deleted = len(pruned.get("deleted", []))
        held = pruned.get("holds") or []
        return f"{said}; rotation ({policy.describe()}) deleted {deleted}" + (
            f", held: {held[0].get('reason')}" if held else "")

    def _finish(self, run_id: int, ok: bool, message: str, backup_id: str | None, *, retry: bool = True) -> None:
        now = self.clock()
        with self.db.writing() as s:
            run = s.get(ScheduleRun, run_id)
            if run is None:
                return
            sched = s.exec(select(Schedule).where(Schedule.name == run.schedule)).first()
            run.backup_id = backup_id
            retry_at = self._settle(s, run, sched if retry else None, ok, message, now)
            name = run.schedule
            trim_runs(s, name)
        if retry_at is not None:
            message += f"; retry {run.attempt} of {sched.retries if sched else 0} at {retry_at:%Y-%m-%d %H:%M:%S} UTC"
        self.service.audit.record(SCHEDULER, "schedule-run", name, "ok" if ok else "failed", message)

    @staticmethod
    def _settle(s: Any, run: ScheduleRun, sched: Schedule | None, ok: bool, message: str,
                now: datetime) -> datetime | None:
        """End a run; a failed one with tries left gets a waiting retry. Returns the retry's time."""
        run.status, run.finished_at = ("succeeded" if ok else "failed"), now
        run.message = "; ".join(m for m in (run.message, message) if m)[:2000]
        s.add(run)
        if ok or sched is None or run.attempt > sched.retries:
            return None
        retry_at = now + timedelta(seconds=sched.retry_delay_s)
        s.add(ScheduleRun(schedule=run.schedule, due_at=run.due_at, attempt=run.attempt + 1, trigger="retry",
                          status="waiting", retry_at=retry_at, message=f"retry {run.attempt} after: {message}"[:2000]))
        return retry_at

    # ----- the loop ------------------------------------------------------------------------------------
    def seconds_to_next(self, poll: float = 30.0) -> float:
        """How long to sleep: until the next fire time or retry, at most `poll`, at least one second."""
        now = self.clock()
        soonest = now + timedelta(seconds=poll)
        for sched in self.service.schedules.all():
            if not sched.enabled:
                continue
            try:
                for when in cron.next_runs(sched.cron, sched.timezone, max(now, as_utc(sched.fired_until) or now), 1):
                    soonest = min(soonest, when.astimezone(UTC))
            except BackupError:
                continue  # a schedule stored by an older version that no longer validates: tick() reports it
        with self.db.reading() as s:
            for run in s.exec(select(ScheduleRun).where(ScheduleRun.status == "waiting")):
                soonest = min(soonest, as_utc(run.retry_at) or now)
        return max(1.0, (soonest - now).total_seconds() + 0.5)

    def serve(self, stop: threading.Event, poll: float = 30.0) -> None:
        """Take due runs until `stop` is set (the web app's thread, and `ehr-backup scheduler`)."""
        while not stop.is_set():
            try:
                self.tick()
                wait = self.seconds_to_next(poll)
            except Exception:
                log.warning("the scheduler could not check its schedules", exc_info=True)
                wait = poll
            stop.wait(wait)


def _due_note(d: Due, timezone: str) -> str:
    if not d.catch_up and not d.missed:
        return ""
    local = d.at.astimezone(cron.zone(timezone))
    extra = f"; {d.missed} earlier run{'s' if d.missed != 1 else ''} not made up" if d.missed else ""
    return f"catch-up: due {local:%Y-%m-%d %H:%M %Z} while the scheduler was not running; run once now{extra}"
