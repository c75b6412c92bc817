"""Catalogue rebuild from S3 destinations (destinations/rebuild_s3.py) against a real moto_server process:
backups and their copies come back after the metadata database is lost, a backup only on S3 is restorable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ehr_backup.config import Settings
from ehr_backup.destinations.rebuild_s3 import backup_names
from ehr_backup.rebuild import Finding, plan
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env, query, run_sql
from .test_s3_copies import destination

ID = "backup_2026-11-30T01-00-00-000Z.sql.gz.enc"


def _lose_metadata(service: BackupService, env: dict[str, str]) -> BackupService:
    service.db.dispose()
    data = Path(env["EHR_BACKUP_DATA_DIR"])
    for name in ("catalogue.sqlite3", "catalogue.sqlite3-wal", "catalogue.sqlite3-shm"):
        (data / name).unlink(missing_ok=True)
    fresh = BackupService(Settings.from_env(env))
    assert fresh.catalogue.ids() == set() and fresh.destinations.all() == []
    return fresh


def test_only_backup_objects_directly_under_the_prefix_are_sources() -> None:
    keys = [{"key": f"ehr/{ID}", "size": 10}, {"key": f"ehr/{ID}.verified", "size": 1},
            {"key": f"ehr/sub/{ID}", "size": 3}, {"key": "ehr/notes.txt", "size": 4}, {"key": f"{ID}", "size": 5}]
    assert backup_names(keys, "ehr/") == [(ID, 10)]


def test_plan_records_the_same_bytes_at_a_destination_as_a_copy_and_other_bytes_as_refused() -> None:
    fields = {"id": ID, "sha256": "aa" * 32, "created_at": None, "table_counts": None}
    local = Finding("default", "/b", ID, 10, fields=fields)
    s3_same = Finding("offsite", "s3://bkt/ehr/", ID, 10, fields=fields)
    s3_other = Finding("other", "s3://x/", ID, 10, fields={**fields, "sha256": "bb" * 32})
    result = plan([local, s3_same, s3_other], [], ["/b", "s3://bkt/ehr/", "s3://x/"])
    assert result.found_in == {ID: ("default", "/b")}
    assert result.copies[ID] == [("default", "/b", 10, "aa" * 32), ("offsite", "s3://bkt/ehr/", 10, "aa" * 32)]
    assert [r["location"] for r in result.refused] == ["other"]


def test_a_rebuild_after_losing_the_metadata_brings_back_every_backup_and_copy(env, s3_server, make_db) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 2000) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    both = service.create(ACTOR, description="local and offsite", destinations=["default", "offsite"])
    local_only = service.create(ACTOR, description="local only")
    run_sql(env["DATABASE_URL"], "INSERT INTO t SELECT g, 'x' FROM generate_series(2001, 2500) g;")
    s3_only = service.create(ACTOR, description="offsite only", destinations=["offsite"])
    Path(service.view(s3_only)["path"]).unlink()  # its local file is gone: only the S3 object is left
    before = {b["id"]: (b["description"], b["sha256"], b["tableRowCounts"]) for b in service.list()}

    service = _lose_metadata(service, env)
    destination(service, s3_server, "offsite", bucket)  # destinations live in the metadata DB: re-added
    out = subprocess.run([sys.executable, "-m", "ehr_backup.cli", "catalogue", "rebuild", "--destination",
                          "offsite", "--json"], env=cli_env(env), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert sorted(a["id"] for a in json.loads(out.stdout)["added"]) == sorted([both.id, s3_only.id])
    done = service.rebuild_catalogue(ACTOR)  # then everything: the local files too
    assert [a["id"] for a in done["added"]] == [local_only.id] and not done["refused"]
    after = {b["id"]: (b["description"], b["sha256"], b["tableRowCounts"]) for b in service.list()}
    assert after == before

    view = service.view(service.get(both.id))
    assert [(c["destination"], c["status"]) for c in view["copies"]] == [("default", "ok"), ("offsite", "ok")]
    assert view["copies"][1]["uri"] == f"s3://{bucket}/ehr/{both.id}" and view["degraded"] is False
    remote = service.view(service.get(s3_only.id))
    assert remote["location"] == "offsite" and remote["degraded"] is False and remote["status"] == "completed"
    assert remote["path"] == f"s3://{bucket}/ehr/{s3_only.id}" and remote["exists"] is True
    assert [(c["destination"], c["status"], c["sha256"]) for c in remote["copies"]] == [
        ("offsite", "ok", s3_only.sha256)]
    assert service.verify(ACTOR, s3_only.id)["ok"] is True
    target = make_db()
    report = service.restore(ACTOR, s3_only.id, target_url=target)  # streamed from S3, nothing local
    assert report.ok and query(target, "SELECT count(*) FROM t") == [(2500,)]

    s3_server.client().delete_object(Bucket=bucket, Key=f"ehr/{both.id}")  # a copy vanishes from the bucket
    service.rebuild_catalogue(ACTOR, location="offsite")
    copies = {c["destination"]: c for c in service.view(service.get(both.id))["copies"]}
    assert copies["offsite"]["status"] == "missing" and copies["default"]["status"] == "ok"
    assert any(e.outcome == "ok" and "marked missing" in (e.detail or "")
               for e in service.audit.entries(action="catalogue.rebuild"))
    service.delete(ACTOR, s3_only.id)  # a backup kept at S3 only: its object goes, no local file is looked for
    assert f"ehr/{s3_only.id}" not in s3_server.keys_in(bucket) and s3_only.id not in service.catalogue.ids()
    service.db.dispose()
