"""Restore drills: a backup restored into a scratch database, compared with its record, checked, and the
scratch database always dropped, with an evidence report whose hashes are in the audit chain."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.drill_report import ReportAltered
from ehr_backup.drills import DrillFailed
from ehr_backup.errors import Busy, InvalidInput
from ehr_backup.fileformat import EncryptedWriter, OpenedFile
from ehr_backup.service import BackupService

from .conftest import ACTOR, ADMIN_URL, cli_env, query, run_sql
from .helpers import fill

TABLES = """CREATE TABLE patients (id int PRIMARY KEY, name text);
    INSERT INTO patients SELECT g, 'p' || g FROM generate_series(1, 25) g;
    CREATE TABLE notes (id int, body text); INSERT INTO notes SELECT g, 'n' FROM generate_series(1, 7) g;"""


def drill_dbs(database: str) -> list[str]:
    """Scratch databases of drills of this database still on the server."""
    return [r[0] for r in query(ADMIN_URL, "SELECT datname FROM pg_database WHERE starts_with(datname, "
                                           f"'{database}__drill_')")]


def reseal(service: BackupService, record_id: str, change) -> None:
    """Re-encrypt a backup with the valid key but an altered trailer, and make the catalogue agree with it
    (a backup whose recorded counts were doctored when it was made)."""
    record = service.get(record_id)
    path = Path(record.directory) / record.id
    with open(path, "rb") as fh:
        opened = OpenedFile(fh, service.keyring())
        trailer = opened.authenticate()
        body = b"".join(opened.decrypt())
        crypto = ("format", "cipher", "mac", "kdf", "keyDerivation", "keyId", "salt", "iv")
        fields = {k: v for k, v in opened.header.fields.items() if k not in crypto}
    out = io.BytesIO()
    writer = EncryptedWriter(out, service.keyring().encryption_key(), fields)
    writer.write(body)
    trailer.pop("segments", None)
    change(trailer)
    writer.finish(trailer)
    data = out.getvalue()
    path.write_bytes(data)
    service.catalogue.update(record.id, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                             table_counts=json.dumps(trailer["tableRowCounts"]))


def test_a_drill_of_a_good_backup_passes_records_its_times_and_drops_the_scratch_database(
        service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, TABLES)
    record = service.create(ACTOR, description="to drill")
    service.drill_check_add(ACTOR, "patients", "SELECT count(*) FROM patients WHERE id > 5", expect="20")
    service.drill_check_add(ACTOR, "live-names", "SELECT string_agg(name, ',' ORDER BY id) FROM patients",
                            compare_live=True)
    result = service.drill(ACTOR, record.id)
    assert result["outcome"] == "passed", result["message"]
    assert result["tables"]["public.patients"] == {"expected": 25, "restored": 25, "ok": True}
    assert result["tables"]["public.notes"]["restored"] == 7
    assert [c["passed"] for c in result["checks"]] == [True, True]
    assert set(result["phases"]) == {"authenticate", "load", "check"}
    assert result["recoverySeconds"] == pytest.approx(sum(result["phases"].values()), abs=0.01)
    assert result["scratchDatabase"].startswith(db.rsplit("/", 1)[1] + "__drill_")
    assert drill_dbs(db.rsplit("/", 1)[1]) == []
    view = service.view(service.get(record.id))
    assert view["lastDrill"]["outcome"] == "passed"
    assert view["lastDrill"]["recoverySeconds"] == result["recoverySeconds"]
    [latest] = service.drills.latest()
    assert latest["database"] == record.database and latest["outcome"] == "passed"
    assert latest["backupId"] == record.id and latest["at"].endswith("Z")
    audit = service.audit.entries(action="drill")
    assert [e.outcome for e in audit[:2]] == ["ok", "started"]


def test_the_report_pdf_and_json_are_written_and_their_hashes_are_in_the_audit_chain(
        service: BackupService, env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], TABLES)
    record = service.create(ACTOR, description="evidence")
    result = service.drill(ACTOR, record.id)
    pdf, js = Path(result["report"]["pdf"]), Path(result["report"]["json"])
    assert pdf.read_bytes().startswith(b"%PDF")
    assert pdf.parent == Path(env["EHR_BACKUP_DATA_DIR"]).resolve() / "drill-reports"
    assert oct(pdf.stat().st_mode & 0o777) == "0o600"
    report = json.loads(js.read_bytes())
    assert report["backup"]["id"] == record.id and report["backup"]["sha256"] == record.sha256
    assert report["backup"]["createdBy"] == ACTOR.name and report["app"]["version"]
    assert report["server"]["version"] and report["backup"]["pgDumpVersion"]
    assert report["tables"]["public.patients"]["expected"] == 25
    detail = service.audit.entries(action="drill")[0].detail
    assert hashlib.sha256(js.read_bytes()).hexdigest() in detail
    assert hashlib.sha256(pdf.read_bytes()).hexdigest() in detail
    for path in (js, pdf):
        assert service.verify_drill_report(ACTOR, path)["ok"]
    altered = js.with_name("altered.json")
    altered.write_bytes(js.read_bytes().replace(b'"passed"', b'"failed"', 1))
    with pytest.raises(ReportAltered) as err:
        service.verify_drill_report(ACTOR, altered)
    assert "not in the audit log" in err.value.message
    assert service.verify_audit().ok


def test_a_backup_whose_recorded_counts_were_doctored_fails_its_drill(service: BackupService,
                                                                      env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, TABLES)
    record = service.create(ACTOR, description="doctored")
    reseal(service, record.id, lambda t: t["tableRowCounts"].update({"public.patients": 99}))
    with open(Path(record.directory) / record.id, "rb") as fh:  # the file itself is authentic
        assert OpenedFile(fh, service.keyring()).authenticate()["tableRowCounts"]["public.patients"] == 99
    with pytest.raises(DrillFailed) as err:
        service.drill(ACTOR, record.id)
    result = err.value.report
    assert result["outcome"] == "failed"
    assert result["tables"]["public.patients"] == {"expected": 99, "restored": 25, "ok": False}
    assert result["tables"]["public.notes"]["ok"]
    assert "public.patients" in result["message"]
    assert drill_dbs(db.rsplit("/", 1)[1]) == []
    assert service.view(service.get(record.id))["lastDrill"]["outcome"] == "failed"
    assert service.audit.entries(action="drill")[0].outcome == "failed"
    assert Path(result["report"]["pdf"]).read_bytes().startswith(b"%PDF")


def test_a_failing_check_query_fails_the_drill_and_checks_cannot_write(service: BackupService,
                                                                       env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, TABLES)
    record = service.create(ACTOR, description="checked")
    service.drill_check_add(ACTOR, "too-many", "SELECT count(*) FROM patients", expect="26")
    service.drill_check_add(ACTOR, "sneaky", "WITH gone AS (DELETE FROM patients RETURNING 1) SELECT count(*) "
                                             "FROM gone", expect="0")
    with pytest.raises(DrillFailed) as err:
        service.drill(ACTOR, record.id)
    checks = {c["name"]: c for c in err.value.report["checks"]}
    assert checks["too-many"]["actual"] == "25" and not checks["too-many"]["passed"]
    assert "read-only" in checks["sneaky"]["error"]
    assert "2 of 2 checks failed" in err.value.report["message"]


@pytest.mark.parametrize("sql", ["DELETE FROM patients", "SELECT 1; DROP TABLE patients", "", "x" * 5000])
def test_check_queries_must_be_one_select(service: BackupService, sql: str) -> None:
    with pytest.raises(InvalidInput):
        service.drill_check_add(ACTOR, "bad", sql, expect="1")
    assert service.drill_checks() == []


def test_a_second_statement_never_runs_even_past_the_text_check(service: BackupService, env: dict[str, str]) -> None:
    from ehr_backup.drill_checks import run_query
    from ehr_backup.pg import ConnInfo
    db = env["DATABASE_URL"]
    run_sql(db, "CREATE TABLE t (a int)")
    with pytest.raises(InvalidInput):
        run_query(ConnInfo.parse(db), "SELECT 1; COMMIT; DROP TABLE t", 5)
    assert query(db, "SELECT count(*) FROM t") == [(0,)]
    with pytest.raises(InvalidInput) as err:
        run_query(ConnInfo.parse(db), "SELECT pg_sleep(3)", 1)
    assert "timeout" in err.value.message


def test_only_one_drill_per_server_at_a_time(service: BackupService, env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], TABLES)
    record = service.create(ACTOR, description="busy")
    task = service.prepare_drill(ACTOR, record.id)
    try:
        with pytest.raises(Busy):
            service.prepare_drill(ACTOR, record.id)
    finally:
        task.run()
    assert service.drill(ACTOR, record.id)["outcome"] == "passed"


def test_a_drill_killed_while_loading_leaves_no_scratch_database_after_the_next_start(
        service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    name = db.rsplit("/", 1)[1]
    fill(db, 600000, 4)
    record = service.create(ACTOR, description="big drill")
    proc = subprocess.Popen([sys.executable, "-m", "ehr_backup.cli", "drill", record.id], env=cli_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until rows are loading into the scratch database
        rows = query(ADMIN_URL, f"SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, '{name}__drill_')"
                                " AND query ILIKE 'COPY%'")
        if rows[0][0]:
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"the drill never reached COPY: {proc.communicate(timeout=30)}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert drill_dbs(name)  # left behind by the killed process
    again = BackupService(Settings.from_env(env))
    try:
        assert again.reconcile()["droppedDrillDatabases"] == 1
    finally:
        again.db.dispose()
    assert drill_dbs(name) == []
    [row] = service.drill_list()
    assert row["outcome"] == "failed" and "interrupted" in row["message"] and row["scratchDropped"]
    assert service.audit.entries(action="drill")[0].outcome == "failed"
    assert service.audit.entries(action="drill.drop-scratch")[0].outcome == "ok"


def test_the_default_weekly_drill_schedule_is_made_once_and_stays_removed(env: dict[str, str]) -> None:
    service = BackupService(Settings.from_env({**env, "EHR_BACKUP_DRILL_SCHEDULE": ""}))
    assert service.drills.ensure_default_schedule()
    [s] = service.schedule_list()
    assert (s["name"], s["kind"], s["cron"]) == ("weekly-drill", "drill", "0 5 * * 0")
    service.schedule_remove(ACTOR, "weekly-drill")
    assert not service.drills.ensure_default_schedule()
    assert service.schedule_list() == []


def test_a_scheduled_drill_takes_the_newest_verified_backup_of_each_database(service: BackupService,
                                                                            env: dict[str, str]) -> None:
    from ehr_backup.scheduler import Scheduler
    run_sql(env["DATABASE_URL"], TABLES)
    service.create(ACTOR, description="older")
    newest = service.create(ACTOR, description="newest")
    service.schedule_create(ACTOR, "drills", kind="drill", cron="0 5 * * 0", description="x")
    started = Scheduler(service).run_now(ACTOR, "drills")
    assert started.task is not None
    [run] = service.schedule_get("drills")["runs"]
    assert run["status"] == "succeeded", run["message"]
    assert [d["backupId"] for d in service.drill_list()] == [newest.id]


def test_the_drill_command_prints_json_exits_1_on_failure_and_verifies_reports(service: BackupService,
                                                                              env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], TABLES)
    record = service.create(ACTOR, description="cli drill")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *args], env=cli_env(env), text=True,
                              capture_output=True, timeout=300, check=False)

    added = cli("drill", "check", "add", "count", "--sql", "SELECT count(*) FROM notes", "--expect", "7")
    assert added.returncode == 0, added.stderr
    assert cli("drill", "check", "add", "x", "--sql", "SELECT 1").returncode == 2  # neither --expect nor live
    assert "count: SELECT count(*) FROM notes" in cli("drill", "check", "list").stdout
    ok = cli("drill", record.id, "--json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["outcome"] == "passed" and result["recoverySeconds"] > 0
    assert result["tables"]["public.patients"] == {"expected": 25, "restored": 25, "ok": True}
    assert Path(result["report"]["pdf"]).is_file() and Path(result["report"]["json"]).is_file()
    checked = cli("drill", "verify-report", result["report"]["pdf"])
    assert checked.returncode == 0 and "ok" in checked.stdout
    altered = Path(result["report"]["pdf"]).with_name("copy.pdf")
    altered.write_bytes(Path(result["report"]["pdf"]).read_bytes() + b"\n% appended\n")
    refused = cli("drill", "verify-report", str(altered))
    assert refused.returncode == 1 and "altered" in refused.stderr
    assert cli("drill", "check", "remove", "count").returncode == 0
    assert cli("drill", "check", "add", "count", "--sql", "SELECT count(*) FROM notes", "--expect", "8").returncode == 0
    failed = cli("drill", record.id)
    assert failed.returncode == 1 and "FAILED" in failed.stdout and "checks failed" in failed.stderr
    listed = json.loads(cli("drill", "list", "--json").stdout)["drills"]
    assert [d["outcome"] for d in listed] == ["failed", "passed"]


def test_a_drill_can_run_on_a_separate_drill_server(env: dict[str, str], cluster) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, TABLES)
    svc = BackupService(Settings.from_env({**env, "EHR_BACKUP_DRILL_URL": cluster.url()}))
    try:
        record = svc.create(ACTOR, description="elsewhere")
        result = svc.drill(ACTOR, record.id)
        assert result["outcome"] == "passed", result["message"]
        assert json.loads(Path(result["report"]["json"]).read_bytes())["server"]["display"].endswith(
            f":{cluster.port}")
        assert query(cluster.url(), "SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_\\_drill\\_%'") == [(0,)]
        assert drill_dbs(db.rsplit("/", 1)[1]) == []
    finally:
        svc.db.dispose()


def test_metrics_and_alerts_read_the_real_drills(service: BackupService, env: dict[str, str]) -> None:
    from ehr_backup import metrics

    from .test_metrics import parse, value
    run_sql(env["DATABASE_URL"], TABLES)
    good = service.create(ACTOR, description="good")
    passed = service.drill(ACTOR, good.id)
    s = parse(metrics.render(metrics.make_registry(service, list)).decode())
    assert value(s, "ehr_backup_last_drill_success", database=good.database) == 1
    assert value(s, "ehr_backup_last_drill_recovery_seconds", database=good.database) == passed["recoverySeconds"]
    bad = service.create(ACTOR, description="bad")
    reseal(service, bad.id, lambda t: t["tableRowCounts"].update({"public.notes": 1}))
    with pytest.raises(DrillFailed):
        service.drill(ACTOR, bad.id)
    s = parse(metrics.render(metrics.make_registry(service, list)).decode())
    assert value(s, "ehr_backup_last_drill_success", database=good.database) == 0
    [latest] = service.drills.latest()
    assert latest["backupId"] == bad.id and "public.notes" in latest["message"]


def other_cluster_backup(env: dict[str, str], cluster, owner: str, shared: str) -> str:
    """A backup, in this installation's catalogue, of a database of another cluster whose owner is a
    login superuser with a password there, and whose table is granted to a role the main server has too."""
    run_sql(cluster.url(), f"CREATE ROLE {owner} SUPERUSER LOGIN PASSWORD 'other-cluster-secret'; "
                           f"CREATE ROLE {shared} NOLOGIN")
    run_sql(cluster.url(), f"CREATE DATABASE otherdb OWNER {owner}")
    run_sql(cluster.url("otherdb"), f"SET ROLE {owner}; {TABLES} GRANT SELECT ON patients TO {shared}")
    other = BackupService(Settings.from_env({**env, "DATABASE_URL": cluster.url("otherdb")}))
    try:
        return other.create(ACTOR, description="of another cluster").id
    finally:
        other.db.dispose()


def roles_named(*names: str) -> list[tuple]:
    return query(ADMIN_URL, "SELECT rolname, rolcanlogin, rolsuper, rolpassword IS NULL FROM pg_authid "
                            f"WHERE rolname IN ({', '.join(repr(n) for n in names)}) ORDER BY rolname")


def test_a_drill_of_another_clusters_backup_leaves_no_role_behind_and_never_a_login_one(
        service: BackupService, env: dict[str, str], cluster) -> None:
    token = os.urandom(4).hex()
    owner, shared = f"drill_owner_{token}", f"drill_shared_{token}"
    run_sql(ADMIN_URL, f"CREATE ROLE {shared} NOLOGIN")  # existed on the drill server before: never dropped
    try:
        backup_id = other_cluster_backup(env, cluster, owner, shared)
        result = service.drill(ACTOR, backup_id)
        assert result["outcome"] == "passed", result["message"]
        assert roles_named(owner, shared) == [(shared, False, False, True)]
        notes = json.loads(Path(result["report"]["json"]).read_bytes())["notes"]
        assert any(owner in n and "NOLOGIN" in n for n in notes) and f"role {owner} was dropped" in notes
        assert not any(shared in n for n in notes)
        assert query(ADMIN_URL, "SELECT count(*) FROM pg_database WHERE datname LIKE 'otherdb\\_\\_drill\\_%'") == [(0,)]
    finally:
        run_sql(ADMIN_URL, f"DROP ROLE IF EXISTS {owner}; DROP ROLE IF EXISTS {shared}")


CRASH = """import os, sys
from ehr_backup import drills
from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.service import BackupService
drills.load = lambda *a, **k: os._exit(9)  # the process dies once the scratch database and roles exist
BackupService(Settings.from_env(os.environ)).drill(Actor("crash"), sys.argv[1])
"""


def test_roles_a_dead_drill_made_are_powerless_and_dropped_by_the_next_start(
        service: BackupService, env: dict[str, str], cluster) -> None:
    token = os.urandom(4).hex()
    owner, shared = f"drill_owner_{token}", f"drill_shared_{token}"
    run_sql(ADMIN_URL, f"CREATE ROLE {shared} NOLOGIN")
    try:
        backup_id = other_cluster_backup(env, cluster, owner, shared)
        died = subprocess.run([sys.executable, "-c", CRASH, backup_id], env=cli_env(env), capture_output=True,
                              text=True, timeout=120, check=False)
        assert died.returncode == 9, died.stderr
        assert roles_named(owner, shared) == [(owner, False, False, True), (shared, False, False, True)]
        assert service.reconcile()["droppedDrillDatabases"] == 1
        assert roles_named(owner, shared) == [(shared, False, False, True)]
        [row] = service.drill_list()
        assert row["outcome"] == "failed" and row["scratchDropped"]
        assert service.audit.entries(action="drill.drop-roles")[0].outcome == "ok"
    finally:
        run_sql(ADMIN_URL, f"DROP ROLE IF EXISTS {owner}; DROP ROLE IF EXISTS {shared}")


def test_a_drill_whose_report_cannot_be_rendered_ends_failed_and_audited(
        service: BackupService, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from ehr_backup import drill_report
    run_sql(env["DATABASE_URL"], TABLES)
    record = service.create(ACTOR, description="report breaks")

    def broken(report: dict) -> bytes:  # fault injection: the PDF library fails
        raise ValueError("fpdf broke")

    monkeypatch.setattr(drill_report, "render_pdf", broken)
    with pytest.raises(ValueError):
        service.drill(ACTOR, record.id)
    [row] = service.drill_list()
    assert row["outcome"] == "failed" and row["message"] == "internal error: ValueError" and row["finishedAt"]
    assert row["scratchDropped"] and drill_dbs(record.database) == []
    last = service.audit.entries(action="drill")[0]
    assert last.outcome == "failed" and "internal error: ValueError" in last.detail


def test_start_up_never_drops_a_database_a_damaged_drill_row_names(
        service: BackupService, env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    from ehr_backup import pg
    from ehr_backup.catalogue import utcnow
    from ehr_backup.models import Drill
    live = env["DATABASE_URL"].rsplit("/", 1)[1]
    identity = pg.server_identity(service.drills.server())
    with service.db.writing() as s:
        s.add(Drill(backup_id="x", database=live, server=identity, scratch=live, started_at=utcnow()))
    assert service.reconcile()["droppedDrillDatabases"] == 0
    assert query(ADMIN_URL, f"SELECT count(*) FROM pg_database WHERE datname = '{live}'") == [(1,)]
    assert any(r.levelname == "WARNING" and "refusing to drop" in r.getMessage() for r in caplog.records)
    [row] = service.drill_list()
    assert not row["scratchDropped"] and row["outcome"] == "failed"


def test_check_queries_run_in_read_only_sessions(service: BackupService, env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], TABLES)
    record = service.create(ACTOR, description="read only")
    service.drill_check_add(ACTOR, "ro", "SELECT current_setting('default_transaction_read_only')", expect="on")
    service.drill_check_add(ACTOR, "ro-live", "SELECT current_setting('default_transaction_read_only')",
                            compare_live=True)
    result = service.drill(ACTOR, record.id)
    assert [(c["actual"], c["expected"]) for c in result["checks"]] == [("on", "on"), ("on", "on")]
