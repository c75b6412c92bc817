"""`ehr-backup metadata migrate`: the SQLite metadata copied into PostgreSQL loses nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from ehr_backup.audit import Actor
from ehr_backup.auth import AuthService
from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env, query, run_sql

ROOT = Path(__file__).parent.parent


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *argv], check=False, env=cli_env(env), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def sqlite_env(env: dict[str, str]) -> dict[str, str]:
    """An installation on SQLite metadata (whatever EHR_TEST_METADATA says)."""
    return {k: v for k, v in env.items() if k != "EHR_BACKUP_METADATA_URL"}


def _sqlite_counts(env: dict[str, str]) -> dict[str, int]:
    with sqlite3.connect(Path(env["EHR_BACKUP_DATA_DIR"]) / "catalogue.sqlite3") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%'")]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def test_migration_to_postgresql_loses_nothing_and_refuses_a_non_empty_target(
        sqlite_env: dict[str, str], make_db: Callable[[str], str]) -> None:
    svc = BackupService(Settings.from_env(sqlite_env))
    auth = AuthService(svc.db, svc.audit, svc.settings)
    auth.add_user(ACTOR, "alice", "a-long-enough-password", admin=True)
    token = auth.create_token(ACTOR, "alice", "script")
    _, cookie = auth.login("alice", "a-long-enough-password", "10.0.0.1")
    backup = svc.create(ACTOR, description="before the move")
    svc.schedule_create(ACTOR, "nightly", cron="30 2 * * *", timezone="UTC")
    svc.db.dispose()
    before = _sqlite_counts(sqlite_env)
    assert before["backups"] == 1 and before["users"] == 1 and before["audit"] > 5

    target = make_db(f"pgmeta_{uuid.uuid4().hex[:12]}")
    done = cli(sqlite_env, "metadata", "migrate", "--to", target, "--json")
    assert done.returncode == 0, done.stderr
    after = _sqlite_counts(sqlite_env)  # the source gained the migration's own two entries
    assert after["audit"] == before["audit"] + 2
    for table, rows in before.items():
        want = rows + (2 if table == "audit" else 0)  # PG: started (copied) and ok (written there afterwards)
        assert query(target, f'SELECT count(*) FROM "{table}"') == [(want,)], table

    pg_env = {**sqlite_env, "EHR_BACKUP_METADATA_URL": target}
    moved = BackupService(Settings.from_env(pg_env))
    try:
        assert moved.audit.verify().ok
        assert [b["id"] for b in moved.list()] == [backup.id]
        pg_auth = AuthService(moved.db, moved.audit, moved.settings)
        assert pg_auth.token(token).username == "alice"  # tokens and sessions go on working
        assert pg_auth.session(cookie).username == "alice"
        bob = pg_auth.add_user(Actor("t"), "bob", "another-long-password")  # ids go on after the copied ones
        assert bob.id == 2
    finally:
        moved.db.dispose()

    again = cli(sqlite_env, "metadata", "migrate", "--to", target)
    assert again.returncode == 2 and "not empty" in again.stderr and "users: 2 rows" in again.stderr
    assert query(target, "SELECT count(*) FROM users") == [(2,)]


def test_a_copy_that_fails_midway_leaves_the_target_empty(sqlite_env: dict[str, str],
                                                          make_db: Callable[[str], str]) -> None:
    svc = BackupService(Settings.from_env(sqlite_env))
    svc.audit.record(ACTOR, "test", "x")
    svc.db.dispose()
    target = make_db(f"pgmeta_{uuid.uuid4().hex[:12]}")
    BackupService(Settings.from_env({**sqlite_env, "EHR_BACKUP_METADATA_URL": target})).db.dispose()
    # a constraint the copy breaks at the audit table, after earlier tables were copied
    run_sql(target, "DELETE FROM audit; ALTER TABLE audit ADD CONSTRAINT no_test CHECK (action <> 'test')")
    failed = cli(sqlite_env, "metadata", "migrate", "--to", target)
    assert failed.returncode == 1 and "rolled back" in failed.stderr
    assert query(target, "SELECT count(*) FROM audit") == [(0,)]
    assert query(target, "SELECT count(*) FROM app_settings") == [(0,)]
    assert "password" not in failed.stderr
