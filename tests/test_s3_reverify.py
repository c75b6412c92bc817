"""The nightly / --all / --due re-verification reads every S3 copy back (destinations/reverify.py): a corrupt or
vanished copy is recorded on the copy, degrades the backup and raises the copy alert. Real moto_server."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from ehr_backup.config import Settings
from ehr_backup.destinations.copies import failed_copies
from ehr_backup.destinations.tables import BackupCopy
from ehr_backup.models import BackupRecord
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env, run_sql
from .test_s3_copies import destination

T = datetime(2026, 11, 30, 1, tzinfo=UTC)


def _record(i: str, hour: int) -> BackupRecord:
    return BackupRecord(id=i, description="", database="ehr", created_at=T.replace(hour=hour), status="completed",
                        location="default", directory="/b")


def _copy(n: int, backup: str, status: str, error: str | None = None) -> BackupCopy:
    return BackupCopy(id=n, backup_id=backup, destination="offsite", uri="s3://b/" + backup, status=status,
                      error=error, created_at=T)


def test_an_older_copy_that_failed_its_re_read_is_alerted_even_when_the_newest_is_good() -> None:
    records = [_record("new", 3), _record("old", 1)]
    assert failed_copies(records, [_copy(1, "old", "ok"), _copy(2, "new", "ok")]) == []
    # an upload that failed long ago and was superseded stays quiet; a copy found corrupt tonight does not
    assert failed_copies(records, [_copy(1, "old", "failed", "upload failed"), _copy(2, "new", "ok")]) == []
    [alert] = failed_copies(records, [_copy(1, "old", "missing", "re-read: gone"), _copy(2, "new", "ok")])
    assert alert["backupId"] == "old" and alert["status"] == "missing" and alert["destination"] == "offsite"


def test_verify_all_reads_the_s3_copies_back_and_marks_corrupt_and_vanished_ones(env, s3_server) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    first = service.create(ACTOR, description="corrupted offsite", destinations=["offsite"])
    second = service.create(ACTOR, description="vanished offsite", destinations=["offsite"])
    third = service.create(ACTOR, description="intact", destinations=["offsite"])
    client = s3_server.client()
    data = bytearray(client.get_object(Bucket=bucket, Key=f"ehr/{first.id}")["Body"].read())
    data[len(data) // 2] ^= 1  # one flipped bit: media rot at the provider
    client.put_object(Bucket=bucket, Key=f"ehr/{first.id}", Body=bytes(data))
    client.delete_object(Bucket=bucket, Key=f"ehr/{second.id}")

    result = service.verify_all(ACTOR)
    assert result["failed"] == 0 and result["copiesFailed"] == 2  # every local file is good
    by = {r["backupId"]: r["copies"] for r in result["results"]}
    assert by[third.id] == [{"destination": "offsite", "ok": True}]
    assert by[first.id][0]["ok"] is False and by[second.id][0]["ok"] is False

    def offsite(backup_id: str) -> dict:
        view = service.view(service.get(backup_id))
        return {"degraded": view["degraded"], **{c["destination"]: c for c in view["copies"]}["offsite"]}

    assert offsite(first.id)["status"] == "failed" and offsite(first.id)["degraded"] is True
    assert offsite(second.id)["status"] == "missing" and "does not exist" in offsite(second.id)["error"]
    assert offsite(third.id)["status"] == "ok" and offsite(third.id)["degraded"] is False

    service.alerts.check()  # the newest backup's copy is fine, an older one was found bad tonight: alerted
    opened = {a["key"]: a for a in service.alerts.open_alerts()}
    assert f"copy.failed:{first.database}:offsite" in opened

    out = subprocess.run([sys.executable, "-m", "ehr_backup.cli", "verify", "--all"], env=cli_env(env),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "S3 copies failed verification" in out.stderr + out.stdout

    service.copy(ACTOR, second.id, "offsite")  # completed again: the next re-read finds it good
    service.verify_all(ACTOR)
    assert offsite(second.id)["status"] == "ok"
    service.db.dispose()
