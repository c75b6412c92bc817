"""Restore, verify and download fall back to a good S3 copy when the local file is missing or fails
authentication (destinations/fallback.py); a bad copy never reaches the database. Real moto_server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.destinations.s3 import MIB
from ehr_backup.errors import NotAuthentic
from ehr_backup.service import BackupService

from .conftest import ACTOR, query, run_sql
from .test_s3_copies import destination


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit in the body: the file no longer authenticates
    path.write_bytes(bytes(data))


def test_a_corrupt_local_file_is_passed_over_for_a_good_s3_copy(env, s3_server, make_db) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 3000) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    record = service.create(ACTOR, description="rotting disk", destinations=["offsite"])
    local = Path(service.view(record)["path"])
    _flip(local)

    result = service.verify(ACTOR, record.id)
    assert result["ok"] is True and result["sha256"] == record.sha256
    assert len(result["passedOver"]) == 1 and "local file" in result["passedOver"][0]
    assert "passed over the local file" in service.get(record.id).verify_message

    fh, size, _ = service.open_download(ACTOR, record.id)
    try:
        assert size == record.size
        assert hashlib.sha256(b"".join(iter(lambda: fh.read(MIB), b""))).hexdigest() == record.sha256
    finally:
        fh.close()

    target = make_db()
    report = service.restore(ACTOR, record.id, target_url=target)
    assert report.ok and query(target, "SELECT count(*) FROM t") == [(3000,)]
    service.db.dispose()


def test_with_every_copy_bad_nothing_touches_the_database(env, s3_server, make_db) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 500) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    record = service.create(ACTOR, description="both bad", destinations=["offsite"])
    _flip(Path(service.view(record)["path"]))
    client = s3_server.client()
    data = bytearray(client.get_object(Bucket=bucket, Key=f"ehr/{record.id}")["Body"].read())
    data[len(data) // 2] ^= 1
    client.put_object(Bucket=bucket, Key=f"ehr/{record.id}", Body=bytes(data))

    target = make_db()
    run_sql(target, "CREATE TABLE sentinel AS SELECT 1 AS x;")
    with pytest.raises(NotAuthentic, match="no other copy was good"):
        service.restore(ACTOR, record.id, target_url=target)
    assert query(target, "SELECT x FROM sentinel") == [(1,)]  # left exactly as it was
    with pytest.raises(NotAuthentic):
        service.verify(ACTOR, record.id)
    assert service.get(record.id).verify_ok is False
    with pytest.raises(NotAuthentic):
        service.open_download(ACTOR, record.id)
    service.db.dispose()
