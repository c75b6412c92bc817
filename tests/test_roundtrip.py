"""Backup and restore against real PostgreSQL: awkward content comes back identical."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ehr_backup.models import Status
from ehr_backup.service import BackupService

from .conftest import ACTOR, query, run_sql, url_for
from .helpers import AWKWARD_SQL, dump_text


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_awkward_database_restores_identical_into_a_new_database(
        service: BackupService, env: dict[str, str], make_db, compression: str) -> None:
    src = env["DATABASE_URL"]
    run_sql(src, AWKWARD_SQL)
    record = service.create(ACTOR, description="awkward round trip", compression=compression)
    assert record.status == Status.COMPLETED and record.compression == compression
    target = make_db()
    report = service.restore(ACTOR, record.id, target_url=target)
    assert report.ok and report.safety_backup is None and report.outcome.previous is not None
    assert dump_text(target) == dump_text(src)
    counts = json.loads(record.table_counts or "{}")
    assert counts['"Schéma ""quoted"""."Table With Spaces"'] == 5
    assert counts["public.measurements_2024"] == 366 and counts["public.empty_table"] == 0
    assert report.as_dict()["tables"]["public.blobs"] == {"expected": 4, "loaded": 4, "actual": 4}


def test_restore_over_the_configured_database_removes_later_objects_and_keeps_the_previous_one(
        service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, AWKWARD_SQL)
    before = dump_text(db)
    record = service.create(ACTOR, description="before the changes")
    run_sql(db, """
        CREATE TABLE created_later (a int); INSERT INTO created_later VALUES (1);
        CREATE SCHEMA later_schema; CREATE TABLE later_schema.t (b int);
        DELETE FROM blobs WHERE id = 1; INSERT INTO blobs VALUES (99, '\\x01');
        SELECT nextval('custom_seq'); SELECT lo_from_bytea(0, '\\x99');
        SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata;
        CREATE TYPE later_enum AS ENUM ('a');
    """)
    changed = dump_text(db)
    report = service.restore(ACTOR, record.id)
    assert report.ok and report.safety_backup is None
    assert dump_text(db) == before
    assert query(db, "SELECT count(*) FROM pg_class WHERE relname = 'created_later'") == [(0,)]
    previous = report.outcome.previous
    assert previous and previous.startswith(db.rsplit("/", 1)[1] + "__before_")
    assert dump_text(url_for(previous)) == changed  # kept as it was, for a rollback
    assert [k["name"] for k in service.kept_databases()] == [previous]


def test_backup_files_are_0600_in_a_0700_directory_and_hold_no_plaintext(
        service: BackupService, env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE p (name text); INSERT INTO p VALUES ('Jane Patient-Secret');")
    record = service.create(ACTOR, description="perms")
    path = Path(record.directory) / record.id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert b"Jane Patient-Secret" not in data and b"CREATE TABLE" not in data
    assert env["BACKUP_ENCRYPTION_KEY"].split(":")[1].encode() not in data
    assert sorted(p.name for p in path.parent.iterdir()) == [record.id, record.id + ".verified"]  # and its
    # verification record (verified_sidecar.py)


def test_verify_reads_every_byte_and_reports_the_row_counts(service: BackupService, env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 1234) g;")
    record = service.create(ACTOR, description="verify me")
    result = service.verify(ACTOR, record.id)
    assert result["ok"] and result["tableRowCounts"] == {"public.t": 1234}
    assert result["sha256"] == record.sha256
    view = service.view(service.get(record.id))
    assert view["verifyOk"] is True and view["verifiedAt"]


def test_backup_ids_keep_the_established_file_name_form(service: BackupService) -> None:
    record = service.create(ACTOR, description="Monthly Backup!")
    assert record.id.startswith("backup_") and record.id.endswith("Z_monthly_backup.sql.gz.enc")
    import re
    assert re.fullmatch(r"backup_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z_monthly_backup\.sql\.gz\.enc", record.id)
