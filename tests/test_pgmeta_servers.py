"""Two real server processes on one PostgreSQL metadata database behave as one installation."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlmodel import select

from ehr_backup.auth import AuthService
from ehr_backup.config import Settings
from ehr_backup.models import Schedule
from ehr_backup.service import BackupService

from .conftest import ACTOR, ADMIN_PW, _free_port, cli_env, query, run_sql

ROOT = Path(__file__).parent.parent
API = "/api/admin/backup"


class Server:
    """`python -m ehr_backup` on a free port, with its own data directory."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base.mkdir(parents=True, exist_ok=True)
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PYTEST_", "PG", "EHR_BACKUP_", "BACKUP_", "DATABASE_URL", "NICEGUI_"))}
        self.log_path = base / "server.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "ehr_backup"], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     env={**clean, **env, "EHR_BACKUP_DATA_DIR": str(base / "data"),
                                          "EHR_BACKUP_PORT": str(self.port)})

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert self.proc.poll() is None, self.log_path.read_text()
                time.sleep(0.2)
        raise AssertionError("no answer: " + self.log_path.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def shared(env: dict[str, str], make_db: Callable[[str], str]) -> dict[str, str]:
    """One installation's variables: the database backed up, the key, shared storage, PG metadata."""
    run_sql(env["DATABASE_URL"], "CREATE TABLE notes (id int PRIMARY KEY, body text);"
                                 "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 500) g")
    return {**env, "EHR_BACKUP_METADATA_URL": make_db(f"pgmeta_{uuid.uuid4().hex[:12]}"),
            "EHR_BACKUP_SCHEDULER": "1"}


@pytest.fixture
def two(shared: dict[str, str], tmp_path: Path) -> Iterator[tuple[Server, Server, dict[str, str]]]:
    svc = BackupService(Settings.from_env(shared))
    auth = AuthService(svc.db, svc.audit, svc.settings)
    auth.add_user(ACTOR, "alice", ADMIN_PW, admin=True)
    creds = {"token": auth.create_token(ACTOR, "alice"), "cookie": auth.login("alice", ADMIN_PW, "127.0.0.1")[1]}
    # a schedule whose run was missed while no instance ran: each instance, starting, finds it due
    svc.schedule_create(ACTOR, "nightly", cron="30 2 * * *", timezone="UTC", description="Nightly {date}")
    with svc.db.writing() as s:
        row = s.exec(select(Schedule).where(Schedule.name == "nightly")).one()
        row.fired_until = datetime.now(UTC) - timedelta(days=2)
        s.add(row)
    svc.db.dispose()
    servers = (Server(tmp_path / "a", shared), Server(tmp_path / "b", shared))
    try:
        for server in servers:
            server.wait_ready()
        yield servers[0], servers[1], creds
    finally:
        for server in servers:
            server.stop()


def test_two_instances_share_sessions_jobs_locks_schedules_and_one_audit_chain(
        two: tuple[Server, Server, dict[str, str]], shared: dict[str, str]) -> None:
    a, b, creds = two
    meta = shared["EHR_BACKUP_METADATA_URL"]
    bearer = {"Authorization": f"Bearer {creds['token']}"}

    # the missed run: both instances found it due at start-up; it ran once
    deadline = time.monotonic() + 120
    while query(meta, "SELECT count(*) FROM schedule_runs WHERE status IN ('succeeded', 'failed')") == [(0,)]:
        assert time.monotonic() < deadline, a.log_path.read_text() + b.log_path.read_text()
        time.sleep(0.5)
    time.sleep(2)  # a second run, had one been taken, would show by now
    assert query(meta, "SELECT status, trigger FROM schedule_runs") == [("succeeded", "catch-up")]
    assert query(meta, "SELECT count(*) FROM backups WHERE kind = 'scheduled'") == [(1,)]

    # a session works on either instance
    for server in (a, b):
        r = httpx.get(server.url + API + "/dashboard", cookies={"ehr_session": creds["cookie"]}, timeout=30)
        assert r.status_code == 200, r.text

    # a backup started on A waits for a table lock held here: a job that runs until it is cancelled
    blocker = psycopg.connect(shared["DATABASE_URL"])
    try:
        blocker.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        r = httpx.post(a.url + API + "/create", json={"description": "blocked"}, headers=bearer, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["jobId"]

        # B sees it (state and progress, as A wrote them)
        seen = httpx.get(b.url + API + f"/jobs/{job_id}", headers=bearer, timeout=30)
        assert seen.status_code == 200, seen.text
        assert seen.json()["status"] == "running" and seen.json()["kind"] == "create"
        assert seen.json()["startedBy"] == "alice" and "phase" in seen.json()["progress"]

        # B may not back up the same database meanwhile: A's lock is a PostgreSQL advisory lock
        busy = httpx.post(b.url + API + "/create", json={"description": "second"}, headers=bearer, timeout=30)
        assert busy.status_code == 409 and "busy" in busy.json()["error"], busy.text

        # a third instance starting up (any CLI command reconciles first) leaves A's running backup alone:
        # the backup's job lock is held, by A, in PostgreSQL
        cli = subprocess.run([sys.executable, "-m", "ehr_backup.cli", "list", "--json"], cwd=ROOT, check=False,
                             env={**cli_env(shared), "EHR_BACKUP_DATA_DIR": str(a.log_path.parent.parent / "c")},
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert query(meta, "SELECT status FROM backups WHERE description = 'blocked'") == [("running",)]

        # B cancels A's job; A stops it and says so
        cancel = httpx.post(b.url + API + f"/jobs/{job_id}/cancel", headers=bearer, timeout=30)
        assert cancel.status_code == 200, cancel.text
        deadline = time.monotonic() + 30
        while (state := httpx.get(a.url + API + f"/jobs/{job_id}", headers=bearer, timeout=30).json())["status"] \
                == "running":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert state["status"] == "cancelled", state
    finally:
        blocker.close()
    # the lock went with the job: B backs up now
    r = httpx.post(b.url + API + "/create?wait=true", json={"description": "after"}, headers=bearer, timeout=120)
    assert r.status_code == 200, r.text

    # many audited requests on both instances at once (refused tokens are audited): still one chain
    def refused(server: Server) -> None:
        for _ in range(15):
            httpx.get(server.url + API + "/list", headers={"Authorization": "Bearer nope-" + "x" * 30}, timeout=30)

    threads = [threading.Thread(target=refused, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = query(meta, "SELECT seq, prev_hash, hash FROM audit ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert all(y[1] == x[2] for x, y in itertools.pairwise(rows)) and len({r[1] for r in rows}) == len(rows)
    for server in (a, b):  # `ehr-backup audit verify` as each instance's host runs it: its own saved head
        svc = BackupService(Settings.from_env({**shared, "EHR_BACKUP_DATA_DIR": str(server.log_path.parent / "data")}))
        try:
            report = svc.audit.verify()
            assert report.ok and report.entries == len(rows), report
        finally:
            svc.db.dispose()
    for server in (a, b):
        assert "ERROR" not in server.log_path.read_text()
