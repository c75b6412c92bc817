"""Restore safety: a bad file never reaches the database, a failed restore leaves it as it was and leaves
no half-built copy behind."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.errors import Busy, Cancelled, InvalidInput, KeyNotAvailable, NotAuthentic, ToolError
from ehr_backup.keys import generate_key
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env, query, run_sql, url_for
from .helpers import AWKWARD_SQL, dump_text, fill, precious_target
from .test_faults import _wait_for, wrapper_bin


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_a_modified_file_is_refused_and_the_database_is_untouched(
        service: BackupService, env: dict[str, str], where: float) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, AWKWARD_SQL)
    record = service.create(ACTOR, description="to tamper")
    path = Path(record.directory) / record.id
    flip(path, int(path.stat().st_size * where))
    run_sql(db, "CREATE TABLE changed_after (a int)")
    before = dump_text(db)
    with pytest.raises(NotAuthentic):
        service.restore(ACTOR, record.id)
    assert dump_text(db) == before
    assert len(service.catalogue.all()) == 1  # no safety backup either: the file was refused first
    assert copies_beside(db) == []
    with pytest.raises(NotAuthentic):
        service.verify(ACTOR, record.id)
    assert service.view(service.get(record.id))["verifyOk"] is False


def test_a_truncated_file_is_refused(service: BackupService, env: dict[str, str]) -> None:
    record = service.create(ACTOR, description="to truncate")
    path = Path(record.directory) / record.id
    path.write_bytes(path.read_bytes()[:-100])
    before = dump_text(env["DATABASE_URL"])
    with pytest.raises(NotAuthentic):
        service.restore(ACTOR, record.id)
    assert dump_text(env["DATABASE_URL"]) == before


def test_a_file_whose_key_is_not_configured_names_the_key_and_touches_nothing(
        service: BackupService, env: dict[str, str]) -> None:
    record = service.create(ACTOR, description="old key")
    other = BackupService(Settings.from_env({**env, "BACKUP_ENCRYPTION_KEY": generate_key()}))
    with pytest.raises(KeyNotAvailable) as err:
        other.restore(ACTOR, record.id)
    assert record.key_id and record.key_id in str(err.value)
    rotated = BackupService(Settings.from_env({**env, "BACKUP_ENCRYPTION_KEY": generate_key(),
                                               "BACKUP_ENCRYPTION_OLD_KEYS": env["BACKUP_ENCRYPTION_KEY"]}))
    assert rotated.verify(ACTOR, record.id)["ok"]


def copies_beside(url: str) -> list[str]:
    """Databases a restore made beside this one and left behind."""
    name = url.rsplit("/", 1)[1]
    return [r[0] for r in query(url.rsplit("/", 1)[0] + "/postgres",
                                f"SELECT datname FROM pg_database WHERE starts_with(datname, '{name}__')")]


def test_a_restore_that_fails_half_way_leaves_the_target_and_no_copy(service: BackupService, env: dict[str, str],
                                                                     make_db) -> None:
    db = env["DATABASE_URL"]
    role = "ehr_tmp_owner_" + db.rsplit("_", 1)[-1]
    run_sql(db, f"CREATE ROLE {role}; CREATE TABLE first_table (a int); INSERT INTO first_table VALUES (1);"
                f"CREATE TABLE owned (a int); ALTER TABLE owned OWNER TO {role};")
    record = service.create(ACTOR, description="needs a role")
    run_sql(db, f"DROP TABLE owned; DROP ROLE {role};")
    target, before = precious_target(make_db)
    with pytest.raises(ToolError) as err:
        service.restore(ACTOR, record.id, target_url=target, roles=False)  # the role is not brought back
    assert role in str(err.value) and "owned" in str(err.value)
    assert dump_text(target) == before
    assert copies_beside(target) == []
    steps = [e.outcome for e in service.audit.entries(action="restore")]
    assert steps[:3] == ["failed", "dropped", "building"]


def test_cancelling_a_restore_leaves_the_database_as_it_was(service: BackupService, env: dict[str, str],
                                                            make_db) -> None:
    fill(env["DATABASE_URL"], 300000, 6)
    record = service.create(ACTOR, description="big enough")
    target, before = precious_target(make_db)
    task = service.prepare_restore(ACTOR, record.id, target_url=target)
    # once loading has read something (its count starts from zero: the file's authentication is another step)
    threading.Thread(target=lambda: (_wait_for(lambda: task.progress.phase == "loading"
                                               and task.progress.bytes_read > 0),
                                     task.cancel.set())).start()
    with pytest.raises(Cancelled):
        task.run()
    assert dump_text(target) == before
    assert copies_beside(target) == []


def test_if_the_safety_backup_fails_a_recreate_restore_does_not_start(tmp_path: Path, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, "CREATE TABLE t (a int); INSERT INTO t VALUES (1);")
    good = BackupService(Settings.from_env(env)).create(ACTOR, description="good")
    run_sql(db, "INSERT INTO t VALUES (2);")
    before = dump_text(db)
    broken = BackupService(Settings.from_env({**env, "EHR_BACKUP_PG_BIN": wrapper_bin(tmp_path, "exit 1")}))
    with pytest.raises(ToolError):
        broken.restore(ACTOR, good.id, mode="recreate")
    assert dump_text(db) == before


def test_a_second_backup_or_restore_of_the_same_database_is_busy(service: BackupService,
                                                                 env: dict[str, str]) -> None:
    record = service.create(ACTOR, description="first")
    holding = service.prepare_create(ACTOR, description="running")
    try:
        with pytest.raises(Busy) as err:
            service.prepare_create(ACTOR, description="second")
        assert "busy" in str(err.value)
        with pytest.raises(Busy):
            service.prepare_restore(ACTOR, record.id)
        res = subprocess.run([sys.executable, "-m", "ehr_backup.cli", "create", "--description", "from cli"],
                             env=cli_env(env), capture_output=True, text=True)
        assert res.returncode != 0 and "busy" in res.stderr and res.stderr.count("\n") == 1
    finally:
        holding.run()
    assert service.create(ACTOR, description="after").status == "completed"


def test_restore_reports_row_counts_compared_with_the_backup(service: BackupService, env: dict[str, str],
                                                              make_db) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE a AS SELECT generate_series(1, 10) g; CREATE TABLE b (x int);")
    record = service.create(ACTOR, description="counts")
    report = service.restore(ACTOR, record.id, target_url=make_db()).as_dict()
    assert report["rowCountsMatch"] is True
    assert report["tables"] == {"public.a": {"expected": 10, "loaded": 10, "actual": 10},
                                "public.b": {"expected": 0, "loaded": 0, "actual": 0}}


def test_restore_creates_a_missing_target_database(service: BackupService, env: dict[str, str], make_db) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE a AS SELECT generate_series(1, 3) g;")
    record = service.create(ACTOR, description="new db")
    url = make_db()
    run_sql(url.rsplit("/", 1)[0] + "/postgres", f'DROP DATABASE "{url.rsplit("/", 1)[1]}"')
    assert service.restore(ACTOR, record.id, target_url=url).ok


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_the_restoring_process_killed_half_way_leaves_the_target_and_start_up_drops_the_copy(
        service: BackupService, env: dict[str, str], make_db, sig: str) -> None:
    import os
    import signal
    import time

    fill(env["DATABASE_URL"], 600000, 4)
    record = service.create(ACTOR, description="big restore")
    target, before = precious_target(make_db)
    proc = subprocess.Popen([sys.executable, "-m", "ehr_backup.cli", "restore", record.id, "--target-url", target,
                             "--yes"], env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dbname = target.rsplit("/", 1)[1]
    admin = target.rsplit("/", 1)[0] + "/postgres"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until rows are loading into the copy
        rows = query(admin, f"SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, '{dbname}__restore_')"
                            " AND query ILIKE 'COPY%'")
        if rows[0][0]:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the restore never reached COPY")
    os.kill(proc.pid, getattr(signal, f"SIG{sig}"))  # the Python process only
    proc.wait(timeout=30)
    assert dump_text(target) == before
    service.reconcile()  # the next start-up drops the unfinished copy and records that the restore stopped
    deadline = time.monotonic() + 30
    while copies_beside(target) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert copies_beside(target) == []
    assert dump_text(target) == before
    outcomes = [e.outcome for e in service.audit.entries(action="restore")]
    assert outcomes[0] == "interrupted"
    dropped = service.audit.entries(action="restore.drop-previous")
    assert dropped[0].outcome == "ok" and "never swapped in" in dropped[0].detail
    assert dropped[0].target.startswith(dbname + "__restore_")


def test_a_catalogued_file_swapped_for_another_authentic_backup_is_refused(service: BackupService,
                                                                           env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, "CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2);")
    older = service.create(ACTOR, description="older")
    run_sql(db, "INSERT INTO t VALUES (3);")
    newer = service.create(ACTOR, description="newer")
    (Path(newer.directory) / newer.id).write_bytes((Path(older.directory) / older.id).read_bytes())
    before = dump_text(db)
    for op in (lambda: service.restore(ACTOR, newer.id), lambda: service.verify(ACTOR, newer.id)):
        with pytest.raises(InvalidInput) as err:
            op()
        assert "replaced" in str(err.value) or "swapped" in str(err.value)
    assert dump_text(db) == before


def test_another_address_for_the_same_database_is_still_busy_and_still_kept_for_rollback(
        service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    assert "127.0.0.1" in db
    other_address = db.replace("127.0.0.1", "localhost")
    run_sql(db, "CREATE TABLE t (a int); INSERT INTO t VALUES (1);")
    record = service.create(ACTOR, description="base")
    holding = service.prepare_create(ACTOR, description="running")
    try:
        with pytest.raises(Busy):
            service.prepare_restore(ACTOR, record.id, target_url=other_address)
    finally:
        holding.run()
    report = service.restore(ACTOR, record.id, target_url=other_address)
    assert report.outcome.previous is not None and report.safety_backup is None


def test_restoring_into_another_non_empty_database_keeps_it_for_rollback(service: BackupService,
                                                                         env: dict[str, str], make_db) -> None:
    record = service.create(ACTOR, description="source")
    target = make_db()
    run_sql(target, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep me');")
    report = service.restore(ACTOR, record.id, target_url=target)
    previous = report.outcome.previous
    assert previous and query(url_for(previous), "SELECT v FROM precious") == [("keep me",)]
    assert query(target, "SELECT count(*) FROM pg_class WHERE relname = 'precious'") == [(0,)]
    empty = make_db()
    run_sql(empty.rsplit("/", 1)[0] + "/postgres", f'DROP DATABASE "{empty.rsplit("/", 1)[1]}"')
    assert service.restore(ACTOR, record.id, target_url=empty).outcome.previous is None
    assert copies_beside(empty) == []


@pytest.mark.parametrize("name", ["postgres", "template1"])
def test_system_databases_are_refused_as_targets(service: BackupService, name: str) -> None:
    record = service.create(ACTOR, description="x")
    with pytest.raises(InvalidInput) as err:
        service.restore(ACTOR, record.id, target_database=name)
    assert "system database" in str(err.value)


def test_a_restore_that_dies_right_after_the_swap_leaves_the_previous_database_kept_for_rollback(
        service: BackupService, env: dict[str, str], make_db, monkeypatch: pytest.MonkeyPatch) -> None:
    from ehr_backup.restore import run

    record = service.create(ACTOR, description="source")
    target = make_db()
    run_sql(target, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep me');")

    def die(*_args: object) -> list[str]:
        raise SystemExit("killed")  # the process ends between the committed swap and the bookkeeping after it

    monkeypatch.setattr(run, "_set_aside", die)
    with pytest.raises(SystemExit):
        service.restore(ACTOR, record.id, target_url=target)
    monkeypatch.undo()
    [previous] = copies_beside(target)
    assert "__before_" in previous and service.kept_databases() == []  # not offered until settled
    service.reconcile()
    kept = service.kept_databases()
    assert [(k["name"], k["kind"]) for k in kept] == [(previous, "previous")]
    assert service.restores.kept.live(kind="building") == []
    result = service.rollback(ACTOR, target.rsplit("/", 1)[1])
    assert result["restoredFrom"] == previous
    assert query(target, "SELECT v FROM precious") == [("keep me",)]


def test_start_up_forgets_kept_databases_that_are_gone_and_spares_those_being_worked_on(
        service: BackupService, env: dict[str, str], make_db) -> None:
    from ehr_backup import pg
    from ehr_backup.restore.kept import BUILDING, PREVIOUS, lock_key

    target = make_db()
    info = service.connection()
    server = pg.server_identity(info)
    dbname = target.rsplit("/", 1)[1]
    gone = service.restores.kept.add(server=server, display="x", name=dbname + "__before_gone", original=dbname,
                                     kind=PREVIOUS)
    busy = service.restores.kept.add(server=server, display="x", name=dbname, original=dbname, kind=BUILDING)
    held = service._job_lock(lock_key(server, dbname)).acquire("a restore elsewhere")
    try:
        service.reconcile()
    finally:
        held.release()
    live = {r.id for r in service.restores.kept.live()}
    assert gone.id not in live and busy.id in live  # the one being built is left alone, and not dropped
    assert query(target, "SELECT 1") == [(1,)]
