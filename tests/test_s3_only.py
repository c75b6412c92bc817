"""A backup written to S3 only (`create --destination NAME --no-local`, destinations/s3_only.py): no local
file, the first good S3 copy is the primary; verify and restore stream from it. Real moto_server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.errors import BackupError, InvalidInput
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env, query, run_sql
from .test_s3_copies import destination


def test_a_backup_to_s3_only_leaves_no_local_file_and_restores_from_s3(env, s3_server, make_db) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 1500) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "broken", "no-such-bucket-s3only")
    destination(service, s3_server, "offsite", bucket)
    out = subprocess.run([sys.executable, "-m", "ehr_backup.cli", "create", "--description", "cloud only",
                          "--destination", "broken", "--destination", "offsite", "--no-local", "--json"],
                         env=cli_env(env), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["status"] == "completed" and made["location"] == "offsite"  # the first good copy is the primary
    assert made["path"] == f"s3://{bucket}/ehr/{made['id']}" and made["verification"] == "ok"
    assert {c["destination"]: c["status"] for c in made["copies"]} == {"broken": "failed", "offsite": "ok"}
    assert made["degraded"] is True
    assert list(Path(env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*")) == []  # nothing written locally
    assert s3_server.keys_in(bucket) == [f"ehr/{made['id']}"]

    target = make_db()
    report = service.restore(ACTOR, made["id"], target_url=target)
    assert report.ok and query(target, "SELECT count(*) FROM t") == [(1500,)]

    with pytest.raises(InvalidInput, match="at least one S3 destination"):
        service.create(ACTOR, description="nowhere", local=False)
    with pytest.raises(BackupError, match="no copy of the backup was written"):
        service.create(ACTOR, description="all fail", destinations=["broken"], local=False)
    [failed] = [b for b in service.list() if b["description"] == "all fail"]
    assert failed["status"] == "failed"
    service.db.dispose()
