"""Pipeline faults: a failed, killed or unreachable dump, a full or read-only disk, a crash, a cancel.

Each test names what must not be lost: older backups stay intact, nothing that looks like a backup
is left behind, and the database is untouched.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.errors import Cancelled, DatabaseUnavailable, StorageError, ToolError
from ehr_backup.models import Status
from ehr_backup.service import BackupService
from ehr_backup.storage import TEMP_PREFIX

from .conftest import ACTOR, cli_env, run_sql

REAL_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]


def files_in(directory: Path) -> list[str]:
    """Backup and temporary files (not the verification records beside verified backups)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".verified")) \
        if directory.exists() else []


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wrapper_bin(tmp_path: Path, body: str) -> str:
    """A directory whose pg_dump is a script around the real one (version queries pass through)."""
    d = tmp_path / "fakebin"
    d.mkdir(exist_ok=True)
    script = d / "pg_dump"
    script.write_text(f"#!/bin/bash\nREAL={REAL_BIN}/pg_dump\n"
                      f'if [ "$1" = "--version" ]; then exec $REAL --version; fi\n{body}\n')
    script.chmod(0o755)
    return str(d)


def service_with(env: dict[str, str], **extra: str) -> BackupService:
    return BackupService(Settings.from_env({**env, **extra}))


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[callable]:
    """Mount small tmpfs file systems (skips where mounting is not permitted)."""
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        # mode=0700: a tmpfs is 1777 by default, and backups never go where other users can write
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(target)],
                             capture_output=True)
        if res.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounts.append(target)
        return target

    yield mount
    for m in mounts:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


@pytest.mark.parametrize("body,reason", [
    ('$REAL "$@" | head -c 30000; exit 0', "completion marker"),
    ('$REAL "$@" | head -c 30000; kill -KILL $$', "pg_dump failed"),
    ('echo "pg_dump: error: connection failed: password=hunter2secret" >&2; exit 1', "pg_dump failed"),
])
def test_a_dump_that_is_cut_short_killed_or_fails_leaves_no_backup_and_older_ones_intact(
        tmp_path: Path, env: dict[str, str], body: str, reason: str) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g;")
    good = service_with(env).create(ACTOR, description="good one")
    good_path = Path(good.directory) / good.id
    good_sha = sha(good_path)
    svc = service_with(env, EHR_BACKUP_PG_BIN=wrapper_bin(tmp_path, body))
    with pytest.raises(ToolError) as err:
        svc.create(ACTOR, description="doomed")
    assert reason in str(err.value)
    assert "hunter2secret" not in str(err.value)
    assert files_in(good_path.parent) == [good.id] and sha(good_path) == good_sha
    failed = [r for r in svc.catalogue.all() if r.description == "doomed"][0]
    assert failed.status == Status.FAILED and reason in (failed.error or "")
    assert svc.audit.entries(limit=1)[0].outcome == "failed"


def test_server_killed_mid_backup_fails_the_job_and_leaves_nothing(cluster, env: dict[str, str]) -> None:
    run_sql(cluster.url(), "CREATE DATABASE big")
    run_sql(cluster.url("big"), "CREATE TABLE t AS SELECT g, repeat(md5(g::text), 4) AS s "
                                "FROM generate_series(1, 600000) g;")
    svc = service_with(env, DATABASE_URL=cluster.url("big"))
    task = svc.prepare_create(ACTOR, description="server dies")
    killer = threading.Thread(target=lambda: (_wait_for(lambda: task.progress.bytes_read > 2_000_000),
                                              cluster.stop("immediate")))
    killer.start()
    with pytest.raises(ToolError):
        task.run()
    killer.join()
    record = svc.get(task.backup_id or "")
    assert record.status == Status.FAILED and record.error
    assert files_in(Path(env["EHR_BACKUP_DEFAULT_DIR"])) == []


def _wait_for(cond, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError
        time.sleep(0.005)


def test_unreachable_database_fails_with_the_reason_and_no_password(env: dict[str, str]) -> None:
    svc = service_with(env, DATABASE_URL="postgresql://someone:TopSecretPw99@127.0.0.1:1/clinic")
    with pytest.raises(DatabaseUnavailable) as err:
        svc.create(ACTOR, description="no server")
    assert "TopSecretPw99" not in str(err.value) and "127.0.0.1" in str(err.value)
    record = svc.catalogue.all()[0]
    assert record.status == Status.FAILED and record.step == "connecting"
    assert "TopSecretPw99" not in (record.error or "")
    assert all("TopSecretPw99" not in (e.detail + e.target) for e in svc.audit.entries())
    assert files_in(Path(env["EHR_BACKUP_DEFAULT_DIR"])) == []


def test_a_login_the_server_refuses_fails_the_backup(env: dict[str, str]) -> None:
    url = env["DATABASE_URL"].replace("postgres@", "no_such_role_x@")
    svc = service_with(env, DATABASE_URL=url)
    with pytest.raises(DatabaseUnavailable) as err:
        svc.create(ACTOR, description="bad login")
    assert "no_such_role_x" in str(err.value)


def test_a_disk_that_fills_up_mid_backup_fails_the_job_and_removes_the_partial_file(
        env: dict[str, str], mounted) -> None:
    disk = mounted("small", "size=40m")
    svc = service_with(env)
    older = svc.create(ACTOR, description="older", location="custom", custom_path=str(disk))
    older_sha = sha(disk / older.id)
    run_sql(env["DATABASE_URL"], "CREATE TABLE r AS SELECT g, md5(random()::text) || md5(random()::text) AS b "
            "FROM generate_series(1, 400000) g;")
    task = svc.prepare_create(ACTOR, description="fills the disk", location="custom", custom_path=str(disk))

    def fill() -> None:
        _wait_for(lambda: task.progress.phase == "dumping")
        try:
            with open(disk / "filler", "wb") as fh:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        except OSError:
            pass  # full: the backup's next write fails

    filler = threading.Thread(target=fill)
    filler.start()
    with pytest.raises(StorageError) as err:
        task.run()
    filler.join()
    assert "space" in str(err.value).lower()
    (disk / "filler").unlink()
    assert files_in(disk) == [older.id] and sha(disk / older.id) == older_sha
    assert svc.get(task.backup_id or "").status == Status.FAILED


def test_too_little_free_space_is_refused_before_starting(env: dict[str, str], mounted) -> None:
    disk = mounted("tiny", "size=1m")
    with pytest.raises(StorageError) as err:
        service_with(env).create(ACTOR, description="too big", location="custom", custom_path=str(disk))
    assert "not enough free space" in str(err.value)
    assert files_in(disk) == []


def test_a_read_only_location_is_refused(env: dict[str, str], mounted) -> None:
    disk = mounted("ro", "size=1m,ro")
    with pytest.raises(StorageError) as err:
        service_with(env).create(ACTOR, description="ro", location="custom", custom_path=str(disk))
    assert "not writable" in str(err.value)


def test_cancelling_a_backup_leaves_nothing(env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g, repeat(md5(g::text), 8) s "
                                 "FROM generate_series(1, 300000) g;")
    svc = service_with(env)
    task = svc.prepare_create(ACTOR, description="cancel me")
    threading.Thread(target=lambda: (_wait_for(lambda: task.progress.bytes_read > 1_000_000),
                                     task.cancel.set())).start()
    with pytest.raises(Cancelled):
        task.run()
    assert svc.get(task.backup_id or "").status == Status.CANCELLED
    assert files_in(Path(env["EHR_BACKUP_DEFAULT_DIR"])) == []


def test_a_process_killed_mid_backup_is_reconciled_at_the_next_start(tmp_path: Path, env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g;")
    slow = wrapper_bin(tmp_path, '$REAL "$@" | (head -c 100000; sleep 60; cat)')
    proc = subprocess.Popen([sys.executable, "-m", "ehr_backup.cli", "create", "--description", "crash"],
                            env=cli_env({**env, "EHR_BACKUP_PG_BIN": slow}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    backups = Path(env["EHR_BACKUP_DEFAULT_DIR"])
    _wait_for(lambda: any(n.startswith(TEMP_PREFIX) for n in files_in(backups)), timeout=30)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    svc = service_with(env)
    assert svc.catalogue.all()[0].status == Status.RUNNING  # as the crash left it
    report = svc.reconcile()
    assert report["removedTemporaryFiles"] == 1 and len(report["failed"]) == 1
    record = svc.catalogue.all()[0]
    assert record.status == Status.FAILED and "interrupted" in (record.error or "")
    assert files_in(backups) == []


def test_start_up_elsewhere_does_not_fail_a_backup_that_is_still_running(env: dict[str, str]) -> None:
    svc = service_with(env)
    task = svc.prepare_create(ACTOR, description="alive")  # holds its job lock, as a running job does
    other = service_with(env)  # e.g. a CLI command started while the web app works
    report = other.reconcile()
    assert report["failed"] == [] and other.get(task.backup_id or "").status == Status.RUNNING
    assert task.run().status == Status.COMPLETED
