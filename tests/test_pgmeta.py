"""Metadata on PostgreSQL (EHR_BACKUP_METADATA_URL): schema, upgrades, one writer at a time, advisory locks."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from ehr_backup.config import Settings
from ehr_backup.db import Database
from ehr_backup.errors import Busy, ConfigError
from ehr_backup.locks import DatabaseLock, lock_for
from ehr_backup.models import AppSetting, StorageSample
from ehr_backup.pglocks import AdvisoryLock
from ehr_backup.pgmeta import check_url, sqlalchemy_url
from ehr_backup.service import BackupService

from .conftest import ACTOR, query, run_sql


@pytest.fixture
def meta_url(make_db: Callable[[str], str]) -> str:
    """An empty PostgreSQL database for the metadata, dropped afterwards."""
    return make_db(f"pgmeta_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def pg_env(env: dict[str, str], meta_url: str) -> dict[str, str]:
    return {**env, "EHR_BACKUP_METADATA_URL": meta_url}


def test_metadata_urls_are_checked_without_echoing_a_password() -> None:
    assert check_url("") is None
    assert sqlalchemy_url("postgresql://u:secret@h:5/db").startswith("postgresql+psycopg://u:secret@h:5/db")
    assert sqlalchemy_url("postgres://h/db").startswith("postgresql+psycopg://")
    for bad in ("sqlite:///x.db", "mysql://u:secret@h/db", "postgresql://u:secret@h/", "not a url"):
        with pytest.raises(ConfigError) as caught:
            check_url(bad)
        assert "secret" not in caught.value.message


def test_the_service_keeps_its_metadata_in_postgresql(pg_env: dict[str, str], meta_url: str) -> None:
    svc = BackupService(Settings.from_env(pg_env))
    try:
        svc.audit.record(ACTOR, "test", "pg")
        tables = {r[0] for r in query(meta_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"backups", "audit", "users", "sessions", "api_tokens", "schedules", "lock_holders"} <= tables
        assert not (Path(pg_env["EHR_BACKUP_DATA_DIR"]) / "catalogue.sqlite3").exists()
        assert [r[0] for r in query(meta_url, "SELECT action FROM audit")][-1] == "test"
        assert svc.audit.verify().ok
    finally:
        svc.db.dispose()


def test_64_bit_numbers_and_times_come_back_as_sqlite_gives_them(meta_url: str, tmp_path: Path) -> None:
    db = Database(tmp_path / "unused.sqlite3", meta_url)
    try:
        at = datetime(2026, 11, 30, 3, 4, 5, 678000, tzinfo=UTC)
        with db.writing() as s:
            s.add(StorageSample(location="x", ts=at, free_bytes=81_539_215_360, used_bytes=2**40))
        with db.reading() as s:
            row = s.exec(select(StorageSample)).one()
        assert (row.free_bytes, row.used_bytes) == (81_539_215_360, 2**40)
        assert row.ts == at and row.ts.utcoffset() is not None  # aware UTC, as from SQLite
    finally:
        db.dispose()


def test_columns_added_by_a_newer_version_are_added_from_the_models(meta_url: str, tmp_path: Path) -> None:
    Database(tmp_path / "unused.sqlite3", meta_url).dispose()
    run_sql(meta_url, "INSERT INTO users (username, password_hash, is_admin, disabled, created_at) "
                      "VALUES ('old', '', false, false, now());"
                      "INSERT INTO api_tokens (user_id, label, token_hash, prefix, created_at, scope) "
                      "VALUES (1, '', 'h', '', now(), 'admin');"
                      "ALTER TABLE api_tokens DROP COLUMN scope; ALTER TABLE backups DROP COLUMN pinned;"
                      "ALTER TABLE backups DROP COLUMN pin_reason; DROP INDEX ix_backups_size")
    Database(tmp_path / "unused.sqlite3", meta_url).dispose()  # an upgrade of the older schema
    cols = {r[0]: r[1:] for r in query(meta_url, "SELECT column_name, data_type, is_nullable, column_default "
                                                 "FROM information_schema.columns WHERE table_name IN "
                                                 "('api_tokens', 'backups')")}
    assert cols["scope"][:2] == ("character varying", "NO") and "admin" in cols["scope"][2]
    assert cols["pinned"][:2] == ("boolean", "NO") and cols["pin_reason"][1] == "YES"
    assert query(meta_url, "SELECT scope FROM api_tokens") == [("admin",)]
    assert query(meta_url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_backups_size'") == [(1,)]


def test_writing_sessions_of_two_processes_run_one_at_a_time(meta_url: str, tmp_path: Path) -> None:
    # two Database objects (two pools, as two instances have): each increments a counter read in the same
    # session; without the writers' lock, READ COMMITTED loses increments
    dbs = [Database(tmp_path / "unused.sqlite3", meta_url) for _ in range(2)]
    with dbs[0].writing() as s:
        s.add(AppSetting(key="counter", value="0", updated_at=datetime.now(UTC)))

    def bump(db: Database) -> None:
        for _ in range(25):
            with db.writing() as s:
                row = s.get(AppSetting, "counter")
                assert row is not None
                time.sleep(0.002)  # widen the window between the read and the write
                row.value = str(int(row.value) + 1)
                s.add(row)

    threads = [threading.Thread(target=bump, args=(db,)) for db in dbs for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert query(meta_url, "SELECT value FROM app_settings WHERE key = 'counter'") == [("100",)]
    finally:
        for db in dbs:
            db.dispose()


def _settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


def test_locks_are_advisory_locks_every_instance_sees(pg_env: dict[str, str], tmp_path: Path) -> None:
    one = _settings(pg_env)
    # another instance: its own data directory, the same metadata database
    other = _settings({**pg_env, "EHR_BACKUP_DATA_DIR": str(tmp_path / "other")})
    Database(tmp_path / "unused.sqlite3", one.metadata_url).dispose()
    first = lock_for(one, one.data_dir / "locks", "server/ehr")
    assert isinstance(first, AdvisoryLock)
    first.acquire("a backup of ehr by alice")
    try:
        with pytest.raises(Busy) as caught:
            lock_for(other, other.data_dir / "locks", "server/ehr").acquire("a restore")
        assert "a backup of ehr by alice" in caught.value.message
        assert lock_for(other, other.data_dir / "locks", "server/ehr").held_elsewhere()
        lock_for(other, other.data_dir / "locks", "server/other-db").acquire("x").release()  # another database
    finally:
        first.release()
    first.release()  # idempotent
    lock_for(other, other.data_dir / "locks", "server/ehr").acquire("a restore").release()
    assert not (one.data_dir / "locks").exists()  # no lock files


def test_readers_share_a_backup_lock_and_delete_waits_for_them(pg_env: dict[str, str], tmp_path: Path) -> None:
    s = _settings(pg_env)
    Database(tmp_path / "unused.sqlite3", s.metadata_url).dispose()
    where = s.data_dir / "locks" / "backups"
    readers = [lock_for(s, where, "b1", shared=True, noun="backup b1").acquire(f"a download {i}") for i in (1, 2)]
    with pytest.raises(Busy) as caught:
        lock_for(s, where, "b1", noun="backup b1").acquire("a delete")
    assert "a download" in caught.value.message
    for r in readers:
        r.release()
    lock_for(s, where, "b1", noun="backup b1").acquire("a delete").release()


def test_a_crashed_instance_s_locks_vanish_with_its_connection(pg_env: dict[str, str], tmp_path: Path) -> None:
    s = _settings(pg_env)
    Database(tmp_path / "unused.sqlite3", s.metadata_url).dispose()
    code = ("import sys, time\nfrom ehr_backup.pglocks import AdvisoryLock\n"
            "held = AdvisoryLock(sys.argv[1], 'locks/server/ehr').acquire('a backup by a process that dies')\n"
            "print('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, s.metadata_url or ""], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match="a process that dies"):
            lock_for(s, s.data_dir / "locks", "server/ehr").acquire("a restore")
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while True:  # the server notices the closed connection at once; give it a moment under load
        try:
            lock_for(s, s.data_dir / "locks", "server/ehr").acquire("a restore").release()
            break
        except Busy:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_without_a_metadata_url_locks_stay_files(env: dict[str, str]) -> None:
    s = _settings({k: v for k, v in env.items() if k != "EHR_BACKUP_METADATA_URL"})
    lock = lock_for(s, s.data_dir / "locks", "k")
    assert type(lock) is DatabaseLock
    lock.acquire("x").release()


def test_a_postgresql_error_never_shows_the_metadata_url_s_password(tmp_path: Path) -> None:
    with pytest.raises(Exception) as caught:
        Database(tmp_path / "x.sqlite3", "postgresql://nobody:s3cret-pw@127.0.0.1:1/pgmeta_none")
    assert "s3cret-pw" not in str(caught.value)
    with pytest.raises(Exception) as caught2:
        AdvisoryLock("postgresql://nobody:s3cret-pw@127.0.0.1:1/pgmeta_none", "k").acquire("x")
    assert "s3cret-pw" not in str(caught2.value)



def test_a_job_is_seen_and_cancelled_from_another_instance(meta_url: str, tmp_path: Path) -> None:
    from ehr_backup.errors import Cancelled
    from ehr_backup.jobs import JobManager
    from ehr_backup.jobstore import JobStore, RemoteJob
    from ehr_backup.service import Task

    here, there = (Database(tmp_path / "unused.sqlite3", meta_url) for _ in range(2))

    def work(progress, cancel: threading.Event) -> None:
        progress.phase, progress.bytes_read = "dumping", 4096
        if not cancel.wait(30):
            raise AssertionError("never cancelled")
        raise Cancelled("cancelled by the test")

    try:
        job = JobManager(store=JobStore(here)).start(Task("create", "ehr", work, []), "alice")
        other = JobManager(store=JobStore(there))
        deadline = time.monotonic() + 10
        while True:  # progress is published about once a second
            seen = other.find(job.id)
            assert isinstance(seen, RemoteJob)
            view = seen.as_dict()
            if view["progress"].get("bytesRead") == 4096 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (view["status"], view["kind"], view["startedBy"], view["progress"]["phase"]) == \
            ("running", "create", "alice", "dumping")
        seen.cancel()
        assert job.done.wait(10) and job.status == "cancelled"
        deadline = time.monotonic() + 10
        while other.find(job.id).as_dict()["status"] != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(Exception, match="no such job"):
            other.find("0123456789abcdef")
    finally:
        here.dispose()
        there.dispose()


def test_editing_or_removing_audit_entries_in_postgresql_is_detected(pg_env: dict[str, str], meta_url: str) -> None:
    svc = BackupService(Settings.from_env(pg_env))
    try:
        for i in range(4):
            svc.audit.record(ACTOR, "test", f"t{i}")
        assert svc.audit.verify().ok
        run_sql(meta_url, "UPDATE audit SET outcome = 'failed' WHERE seq = 2")
        report = svc.audit.verify()
        assert not report.ok and report.first_bad == 2
        run_sql(meta_url, "UPDATE audit SET outcome = 'ok' WHERE seq = 2")
        assert svc.audit.verify().ok
        run_sql(meta_url, "DELETE FROM audit WHERE seq = 4")  # the newest: caught by this data directory's head
        assert not svc.audit.verify().ok
    finally:
        svc.db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_list_sorts_in_byte_order_and_searches_ignoring_case_on_either_backend(
        env: dict[str, str], make_db: Callable[[str], str], tmp_path: Path, backend: str) -> None:
    from tests.catalogue_fill import fill

    from .conftest import ADMIN_URL, url_for

    chosen = {k: v for k, v in env.items() if k != "EHR_BACKUP_METADATA_URL"}
    if backend == "postgresql":  # a database whose own order is a language's (a, A, _ sorted as words)
        name = f"pgmeta_{uuid.uuid4().hex[:12]}"
        run_sql(ADMIN_URL, f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE \'en-US\' '
                           "LOCALE 'C.UTF-8'")
        make_db.made.append(name)  # type: ignore[attr-defined]
        chosen["EHR_BACKUP_METADATA_URL"] = url_for(name)
    svc = BackupService(Settings.from_env(chosen))
    try:
        fill(svc, 4, directory=tmp_path / "rows")
        with svc.db.writing() as s:
            for i, text in enumerate(("beta", "Alpha", "alpha", "_x")):
                from ehr_backup.models import BackupRecord
                row = s.exec(select(BackupRecord).where(BackupRecord.description.like(f"nightly {i} %"))).one()
                row.description = text
                s.add(row)
        page = svc.list_page(sort="description", descending=False, limit=2)
        rest = svc.list_page(sort="description", descending=False, limit=2, cursor=page["nextCursor"])
        assert [b["description"] for b in page["backups"] + rest["backups"]] == ["Alpha", "_x", "alpha", "beta"]
        assert sorted(b["description"] for b in svc.list_page(search="ALPHA")["backups"]) == ["Alpha", "alpha"]
    finally:
        svc.db.dispose()
