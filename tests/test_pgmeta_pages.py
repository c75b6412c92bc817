"""Two instances on one PostgreSQL metadata database: the pages of one show, and cancel, the jobs the other
runs, and serve the reports of the drills it ran (issue 11)."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.jobs_everywhere import recent
from ehr_backup.jobstore import LOST_AFTER, JobState, RemoteJob, seen_status
from ehr_backup.service import BackupService

from .conftest import ACTOR, run_sql
from .test_pgmeta_servers import Server
from .web_helpers import eventually, login

API = "/api/admin/backup"
NOW = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)


def _row(job_id: str, status: str, finished: datetime | None, updated: datetime) -> JobState:
    return JobState(id=job_id, kind="create", status=status, owner="host-b:42", target="t", created_at=NOW,
                    updated_at=updated, finished_at=finished, progress='{"elapsed": 3.0}')


def test_a_quiet_running_job_reads_as_lost_and_recent_activity_merges_instances_newest_first() -> None:
    assert seen_status("running", NOW - LOST_AFTER + timedelta(seconds=1), "b:1", NOW) == ("running", None)
    status, why = seen_status("running", (NOW - LOST_AFTER - timedelta(seconds=1)).replace(tzinfo=None), "b:1", NOW)
    assert status == "lost" and "(b:1)" in (why or "")  # SQLite gives times back without a zone
    assert seen_status("succeeded", NOW - timedelta(days=1), "b:1", NOW) == ("succeeded", None)

    old = RemoteJob(None, _row("a" * 16, "succeeded", NOW - timedelta(minutes=5), NOW))  # type: ignore[arg-type]
    new = RemoteJob(None, _row("b" * 16, "failed", NOW - timedelta(minutes=1), NOW))  # type: ignore[arg-type]
    going = RemoteJob(None, _row("c" * 16, "running", None, datetime.now(UTC)))  # type: ignore[arg-type]
    assert old.done.is_set() and not going.done.is_set() and old.instance == "host-b:42"
    assert old.task.progress.as_dict()["elapsed"] == 3.0
    assert old.task.progress.as_dict()["bytesRead"] == 0  # what a row lacks reads as nothing yet, not a KeyError
    assert [j.id for j in recent([], [old, going, new], 10)] == ["b" * 16, "a" * 16]  # a running one is no line
    assert [j.id for j in recent([], [old, new], 1)] == ["b" * 16]


@pytest.fixture
def pg_env(env: dict[str, str], make_db: Callable[[str], str]) -> dict[str, str]:
    """The installation on PostgreSQL metadata (set before the page app's fixtures read `env`)."""
    env.setdefault("EHR_BACKUP_METADATA_URL", make_db(f"pgmeta2_{uuid.uuid4().hex[:12]}"))
    run_sql(env["DATABASE_URL"], "CREATE TABLE notes (id int PRIMARY KEY, body text);"
                                 "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 300) g")
    return env


@pytest.fixture
def other(pg_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """Instance B: a real server process with its own data directory, on the same metadata database."""
    server = Server(tmp_path / "b", {**pg_env, "EHR_BACKUP_SCHEDULER": "0"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def test_the_page_shows_and_cancels_another_instances_job_and_serves_its_drill_report(
        pg_env: dict[str, str], other: Server, user: User, accounts, web_env: dict[str, str]) -> None:
    bearer = {"Authorization": f"Bearer {accounts.create_token(ACTOR, 'alice')}"}
    b_instance = f"{socket.gethostname()}:{other.proc.pid}"
    blocker = psycopg.connect(pg_env["DATABASE_URL"])
    async with httpx.AsyncClient(base_url=other.url, headers=bearer, timeout=120) as b:
        try:
            # B starts a backup that waits for a table lock held here: it runs until it is cancelled
            blocker.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
            started = await b.post(API + "/create", json={"description": "ward export on B"})
            assert started.status_code == 202, started.text
            job_id = started.json()["jobId"]

            # A's page (this process) shows it: a card titled by its description, labelled with B, progress
            await login(user, next_="/admin/backup")
            await user.should_see(marker="job-create", retries=100)
            assert user.find(marker="job-title").elements.pop().text == "Create: ward export on B"
            assert user.find(marker="job-instance").elements.pop().text == f"on {b_instance}"
            assert user.find(marker="job-phase").elements.pop().text.startswith("Phase: ")

            # Cancel on A's page asks B to stop; B stops it and A's card says so
            user.find(marker="cancel-job").click()

            async def b_status() -> str:
                return (await b.get(API + f"/jobs/{job_id}")).json()["status"]

            deadline = time.monotonic() + 30
            while (status := await b_status()) == "running":
                assert time.monotonic() < deadline, "B never stopped the job"
                await user.should_see(marker="job-create")  # (lets A's event loop run meanwhile)
            assert status == "cancelled"
        finally:
            blocker.close()
        await user.should_see(marker="dismiss-job", retries=100)
        assert user.find(marker="job-status").elements.pop().text == "Cancelled: nothing was kept"
        # and "Recent activity" lists it, labelled with B
        await user.should_see(marker="recent-instance-0", retries=100)
        assert user.find(marker="recent-instance-0").elements.pop().text == f"on {b_instance}"
        assert user.find(marker="recent-outcome-0").elements.pop().text == "cancelled"
        audit = [(e.action, e.outcome) for e in BackupService(Settings.from_env(web_env)).audit.entries(
            action="cancel")]
        assert ("cancel", "ok") in audit  # the cancel from A's page is audited

        # a job B starts while A's page is open appears there too (the page looks every few seconds)
        done = await b.post(API + "/create?wait=true", json={"description": "second on B"})
        assert done.status_code == 200, done.text
        bid = done.json()["id"]
        await eventually(lambda: any("second on B" in e.text for e in user.find(marker="recent-activity")
                                     .elements.pop().descendants() if hasattr(e, "text")), timeout=30)

        # a drill B runs: its report is written in B's data directory, and A serves it all the same
        drill = await b.post(API + "/drill?wait=true", json={"backupId": bid})
        assert drill.status_code == 200, drill.text
        body = drill.json()
        assert body["report"]["pdf"].startswith(str(other.log_path.parent / "data"))
    written = Path(body["report"]["pdf"])
    assert hashlib.sha256(written.read_bytes()).hexdigest() == body["report"]["pdfSha256"]
    for kind in ("pdf", "json"):  # B's disk is another machine's: A cannot read it
        Path(body["report"][kind]).unlink()
    svc = BackupService(Settings.from_env(web_env))  # instance A's own data directory
    try:
        assert not Path(web_env["EHR_BACKUP_DATA_DIR"], "drill-reports", written.name).exists()
        pdf, name = svc.drill_report_file(ACTOR, body["id"], "pdf")
        js, _ = svc.drill_report_file(ACTOR, body["id"], "json")
        assert pdf.startswith(b"%PDF") and name == written.name
        assert hashlib.sha256(pdf).hexdigest() == body["report"]["pdfSha256"]
        assert hashlib.sha256(js).hexdigest() == body["report"]["jsonSha256"]
        assert svc.drill_get(body["id"])["evidence"]["outcome"] == "passed"
    finally:
        svc.db.dispose()
    await user.open(f"/admin/backup/drill/{body['id']}")  # A's report page, for B's drill
    await user.should_see(marker="drill-outcome")
    assert user.find(marker="drill-outcome").elements.pop().text == "PASSED"
    assert "ERROR" not in other.log_path.read_text()


def test_the_catalogue_change_counter_moves_on_postgresql_metadata(pg_env: dict[str, str]) -> None:
    """The backup page's reused reads (change_memo.py) need the counter; it was made for SQLite only."""
    svc = BackupService(Settings.from_env(pg_env))
    try:
        assert svc.db.dialect == "postgresql"
        before = svc.catalogue.changes()
        record = svc.create(ACTOR, description="counted")
        after_create = svc.catalogue.changes()
        assert after_create > before
        svc.catalogue.update(record.id, description="counted again")
        assert svc.catalogue.changes() > after_create
    finally:
        svc.db.dispose()
    again = BackupService(Settings.from_env(pg_env))  # a second start (another instance) keeps the count
    try:
        assert again.catalogue.changes() >= after_create + 1
    finally:
        again.db.dispose()
