"""Schedules running: real backups of a real database, a controllable clock, never a sleep."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.errors import Busy, InvalidInput, NotFound
from ehr_backup.locks import DatabaseLock
from ehr_backup.models import ScheduleRun
from ehr_backup.scheduler import OWNER, Scheduler
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env

T0 = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def to(self, text: str) -> None:
        self.now = datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def scheduler(service: BackupService, clock: Clock) -> Scheduler:
    service.schedules.clock = clock
    return Scheduler(service, clock=clock)


def nightly(service: BackupService, name: str = "nightly", **fields) -> None:
    """A schedule at 02:30 UTC every day, counted from T0."""
    service.schedule_create(ACTOR, name, **{"cron": "30 2 * * *", "timezone": "UTC",
                                            "description": "Nightly {date}", **fields})
    with service.db.writing() as s:  # as if it had been made at T0
        from ehr_backup.models import Schedule
        row = s.exec(select(Schedule).where(Schedule.name == name)).one()
        row.fired_until = T0
        s.add(row)


def runs(service: BackupService, name: str = "nightly") -> list[ScheduleRun]:
    return list(reversed(service.schedules.runs(name, 100)))


def scheduled_backups(service: BackupService) -> list[dict]:
    return [b for b in service.list() if b["kind"] == "scheduled"]


def audit_actions(service: BackupService, action: str) -> list[tuple[str, str, str]]:
    return [(e.actor, e.outcome, e.detail) for e in service.audit.entries() if e.action == action]


def test_a_schedule_fires_at_its_time_once_and_its_backup_is_scheduled_kind(service: BackupService,
                                                                          scheduler: Scheduler, clock: Clock) -> None:
    nightly(service)
    clock.to("2026-11-30 02:29:59")
    assert scheduler.tick() == []
    clock.to("2026-11-30 02:30:05")
    started = scheduler.tick()
    assert len(started) == 1 and started[0].task is not None
    assert scheduler.tick() == []  # taken: not again
    [run] = runs(service)
    assert (run.status, run.trigger, run.attempt) == ("succeeded", "cron", 1)
    [backup] = scheduled_backups(service)
    assert backup["id"] == run.backup_id and backup["schedule"] == "nightly"
    assert backup["description"] == "Nightly 2026-11-30" and backup["createdBy"] == "scheduler"
    assert backup["verification"] == "ok"  # verified as it was made
    view = service.schedule_get("nightly")
    assert view["lastRun"]["status"] == "succeeded" and not view["failing"]
    assert view["nextRuns"][0] == "2026-12-01T02:30:00+00:00"
    assert ("scheduler", "ok") in [(a, o) for a, o, _ in audit_actions(service, "schedule-run")]
    assert any(e.actor == "scheduler" and e.action == "create" and e.outcome == "ok" for e in service.audit.entries())


def test_missed_runs_while_down_run_once_at_start_up_and_say_so(service: BackupService, scheduler: Scheduler,
                                                               clock: Clock) -> None:
    nightly(service)
    clock.to("2026-12-04 09:00")  # the app was down for five nights
    assert len(scheduler.tick()) == 1
    assert scheduler.tick() == []
    [run] = runs(service)
    assert run.trigger == "catch-up" and run.status == "succeeded"
    assert run.due_at.replace(tzinfo=UTC) == datetime(2026, 12, 4, 2, 30, tzinfo=UTC)
    assert "while the scheduler was not running; run once now; 4 earlier runs not made up" in run.message
    assert len(scheduled_backups(service)) == 1


def test_a_run_still_going_when_the_next_is_due_makes_that_one_skipped(service: BackupService,
                                                                      clock: Clock) -> None:
    held: list = []
    slow = Scheduler(service, start=lambda task, by: held.append(task), clock=clock)  # started, not yet run
    nightly(service)
    clock.to("2026-11-30 02:30")
    assert len(slow.tick()) == 1
    clock.to("2026-12-01 02:30")
    assert slow.tick() == []  # the first run still holds the schedule
    first_run, skipped = runs(service)
    assert first_run.status == "running"
    assert skipped.status == "skipped" and "2026-11-30 02:30 UTC was still going" in skipped.message
    held[0].run()  # the first run ends
    assert [r.status for r in runs(service)] == ["succeeded", "skipped"]
    clock.to("2026-12-02 02:30")
    slow.tick()
    held[1].run()
    assert [r.status for r in runs(service)] == ["succeeded", "skipped", "succeeded"]
    assert ("scheduler", "skipped") in [(a, o) for a, o, _ in audit_actions(service, "schedule-run")]


def test_a_failed_run_is_retried_after_its_delay_and_stays_visible_until_a_run_succeeds(
        service: BackupService, scheduler: Scheduler, clock: Clock, env: dict[str, str]) -> None:
    nightly(service, retries=2, retry_delay_s=300)
    backups = Path(env["EHR_BACKUP_DEFAULT_DIR"])
    backups.mkdir(exist_ok=True)
    shutil.rmtree(backups)
    backups.write_text("not a directory")  # the location is unusable
    clock.to("2026-11-30 02:30")
    scheduler.tick()
    view = service.schedule_get("nightly")
    assert view["failing"] and "could not start: cannot create" in view["failure"]
    assert view["retryAt"] == "2026-11-30T02:35:00+00:00"
    clock.to("2026-11-30 02:34")
    assert scheduler.tick() == []  # not before its delay
    clock.to("2026-11-30 02:35")
    scheduler.tick()  # try 2 fails too
    assert service.schedule_get("nightly")["failing"]
    backups.unlink()  # the admin fixes the location
    clock.to("2026-11-30 02:40")
    scheduler.tick()  # try 3 succeeds
    statuses = [(r.attempt, r.trigger, r.status) for r in runs(service)]
    assert statuses == [(1, "cron", "failed"), (2, "retry", "failed"), (3, "retry", "succeeded")]
    view = service.schedule_get("nightly")
    assert not view["failing"] and view["failure"] is None and view["retryAt"] is None
    assert len(scheduled_backups(service)) == 1


def test_retries_are_bounded_and_the_failure_stays_shown(service: BackupService, scheduler: Scheduler,
                                                          clock: Clock, env: dict[str, str]) -> None:
    nightly(service, retries=1, retry_delay_s=60)
    backups = Path(env["EHR_BACKUP_DEFAULT_DIR"])
    shutil.rmtree(backups, ignore_errors=True)
    backups.write_text("x")
    clock.to("2026-11-30 02:30")
    scheduler.tick()
    clock.to("2026-11-30 02:31")
    scheduler.tick()
    clock.to("2026-11-30 09:00")
    assert scheduler.tick() == []  # no third try
    assert [r.status for r in runs(service)] == ["failed", "failed"]
    view = service.schedule_get("nightly")
    assert view["failing"] and view["retryAt"] is None


def test_a_run_left_running_by_a_dead_process_is_failed_and_retried(service: BackupService, scheduler: Scheduler,
                                                                    clock: Clock) -> None:
    nightly(service)
    with service.db.writing() as s:
        s.add(ScheduleRun(schedule="nightly", due_at=T0, status="running", started_at=T0, owner="gone:1"))
    clock.to("2026-11-30 01:00")
    scheduler.tick()  # nobody holds the schedule's lock: that process died
    dead, retry = runs(service)
    assert dead.status == "failed" and "stopped before the run finished" in dead.message
    assert retry.status == "waiting" and retry.attempt == 2


def test_two_processes_take_each_due_run_once(service: BackupService, env: dict[str, str], tmp_path: Path) -> None:
    nightly(service)
    script = tmp_path / "tick.py"
    script.write_text(
        "import sys\nfrom datetime import datetime, UTC\nfrom ehr_backup.config import Settings\n"
        "from ehr_backup.service import BackupService\nfrom ehr_backup.scheduler import Scheduler\n"
        "svc = BackupService(Settings.from_env())\n"
        "sys.stdin.readline()  # start together\n"
        "started = Scheduler(svc, clock=lambda: datetime(2026, 11, 30, 2, 30, 10, tzinfo=UTC)).tick()\n"
        "print(len(started))\n")
    procs = [subprocess.Popen([sys.executable, str(script)], env=cli_env(env), cwd=Path(__file__).parent.parent,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate("go\n", timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(int(o.strip()) for o, _ in outs) == [0, 0, 1]
    [run] = runs(service)
    assert run.status == "succeeded"
    assert len(scheduled_backups(service)) == 1


def test_two_schedulers_in_threads_take_each_due_run_once(service: BackupService, env: dict[str, str],
                                                         clock: Clock) -> None:
    other = BackupService(Settings.from_env(env))  # a second process's view: its own engines
    try:
        nightly(service)
        clock.to("2026-11-30 02:30")
        results: list = []
        barrier = threading.Barrier(2)

        def go(svc: BackupService) -> None:
            barrier.wait()
            results.append(len(Scheduler(svc, clock=clock).tick()))

        threads = [threading.Thread(target=go, args=(s,)) for s in (service, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(results) == [0, 1]
        assert len(runs(service)) == 1 and len(scheduled_backups(service)) == 1
    finally:
        other.db.dispose()


def test_rotation_follows_each_run(service: BackupService, scheduler: Scheduler, clock: Clock) -> None:
    nightly(service, policy={"daily": 2, "weekly": 0, "monthly": 0, "yearly": 0})
    manual = service.create(ACTOR, description="by hand").id
    real_now = datetime.now(UTC)
    for day in range(1, 5):
        clock.to(f"2026-12-0{day} 02:30")
        scheduler.tick()
        # backups are dated by their real creation time: spread them over the last days before the next run
        made = runs(service)[-1].backup_id
        service.catalogue.update(made, created_at=real_now - timedelta(days=5 - day))
    kept = [b["id"] for b in scheduled_backups(service)]
    made_ids = [r.backup_id for r in runs(service)]
    # the policy counts calendar days in the schedule's zone; the newest two days' backups stay
    assert set(made_ids[-2:]) <= set(kept) and made_ids[0] not in kept
    assert manual in [b["id"] for b in service.list()]  # the schedule rotates only its own backups
    assert "rotation (2 daily) deleted" in runs(service)[-1].message


def test_run_now_is_a_scheduled_run_and_refused_while_one_goes(service: BackupService, scheduler: Scheduler,
                                                               env: dict[str, str]) -> None:
    nightly(service)
    started = scheduler.run_now(Actor("alice"), "nightly")
    assert started.task is not None
    [run] = runs(service)
    assert (run.trigger, run.status) == ("manual", "succeeded") and "asked for by alice" in run.message
    lock = DatabaseLock(Path(env["EHR_BACKUP_DATA_DIR"]) / "locks" / "jobs", "schedule:nightly").acquire("a run")
    try:
        with pytest.raises(Busy, match="schedule nightly is running now"):
            scheduler.run_now(Actor("alice"), "nightly")
    finally:
        lock.release()
    with pytest.raises(NotFound):
        scheduler.run_now(Actor("alice"), "nope")
    assert ("alice", "refused") in [(a, o) for a, o, _ in audit_actions(service, "schedule-run-now")]


def test_disabled_schedules_do_not_run_and_enabling_does_not_make_up_missed_runs(
        service: BackupService, scheduler: Scheduler, clock: Clock) -> None:
    nightly(service)
    service.schedule_update(ACTOR, "nightly", enabled=False)
    clock.to("2026-12-03 09:00")
    assert scheduler.tick() == []
    service.schedule_update(ACTOR, "nightly", enabled=True)  # fired_until moves to the real now (> clock)
    assert scheduler.tick() == []
    assert runs(service) == []


def test_a_verification_schedule_catches_a_corrupted_backup(env: dict[str, str], clock: Clock) -> None:
    service = BackupService(Settings.from_env({**env, "EHR_BACKUP_REVERIFY_DAYS": "1"}))  # all, each night
    scheduler = Scheduler(service, clock=clock)
    good = service.create(ACTOR, description="good").id
    bad = service.create(ACTOR, description="rots").id
    path = Path(service.get(bad).directory) / bad
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit on the disk
    path.write_bytes(bytes(data))
    service.schedule_create(ACTOR, "reverify", kind="verify", cron="0 4 * * *", timezone="UTC",
                            description="unused")
    clock.now = datetime.now(UTC) + timedelta(days=1, hours=1)
    scheduler.tick()
    [run] = runs(service, "reverify")
    assert run.status == "succeeded" and "2 backups: 1 good, 1 failed" in run.message
    assert service.get(bad).verify_ok is False and service.get(good).verify_ok is True
    assert [b["verification"] for b in service.list() if b["id"] == bad] == ["failed"]


def test_invalid_schedules_are_refused_with_a_message_and_audited(service: BackupService) -> None:
    cases = [({"cron": "61 * * * *"}, "out of range"), ({"timezone": "Mars/Base"}, "unknown time zone"),
             ({"description": "x {secret}"}, "unknown placeholder"), ({"location": "nowhere"}, "location"),
             ({"retries": 99}, "retries"), ({"policy": {"daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}},
                                            "keeps nothing")]
    for fields, says in cases:
        with pytest.raises(InvalidInput, match=says):
            service.schedule_create(ACTOR, "x", **{"cron": "30 2 * * *", "description": "d", **fields})
    nightly(service)
    with pytest.raises(InvalidInput, match="already exists"):
        nightly(service)
    assert service.schedule_list()[0]["name"] == "nightly"
    refused = [o for _, o, _ in audit_actions(service, "schedule-create")]
    assert refused.count("refused") == len(cases) + 1


def test_schedules_survive_a_restart(service: BackupService, env: dict[str, str]) -> None:
    nightly(service, compression="zstd", location="documents")
    again = BackupService(Settings.from_env(env))
    try:
        [s] = again.schedule_list()
        assert (s["name"], s["compression"], s["location"], s["reading"]) == (
            "nightly", "zstd", "documents", "At 02:30, every day")
    finally:
        again.db.dispose()


def test_the_loop_sleeps_until_the_next_run(service: BackupService, scheduler: Scheduler, clock: Clock) -> None:
    nightly(service)
    clock.to("2026-11-30 02:29:50")
    assert 10 <= scheduler.seconds_to_next(poll=30) <= 11
    clock.to("2026-11-30 01:00")
    assert scheduler.seconds_to_next(poll=30) == 30.5


def test_cli_schedule_commands_and_json(env: dict[str, str]) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *args], env=cli_env(env), text=True, check=False,
                              capture_output=True, timeout=120, cwd=Path(__file__).parent.parent)

    out = cli("schedule", "add", "--cron", "30 2 * * *", "--description", "Nightly {date}", "--timezone",
              "Europe/Berlin", "--keep-daily", "3", "--json")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["name"] == "nightly" and made["reading"] == "At 02:30, every day"
    assert made["policy"]["daily"] == 3 and made["policy"]["weekly"] == 4 and len(made["nextRuns"]) == 5
    bad = cli("schedule", "add", "--cron", "30 25 * * *", "--description", "x")
    assert bad.returncode == 2 and "ehr-backup: error: invalid cron expression" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert cli("schedule", "disable", "nightly").returncode == 0
    listed = cli("schedule", "list")
    assert "nightly: At 02:30, every day (30 2 * * *, Europe/Berlin), backup to default, DISABLED" in listed.stdout
    ran = cli("schedule", "run-now", "nightly", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["runs"][0]["status"] == "succeeded"
    assert cli("schedule", "remove", "nightly").returncode == 0
    assert cli("schedule", "show", "nightly").returncode == 1


def test_headless_scheduler_stops_on_sigterm(env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ehr_backup.cli", "scheduler", "--poll", "1"], env=cli_env(env),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    try:
        assert "ehr-backup scheduler: 0 schedules" in (proc.stdout.readline() if proc.stdout else "")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped" in err


def _owner_is_this_process() -> None:
    assert OWNER.endswith(f":{os.getpid()}")


def test_owner_names_this_process() -> None:
    _owner_is_this_process()


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = {t.name for t in threading.enumerate()}
    yield
    assert "scheduler" not in {t.name for t in threading.enumerate()} - before


def test_the_web_app_runs_a_run_missed_while_it_was_down_when_it_starts(tmp_path: Path) -> None:
    from ehr_backup.models import Schedule

    from .live_server import LiveServer

    def missed_one(svc: BackupService) -> None:
        svc.schedule_create(ACTOR, "nightly", cron="30 2 * * *", timezone="UTC", description="Nightly {date}")
        with svc.db.writing() as s:  # made two days ago; the app was down since
            row = s.exec(select(Schedule).where(Schedule.name == "nightly")).one()
            row.fired_until = datetime.now(UTC) - timedelta(days=2)
            s.add(row)

    server = LiveServer(tmp_path, prepare=missed_one)
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=90)
        while datetime.now(UTC) < deadline:
            done = [r for r in runs(server._service) if r.status in ("succeeded", "failed")]
            if done:
                break
            threading.Event().wait(0.3)
        [run] = runs(server._service)
        assert run.status == "succeeded" and run.trigger == "catch-up", run.message
        assert "1 earlier run not made up" in run.message or "earlier runs not made up" in run.message
        assert [b["schedule"] for b in server._service.list()] == ["nightly"]
    finally:
        server.stop()


def test_a_broken_stored_schedule_does_not_stop_the_others(service: BackupService, scheduler: Scheduler,
                                                           clock: Clock) -> None:
    from ehr_backup.models import Schedule

    nightly(service, "b-good")
    with service.db.writing() as s:  # as an older version could have stored it: 31 February never comes
        s.add(Schedule(name="a-bad", cron="0 0 31 2 *", timezone="UTC", created_at=T0, updated_at=T0,
                       fired_until=T0))
    clock.to("2026-11-30 02:30")
    assert [st.schedule for st in scheduler.tick()] == ["b-good"]
    views = {v["name"]: v for v in service.schedule_list()}
    assert views["a-bad"]["nextRuns"] == [] and views["a-bad"]["reading"].startswith("never runs")
    assert 1 <= scheduler.seconds_to_next(poll=30) <= 30.5


def test_a_schedule_made_again_under_a_removed_name_starts_without_history(
        service: BackupService, scheduler: Scheduler, clock: Clock, env: dict[str, str]) -> None:
    nightly(service, retries=0)
    backups = Path(env["EHR_BACKUP_DEFAULT_DIR"])
    shutil.rmtree(backups, ignore_errors=True)
    backups.write_text("x")
    clock.to("2026-11-30 02:30")
    scheduler.tick()
    assert service.schedule_get("nightly")["failing"]
    service.schedule_remove(ACTOR, "nightly")
    backups.unlink()
    nightly(service)
    view = service.schedule_get("nightly")
    assert not view["failing"] and view["lastRun"] is None and view["runs"] == []


def test_failing_stays_shown_after_many_skipped_runs_and_old_runs_are_forgotten(
        service: BackupService, scheduler: Scheduler, clock: Clock) -> None:
    from ehr_backup import schedules as schedules_module

    nightly(service)
    with service.db.writing() as s:
        s.add(ScheduleRun(schedule="nightly", due_at=T0, status="failed", started_at=T0, finished_at=T0,
                          message="disk full"))
        for n in range(60):  # a hung run made the next ones skip
            s.add(ScheduleRun(schedule="nightly", due_at=T0 + timedelta(minutes=n + 1), status="skipped",
                              started_at=T0, finished_at=T0, message="skipped"))
    view = service.schedule_get("nightly")
    assert view["failing"] and view["failure"] == "disk full" and view["lastRun"]["status"] == "skipped"
    with service.db.writing() as s:
        schedules_module.trim_runs(s, "nightly", keep=10)
    assert len(service.schedules.runs("nightly", 1000)) == 10


def test_a_verify_schedule_refuses_a_rotation_policy(service: BackupService) -> None:
    with pytest.raises(InvalidInput, match="rotation applies to backup schedules"):
        service.schedule_create(ACTOR, "v", kind="verify", cron="0 4 * * *", timezone="UTC", description="d",
                                policy={"daily": 3})
