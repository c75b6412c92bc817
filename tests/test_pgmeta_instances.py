"""Several instances on one PostgreSQL metadata database: a due run happens once, the audit chain stays one."""

from __future__ import annotations

import itertools
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env, query, run_sql

ROOT = Path(__file__).parent.parent


@pytest.fixture
def pg_env(env: dict[str, str], make_db: Callable[[str], str]) -> dict[str, str]:
    return {**env, "EHR_BACKUP_METADATA_URL": make_db(f"pgmeta_{uuid.uuid4().hex[:12]}")}


def _instances(pg_env: dict[str, str], tmp_path: Path, script: str, n: int) -> list[str]:
    """Run `script` in n processes, each an instance with its own data directory, started together."""
    path = tmp_path / "instance.py"
    path.write_text(script)
    procs = []
    for i in range(n):
        own = {**pg_env, "EHR_BACKUP_DATA_DIR": str(tmp_path / f"instance{i}")}
        procs.append(subprocess.Popen([sys.executable, str(path), str(i)], env=cli_env(own), cwd=ROOT,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate("go\n", timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return [o for o, _ in outs]


PRELUDE = ("import sys\nfrom datetime import datetime, UTC\nfrom ehr_backup.config import Settings\n"
           "from ehr_backup.service import BackupService\nfrom ehr_backup.scheduler import Scheduler\n"
           "from ehr_backup.audit import Actor\n"
           "svc = BackupService(Settings.from_env())\n"
           "sys.stdin.readline()  # start together\n")


def test_a_due_run_happens_once_across_instances(pg_env: dict[str, str], tmp_path: Path) -> None:
    svc = BackupService(Settings.from_env(pg_env))
    try:
        svc.schedule_create(ACTOR, "nightly", cron="30 2 * * *", timezone="UTC", description="Nightly {date}")
        svc.db.dispose()
        meta = pg_env["EHR_BACKUP_METADATA_URL"]
        run_sql(meta, "UPDATE schedules SET fired_until = '2026-11-30 00:00+00'")
        outs = _instances(pg_env, tmp_path, PRELUDE + (
            "started = Scheduler(svc, clock=lambda: datetime(2026, 11, 30, 2, 30, 10, tzinfo=UTC)).tick()\n"
            "print(len(started))\n"), 3)
        assert sorted(int(o.strip()) for o in outs) == [0, 0, 1]
        assert query(meta, "SELECT status FROM schedule_runs") == [("succeeded",)]
        assert query(meta, "SELECT count(*) FROM backups WHERE kind = 'scheduled' AND status = 'completed'") \
            == [(1,)]
        assert query(meta, "SELECT count(*) FROM lock_holders") == [(0,)]  # every lock given back
    finally:
        svc.db.dispose()


def test_the_audit_chain_stays_one_chain_under_writers_in_four_processes(pg_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    svc = BackupService(Settings.from_env(pg_env))
    try:
        _instances(pg_env, tmp_path, PRELUDE + (
            "for i in range(60):\n"
            "    svc.audit.record(Actor(f'instance{sys.argv[1]}', '127.0.0.1'), 'test.write', str(i))\n"), 4)
        meta = pg_env["EHR_BACKUP_METADATA_URL"]
        rows = query(meta, "SELECT seq, prev_hash, hash FROM audit ORDER BY seq")
        writes = [r for r in query(meta, "SELECT actor FROM audit WHERE action = 'test.write'")]
        assert len(writes) == 240
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # no gap, no duplicate
        assert all(b[1] == a[2] for a, b in itertools.pairwise(rows))  # each links to the one before
        assert len({r[1] for r in rows}) == len(rows)  # no fork: no entry is the parent of two
        report = svc.audit.verify()
        assert report.ok, report
    finally:
        svc.db.dispose()
