"""Rotation through the service: real backups, real files, the real catalogue and audit log."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from ehr_backup.catalogue import utcnow
from ehr_backup.config import Settings
from ehr_backup.db import Database
from ehr_backup.errors import BackupError, Busy, InvalidInput, NotFound, Pinned
from ehr_backup.models import Status
from ehr_backup.pg import ConnInfo
from ehr_backup.prune import Replanner, candidate
from ehr_backup.retention import RetentionPolicy
from ehr_backup.service import BackupService
from ehr_backup.storage import TEMP_PREFIX

from .conftest import ACTOR, run_sql

DAILY3 = RetentionPolicy(daily=3, weekly=0, monthly=0, yearly=0, timezone="UTC")


def made(service: BackupService, days_ago: float, *, verify: bool = True, kind: str = "manual") -> str:
    """A real backup, verified (or never verified), recorded as made `days_ago` days ago."""
    record = service.create(ACTOR, description=f"{days_ago} days ago", kind=kind)
    if verify and service.catalogue.get(record.id).verify_ok is None:
        service.verify(ACTOR, record.id)
    if not verify:  # as made with EHR_BACKUP_VERIFY_AFTER_BACKUP=0 and not verified since
        service.catalogue.update(record.id, verified_at=None, verify_ok=None, verify_message=None,
                                 verify_duration_s=None)
    service.catalogue.update(record.id, created_at=utcnow() - timedelta(days=days_ago))
    return record.id


def failed(service: BackupService, days_ago: float) -> str:
    """A backup of the database that really failed (nothing listens where it looked for the server)."""
    unreachable = ConnInfo({**service.connection().params, "host": "127.0.0.1", "port": "1"})
    task = service.prepare_create(ACTOR, description="fails", conn=unreachable)
    with pytest.raises(BackupError):
        task.run()
    assert service.catalogue.get(task.target).status == Status.FAILED
    service.catalogue.update(task.target, created_at=utcnow() - timedelta(days=days_ago))
    return task.target


def path_of(service: BackupService, backup_id: str) -> Path:
    record = service.catalogue.get(backup_id)
    assert record is not None
    return Path(record.directory) / record.id


def deleted_in_audit(service: BackupService) -> dict[str, str]:
    return {e.target: e.detail for e in service.audit.entries(action="prune.delete") if e.outcome == "ok"}


@pytest.fixture
def db(env: dict[str, str]) -> str:
    run_sql(env["DATABASE_URL"], "CREATE TABLE patients AS SELECT g AS id FROM generate_series(1, 20) g;")
    return env["DATABASE_URL"]


def test_the_real_run_deletes_exactly_what_the_dry_run_showed_each_file_audited(service, db, env) -> None:
    ids = {n: made(service, n) for n in (0, 1, 2, 3, 5, 8)}
    unverified = made(service, 9, verify=False)
    old_safety = made(service, 40, kind="safety")
    fresh_safety = made(service, 6, kind="safety")
    fail = failed(service, 4)
    pinned = made(service, 12)
    service.pin(ACTOR, pinned, "legal hold, case 2026-114")
    leftover = Path(env["EHR_BACKUP_DEFAULT_DIR"]) / f"{TEMP_PREFIX}backup_left_by_a_crash.1234"
    leftover.write_bytes(b"partial")
    audit_before = len(service.audit.entries())

    preview = service.prune(ACTOR, policy=DAILY3, dry_run=True)

    assert len(service.audit.entries()) == audit_before  # a preview changes nothing and records nothing
    assert {f["id"]: f["reason"] for f in preview["forget"]} == {
        ids[3]: "not kept by the policy (3 daily)", ids[5]: "not kept by the policy (3 daily)",
        ids[8]: "not kept by the policy (3 daily)", old_safety: "safety backup older than 30 days",
        fail: "record of a failed backup (no file was kept)"}
    assert {k["id"]: k["reasons"] for k in preview["keep"]} == {
        ids[0]: ["daily", "newest-good"], ids[1]: ["daily"], ids[2]: ["daily"], unverified: ["unverified"],
        fresh_safety: ["safety-age"], pinned: ["pinned"]}
    assert preview["deleted"] == [] and preview["dryRun"] is True and preview["holds"] == []
    assert all(path_of(service, f["id"]).exists() for f in preview["forget"] if f["id"] != fail)

    done = service.prune(ACTOR, policy=DAILY3, dry_run=False)

    assert done["deleted"] == [f["id"] for f in preview["forget"]]
    assert done["forget"] == preview["forget"] and done["keep"] == preview["keep"]
    assert service.catalogue.ids() == {k["id"] for k in preview["keep"]}
    kept_files = {p.name for p in Path(env["EHR_BACKUP_DEFAULT_DIR"]).iterdir() if not p.name.endswith(".verified")}
    assert kept_files == {k["id"] for k in preview["keep"]}  # and the leftover temporary file is gone
    assert done["removedTemporaryFiles"] == 1 and not leftover.exists()
    assert deleted_in_audit(service) == {f["id"]: f["reason"] for f in preview["forget"]}
    summary = service.audit.entries(action="prune")
    assert [e.outcome for e in summary] == ["ok", "started"]
    assert summary[0].detail.startswith("deleted 5, skipped 0")
    assert service.verify_audit().ok


def test_a_failed_latest_backup_stops_every_deletion_of_that_database(service, db) -> None:
    for n in (1, 2, 3, 4, 5):
        made(service, n)
    fail = failed(service, 0)
    done = service.prune(ACTOR, policy=DAILY3, dry_run=False)
    assert done["deleted"] == [] and done["forget"] == []
    assert done["holds"] == [{"database": service.connection().dbname,
                              "reason": f"the latest backup of {service.connection().dbname} ({fail}) failed"}]
    assert len(service.catalogue.ids()) == 6 and deleted_in_audit(service) == {}


def test_pin_and_unpin_are_audited_and_a_pinned_backup_cannot_be_deleted(service, db) -> None:
    bid = made(service, 0)
    with pytest.raises(InvalidInput, match="say why"):
        service.pin(ACTOR, bid, "   ")
    with pytest.raises(InvalidInput, match="single line"):
        service.pin(ACTOR, bid, "legal\nhold")
    with pytest.raises(InvalidInput, match="not pinned"):
        service.unpin(ACTOR, bid)
    view = service.pin(ACTOR, bid, "legal hold")
    assert view["pinned"] is True and view["pinReason"] == "legal hold" and "pinned" in view["keptBy"]
    with pytest.raises(Pinned, match="legal hold"):
        service.delete(ACTOR, bid)
    assert path_of(service, bid).exists()
    view = service.unpin(ACTOR, bid)
    assert view["pinned"] is False and view["pinReason"] is None
    service.delete(ACTOR, bid)
    pins = [(e.action, e.outcome, e.detail) for e in reversed(service.audit.entries())
            if e.action in ("pin", "unpin", "delete")]
    assert pins == [("pin", "refused", "say why the backup is pinned (for example: legal hold, case 2026-114)"),
                    ("pin", "refused", pins[1][2]), ("unpin", "refused", "the backup is not pinned"),
                    ("pin", "ok", "legal hold"), ("delete", "refused", "the backup is pinned"),
                    ("unpin", "ok", "was pinned: legal hold"), ("delete", "started", ""), ("delete", "ok", "")]


def test_only_backups_with_a_file_can_be_pinned_and_unknown_ids_are_404(service, db) -> None:
    fail = failed(service, 0)
    with pytest.raises(InvalidInput, match="only a backup with a file"):
        service.pin(ACTOR, fail, "hold")
    with pytest.raises(NotFound):
        service.pin(ACTOR, "backup_2025-08-22T15-07-19-123Z_gone.sql.gz.enc", "hold")
    with pytest.raises(InvalidInput, match="invalid backup id"):
        service.pin(ACTOR, "../../etc/passwd", "hold")


def test_applying_a_preview_deletes_nothing_the_preview_did_not_show(service, db) -> None:
    for n in (1, 2, 3, 4):
        made(service, n)
    preview = service.prune(ACTOR, policy=DAILY3)
    shown = [f["id"] for f in preview["forget"]]
    assert len(shown) == 1
    newer = made(service, 0)  # now one more backup would go, which nobody has seen
    done = service.prune(ACTOR, policy=DAILY3, dry_run=False, expect=shown)
    assert done["deleted"] == shown
    assert len(service.catalogue.ids()) == 4 and newer in service.catalogue.ids()


def test_a_backup_pinned_after_the_preview_is_not_deleted(service, db) -> None:
    for n in (1, 2, 3, 4, 5):
        made(service, n)
    shown = [f["id"] for f in service.prune(ACTOR, policy=DAILY3)["forget"]]
    service.pin(ACTOR, shown[0], "a late legal hold")
    done = service.prune(ACTOR, policy=DAILY3, dry_run=False, expect=shown)
    assert done["deleted"] == shown[1:]
    assert done["skipped"] == [{"id": shown[0], "reason": "no longer planned to go"}]
    assert path_of(service, shown[0]).exists()


def test_rotation_is_busy_while_a_backup_of_the_database_runs_and_deletes_nothing(service, db) -> None:
    for n in (1, 2, 3, 4):
        made(service, n)
    running = service.prepare_create(ACTOR, description="holds the database")
    try:
        assert len(service.prune(ACTOR, policy=DAILY3)["forget"]) == 1  # a preview still works
        with pytest.raises(Busy):
            service.prune(ACTOR, policy=DAILY3, dry_run=False)
    finally:
        running.run()
    assert len(service.catalogue.ids()) == 5
    assert [e.outcome for e in service.audit.entries(action="prune")] == ["refused", "started"]


def test_a_file_being_read_is_skipped_and_the_rest_still_go(service, db) -> None:
    for n in (1, 2, 3, 4, 5):
        made(service, n)
    shown = [f["id"] for f in service.prune(ACTOR, policy=DAILY3)["forget"]]
    reading = service.prepare_verify(ACTOR, shown[0])  # holds the file (shared) until it runs
    try:
        done = service.prune(ACTOR, policy=DAILY3, dry_run=False)
    finally:
        reading.run()
    assert done["deleted"] == shown[1:]
    assert done["skipped"][0]["id"] == shown[0] and "busy" in done["skipped"][0]["reason"]
    assert path_of(service, shown[0]).exists()


def test_files_found_on_disk_stay_unless_discovered_files_are_included(service, db, env) -> None:
    lost = made(service, 0)  # its catalogue entry is lost below: the file becomes a stranger's
    newest = made(service, 0)
    copied = Path(env["EHR_BACKUP_DEFAULT_DIR"]) / "backup_2020-01-01T00-00-00-000Z_copied_here.sql.gz.enc"
    shutil.copyfile(path_of(service, newest), copied)
    service.catalogue.delete(lost)
    service.list()  # both files found and catalogued as discovered
    service.verify(ACTOR, lost)  # proven: its header is now believed, but it is still not ours
    policy = RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0, timezone="UTC")
    plan = service.prune(ACTOR, policy=policy)
    assert {k["id"]: k["reasons"] for k in plan["keep"]} == {
        newest: ["daily", "newest-good"], lost: ["not-ours"], copied.name: ["not-ours"]}
    asked = service.prune(ACTOR, policy=policy, include_discovered=True, dry_run=False)
    assert asked["deleted"] == [lost] and not (Path(env["EHR_BACKUP_DEFAULT_DIR"]) / lost).exists()
    # a file not proven to be a backup is never deleted, even when asked
    assert copied.exists() and {k["id"]: k["reasons"] for k in asked["keep"]}[copied.name] == ["unverified"]


def test_the_backup_json_says_what_keeps_each_backup(service, db) -> None:
    ids = [made(service, n) for n in range(10)]
    service.pin(ACTOR, ids[9], "audit 2026")
    rows = {b["id"]: b for b in service.list()}
    assert rows[ids[0]]["keptBy"] == ["daily", "weekly", "monthly", "yearly", "newest-good"]
    assert rows[ids[9]]["pinned"] is True and rows[ids[9]]["pinReason"] == "audit 2026"
    assert "pinned" in rows[ids[9]]["keptBy"]
    assert rows[ids[0]]["verification"] == "ok" and rows[ids[0]]["verifiedAt"]
    plan = service.prune(ACTOR, dry_run=True)
    assert {k["id"]: k["reasons"] for k in plan["keep"]} == {i: b["keptBy"] for i, b in rows.items() if b["keptBy"]}
    assert {f["id"] for f in plan["forget"]} == {i for i, b in rows.items() if not b["keptBy"]}
    assert service.view(service.get(ids[0]))["keptBy"] == rows[ids[0]]["keptBy"]


def test_verification_is_null_before_and_failed_after_a_failed_verification(service, db) -> None:
    bid = made(service, 0, verify=False)
    assert service.view(service.get(bid))["verification"] is None
    with open(path_of(service, bid), "r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(BackupError):
        service.verify(ACTOR, bid)
    assert service.view(service.get(bid))["verification"] == "failed"


def test_bad_filters_are_refused_with_a_clear_message(service, db) -> None:
    made(service, 0)
    with pytest.raises(InvalidInput, match="unknown location"):
        service.prune(ACTOR, location="moon")
    with pytest.raises(NotFound, match="no backups of a database named 'nope'"):
        service.prune(ACTOR, database="nope")
    with pytest.raises(InvalidInput, match="invalid backup id"):
        service.prune(ACTOR, dry_run=False, expect=["../x"])
    assert [e.outcome for e in service.audit.entries(action="prune")] == ["refused"]


def test_the_pin_columns_are_added_to_a_catalogue_made_by_an_older_version(env) -> None:
    settings = Settings.from_env(env)
    service = BackupService(settings)
    path = service.db.path
    service.db.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE backups DROP COLUMN pinned")
        conn.execute("ALTER TABLE backups DROP COLUMN pin_reason")
    Database(path).dispose()
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(backups)")}
    assert {"pinned", "pin_reason"} <= columns


def test_a_run_plans_again_when_anything_but_its_own_deletions_changed(service, db) -> None:
    ids = {n: made(service, n) for n in (1, 2, 3, 4, 5, 6)}
    plans: list[int] = []

    def make(state):
        plans.append(len(state))
        return service.rotation.plan(DAILY3, [candidate(row, exists) for row, exists in state])

    replan = Replanner(lambda: service.rotation._state(None), make)
    assert replan.decision(ids[4]).reasons == ("not kept by the policy (3 daily)",)
    service.catalogue.delete(ids[4])  # what the run does, then tells the replanner
    path_of_4 = Path(service.settings.default_dir) / ids[4]
    path_of_4.unlink()
    replan.deleted(ids[4])
    assert not replan.decision(ids[5]).keep and plans == [6]  # nothing else changed: the plan stands
    service.pin(ACTOR, ids[5], "hold")
    assert replan.decision(ids[5]).reasons == ("pinned",) and plans == [6, 5]
    path_of(service, ids[1]).unlink()  # the newest file vanished: the database is held
    assert replan.decision(ids[6]).reasons == ("hold",) and plans == [6, 5, 5]
