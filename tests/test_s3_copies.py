"""Backups written to S3 beside the local file (one pg_dump fanned out), read back from S3 by streaming, copied
later, deleted everywhere; an upload that fails or is cancelled leaves nothing listed. Real moto_server."""

from __future__ import annotations

import hashlib
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.destinations.s3 import MIB, MultipartWriter, ObjectReader
from ehr_backup.destinations.store import check_settings
from ehr_backup.errors import BackupError, Cancelled, NotAuthentic
from ehr_backup.service import BackupService

from .conftest import ACTOR, query, run_sql
from .s3server import start


def destination(service: BackupService, server, name: str, bucket: str, user: str = "full",
                prefix: str = "ehr/") -> None:
    service.destination_add(ACTOR, name, server.keys.get(user, (user, "wrong-secret-value")), bucket=bucket,
                            prefix=prefix, endpoint_url=server.url, path_style=True)


def fill_random(url: str, rows: int) -> None:
    """Rows of random hex (compresses only about 2:1), so a small database still makes a multi-part object."""
    run_sql(url, "CREATE TABLE notes AS SELECT g AS id, md5(random()::text) || md5(random()::text) || "
                 f"md5(random()::text) || md5(random()::text) AS body FROM generate_series(1, {rows}) g;")


def test_a_large_object_goes_up_in_parts_in_constant_memory_and_reads_back(s3_server) -> None:
    from ehr_backup.destinations.store import Target

    target = Target("big", check_settings(bucket=s3_server.bucket(), endpoint_url=s3_server.url, path_style=True),
                    s3_server.keys["full"])
    data = hashlib.sha256(b"seed").digest() * (48 * MIB // 32)  # 48 MiB
    writer = MultipartWriter(target, "big.bin", 5 * MIB)
    tracemalloc.start()
    for i in range(0, len(data), MIB):
        writer.write(data[i:i + MIB])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    uri = writer.complete()
    assert uri == f"s3://{target.settings.bucket}/big.bin"
    assert len(writer._parts) == 10  # 9 full parts of 5 MiB and the rest
    print(f"peak traced memory while streaming 48 MiB in 5 MiB parts: {peak / MIB:.1f} MiB")
    assert peak < 12 * MIB, f"peak {peak / MIB:.1f} MiB while streaming 48 MiB"  # a few parts, not the object
    with ObjectReader(target, "big.bin") as reader:
        got = hashlib.sha256()
        for piece in reader.chunks():
            got.update(piece)
        assert got.hexdigest() == hashlib.sha256(data).hexdigest() == writer.sha.hexdigest()
        assert reader.pread(10, 5 * MIB) == data[5 * MIB:5 * MIB + 10]


def test_backup_to_local_and_s3_then_verify_download_restore_from_s3_only(env, s3_server, make_db) -> None:
    env["EHR_BACKUP_S3_PART_MB"] = "5"
    service = BackupService(Settings.from_env(env))
    fill_random(env["DATABASE_URL"], 100_000)
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    record = service.create(ACTOR, description="nightly", destinations=["default", "offsite"])
    view = service.view(record)
    assert [c["destination"] for c in view["copies"]] == ["default", "offsite"]
    local, remote = view["copies"]
    assert local["status"] == remote["status"] == "ok" and view["degraded"] is False
    assert remote["uri"] == f"s3://{bucket}/ehr/{record.id}"
    assert remote["sha256"] == local["sha256"] == record.sha256 and remote["size"] == record.size
    assert record.size > 5 * MIB  # more than one part
    assert s3_server.keys_in(bucket) == [f"ehr/{record.id}"]
    Path(view["path"]).unlink()  # only the S3 copy is left: everything below streams from it
    assert service.view(service.get(record.id))["degraded"] is True
    assert service.verify(ACTOR, record.id)["ok"] is True
    fh, size, name = service.open_download(ACTOR, record.id)
    try:
        assert size == record.size and name == record.id
        assert hashlib.sha256(b"".join(iter(lambda: fh.read(MIB), b""))).hexdigest() == record.sha256
    finally:
        fh.close()
    target = make_db()
    report = service.restore(ACTOR, record.id, target_url=target)
    assert report.ok and report.as_dict()["rowCountsMatch"] is True
    assert query(target, "SELECT count(*) FROM notes") == [(100_000,)]
    assert service.copies.verify_copy(ACTOR, record.id, "offsite")["ok"] is True
    service.delete(ACTOR, record.id)  # every copy goes
    assert s3_server.keys_in(bucket) == []
    service.db.dispose()


def test_fan_out_with_one_destination_failing_keeps_the_others_and_marks_the_backup_degraded(env, s3_server) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;")
    good = s3_server.bucket()
    destination(service, s3_server, "good", good)
    destination(service, s3_server, "broken", "no-such-bucket-xyz")
    record = service.create(ACTOR, description="three copies", destinations=["good", "broken"])
    view = service.view(record)
    by = {c["destination"]: c for c in view["copies"]}
    assert view["status"] == "completed" and view["degraded"] is True
    assert by["default"]["status"] == "ok" and by["good"]["status"] == "ok"
    assert by["broken"]["status"] == "failed" and "does not exist" in by["broken"]["error"]
    assert s3_server.keys_in(good) == [f"ehr/{record.id}"]
    listed = {b["id"]: b for b in service.list()}
    assert listed[record.id]["degraded"] is True
    assert service.verify(ACTOR, record.id)["ok"] is True
    service.alerts.check()  # the alerts of a degraded backup (no channel needed to open one)
    opened = {a["key"]: a for a in service.alerts.open_alerts()}
    key = f"copy.failed:{record.database}:broken"
    assert key in opened and "does not exist" in opened[key]["message"] and "good" not in str(list(opened))
    service.db.dispose()


def test_copy_later_completes_a_backup_and_refuses_unknown_destinations(env, s3_server) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;")
    record = service.create(ACTOR, description="local only")
    assert [c["destination"] for c in service.view(record)["copies"]] == ["default"]
    bucket = s3_server.bucket()
    destination(service, s3_server, "later", bucket, prefix="")
    done = service.copy(ACTOR, record.id, "later")
    assert done["sha256"] == record.sha256 and done["uri"] == f"s3://{bucket}/{record.id}"
    copies = service.view(service.get(record.id))["copies"]
    assert [(c["destination"], c["status"]) for c in copies] == [("default", "ok"), ("later", "ok")]
    with pytest.raises(BackupError, match="no destination"):
        service.copy(ACTOR, record.id, "nowhere")
    service.db.dispose()


def test_a_cancelled_backup_leaves_no_object_and_no_open_upload(env, s3_server) -> None:
    env["EHR_BACKUP_S3_PART_MB"] = "5"
    service = BackupService(Settings.from_env(env))
    fill_random(env["DATABASE_URL"], 150_000)
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    task = service.prepare_create(ACTOR, description="cancelled", destinations=["offsite"])
    result: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(task.run, result))
    worker.start()
    deadline = time.monotonic() + 60
    while not s3_server.uploads_in(bucket) and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.05)
    task.cancel.set()
    worker.join(120)
    assert result and isinstance(result[0], Cancelled)
    assert s3_server.keys_in(bucket) == [] and s3_server.uploads_in(bucket) == []
    assert service.get(task.backup_id).status == "cancelled"
    service.db.dispose()


def test_the_server_stopped_mid_upload_is_a_clear_failed_copy_never_a_good_one(env, tmp_path, make_db) -> None:
    env["EHR_BACKUP_S3_PART_MB"] = "5"
    env["EHR_BACKUP_VERIFY_AFTER_BACKUP"] = "0"
    server = start(tmp_path)
    try:
        service = BackupService(Settings.from_env(env))
        fill_random(env["DATABASE_URL"], 150_000)
        bucket = server.bucket()
        destination(service, server, "flaky", bucket)
        task = service.prepare_create(ACTOR, description="server dies", destinations=["flaky"])
        out: list[object] = []
        worker = threading.Thread(target=lambda: _catch(task.run, out))
        worker.start()
        deadline = time.monotonic() + 60
        while not server.uploads_in(bucket) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        worker.join(300)
        view = service.view(service.get(task.backup_id))
        copy = {c["destination"]: c for c in view["copies"]}["flaky"]
        assert copy["status"] == "failed" and copy["sha256"] is None
        assert f"{server.url} is unreachable" in copy["error"]
        assert view["degraded"] is True and view["status"] == "completed"  # the local copy is whole
        assert service.verify(ACTOR, task.backup_id)["ok"] is True
        service.db.dispose()
    finally:
        server.kill()


def _catch(fn, out: list) -> None:
    try:
        out.append(fn())
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        out.append(exc)


def test_rotation_removes_the_s3_copies_of_what_it_deletes(env, s3_server) -> None:
    from ehr_backup.retention import RetentionPolicy

    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    old = service.create(ACTOR, description="old", destinations=["offsite"])
    new = service.create(ACTOR, description="new", destinations=["offsite"])
    assert sorted(s3_server.keys_in(bucket)) == sorted([f"ehr/{old.id}", f"ehr/{new.id}"])
    result = service.prune(ACTOR, policy=RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0), dry_run=False)
    assert result["deleted"] == [old.id]
    assert s3_server.keys_in(bucket) == [f"ehr/{new.id}"]
    assert service.copies.rows(old.id) == []
    service.db.dispose()


def test_a_scheduled_backup_is_copied_to_the_schedules_destinations(env, s3_server) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    with pytest.raises(BackupError, match="no destination"):
        service.schedule_create(ACTOR, "bad", cron="0 2 * * *", destinations=["nowhere"])
    made = service.schedule_create(ACTOR, "nightly", cron="0 2 * * *", destinations=["offsite"])
    assert made["destinations"] == ["offsite"]
    from ehr_backup.scheduler import Scheduler

    started = Scheduler(service).run_now(ACTOR, "nightly")  # runs on this thread without a starter
    assert started.task is not None
    backup_id = started.task.backup_id
    view = service.view(service.get(backup_id))
    assert [(c["destination"], c["status"]) for c in view["copies"]] == [("default", "ok"), ("offsite", "ok")]
    assert s3_server.keys_in(bucket) == [f"ehr/{backup_id}"]
    with pytest.raises(BackupError, match="schedule nightly copies its backups to offsite"):
        service.destination_remove(ACTOR, "offsite")
    cleared = service.schedule_update(ACTOR, "nightly", destinations=[])
    assert cleared["destinations"] == []
    service.destination_remove(ACTOR, "offsite")
    service.db.dispose()


def test_a_slow_destination_holds_the_writer_back_instead_of_buffering(s3_server) -> None:
    from ehr_backup.destinations.fanout import S3Sink
    from ehr_backup.destinations.store import Target

    from .s3server import ThrottledProxy

    proxy = ThrottledProxy(s3_server.port, 16 * MIB)  # uploads at about 16 MiB/s
    try:
        bucket = s3_server.bucket()
        target = Target("slow", check_settings(bucket=bucket, endpoint_url=proxy.url, path_style=True),
                        s3_server.keys["full"])
        chunk = hashlib.sha256(b"slow").digest() * (MIB // 32)
        total = 64
        tracemalloc.start()
        started = time.monotonic()
        sink = S3Sink(target, "slow.bin", 5 * MIB)
        for _ in range(total):  # the backup's thread, producing far faster than the destination takes
            sink.write(chunk)
        wrote_for = time.monotonic() - started
        result = sink.finish()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"slow destination: {total} MiB written in {wrote_for:.1f} s, peak traced memory {peak / MIB:.1f} MiB")
        assert result.error is None and result.size == total * MIB
        assert wrote_for > 2  # the writer waited for the destination (backpressure) ...
        # ... instead of holding the stream: the queue (4 MiB), the part being filled and the one being sent
        # (botocore keeps a copy while it signs and sends it); bounded by the part size, not the 64 MiB
        assert peak < 24 * MIB
        assert s3_server.keys_in(bucket) == ["slow.bin"]
    finally:
        proxy.close()


def test_an_upload_left_by_a_killed_process_is_aborted_by_the_next_backup_there(env, s3_server) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    crashed = "backup_2026-11-29T02-00-00-000Z_nightly.sql.gz.enc"  # no live backup owns it
    foreign = "someone-elses-upload.bin"  # not a backup's name: never touched
    for key in (f"ehr/{crashed}", f"ehr/{foreign}"):
        s3_server.client().create_multipart_upload(Bucket=bucket, Key=key)
    record = service.create(ACTOR, description="after the crash", destinations=["offsite"])
    assert s3_server.uploads_in(bucket) == [f"ehr/{foreign}"]
    assert s3_server.keys_in(bucket) == [f"ehr/{record.id}"]
    service.db.dispose()


def test_a_tampered_s3_copy_fails_verification_and_marks_the_backup_degraded(env, s3_server) -> None:
    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    record = service.create(ACTOR, description="tamper", destinations=["offsite"])
    key = f"ehr/{record.id}"
    data = bytearray(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 1  # one flipped bit in the body
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=bytes(data))
    with pytest.raises(NotAuthentic):
        service.copies.verify_copy(ACTOR, record.id, "offsite")
    view = service.view(service.get(record.id))
    assert {c["destination"]: c["status"] for c in view["copies"]} == {"default": "ok", "offsite": "failed"}
    assert view["degraded"] is True
    assert service.verify(ACTOR, record.id)["ok"] is True  # the local copy is read first, and is whole
    failed = [e for e in service.audit.entries(action="verify") if e.outcome == "failed"]
    assert failed and "copy at offsite" in failed[0].detail
    service.db.dispose()


def test_rotation_per_destination_deletes_only_copies_there_and_never_the_last_one(env, s3_server) -> None:
    from ehr_backup.destinations.rotation import prune_destination
    from ehr_backup.retention import RetentionPolicy

    service = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g;")
    bucket = s3_server.bucket()
    destination(service, s3_server, "offsite", bucket)
    first = service.create(ACTOR, description="first", destinations=["offsite"])
    second = service.create(ACTOR, description="second", destinations=["offsite"])
    third = service.create(ACTOR, description="third", destinations=["offsite"])
    Path(service.view(first)["path"]).unlink()  # first: only its S3 copy is left
    one_a_day = RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0)
    preview = prune_destination(service, ACTOR, "offsite", one_a_day)
    assert [d["id"] for d in preview["keep"]] == [third.id]
    assert sorted(d["id"] for d in preview["forget"]) == sorted([first.id, second.id])
    assert len(s3_server.keys_in(bucket)) == 3  # a preview deletes nothing
    done = prune_destination(service, ACTOR, "offsite", one_a_day, dry_run=False)
    assert done["deleted"] == [second.id]
    assert done["skipped"] == [{"id": first.id, "reason": "its last readable copy"}]
    assert sorted(s3_server.keys_in(bucket)) == sorted([f"ehr/{first.id}", f"ehr/{third.id}"])
    assert Path(service.view(second)["path"]).is_file()  # the backup itself and its local file stay
    assert [c["destination"] for c in service.view(service.get(second.id))["copies"]] == ["default"]
    service.db.dispose()


def test_the_endpoint_gone_mid_upload_leaves_no_object_and_the_next_backup_clears_the_parts(env, s3_server) -> None:
    from .s3server import ThrottledProxy

    env["EHR_BACKUP_S3_PART_MB"] = "5"
    env["EHR_BACKUP_VERIFY_AFTER_BACKUP"] = "0"
    service = BackupService(Settings.from_env(env))
    fill_random(env["DATABASE_URL"], 150_000)
    bucket = s3_server.bucket()
    proxy = ThrottledProxy(s3_server.port, 4 * MIB)  # the destination's endpoint; slow, so we cut it mid-upload
    port = proxy.port
    service.destination_add(ACTOR, "edge", s3_server.keys["full"], bucket=bucket, prefix="ehr/",
                            endpoint_url=proxy.url, path_style=True)
    task = service.prepare_create(ACTOR, description="endpoint dies", destinations=["edge"])
    out: list[object] = []
    worker = threading.Thread(target=lambda: _catch(task.run, out))
    worker.start()
    deadline = time.monotonic() + 60
    while not s3_server.uploads_in(bucket) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a part on its way
    proxy.close()  # the endpoint is gone: nothing answers there any more, not even the abort
    worker.join(300)
    copy = {c["destination"]: c for c in service.view(service.get(task.backup_id))["copies"]}["edge"]
    assert copy["status"] == "failed" and f"{proxy.url} is unreachable" in copy["error"]
    assert s3_server.keys_in(bucket) == []  # no partial object is ever listed
    assert s3_server.uploads_in(bucket) == [f"ehr/{task.backup_id}"]  # its parts wait on the server
    proxy = ThrottledProxy(s3_server.port, 64 * MIB, port=port)  # the endpoint is back
    try:
        run_sql(env["DATABASE_URL"], "DROP TABLE notes; CREATE TABLE t AS SELECT 1 AS g;")
        later = service.create(ACTOR, description="endpoint back", destinations=["edge"])
        assert s3_server.uploads_in(bucket) == []  # the dead upload was aborted first
        assert s3_server.keys_in(bucket) == [f"ehr/{later.id}"]
    finally:
        proxy.close()
    service.db.dispose()
