"""Catalogue and audit: list across locations, discovered and missing files, delete, the audit chain."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from ehr_backup.errors import AuditError, NotAuthentic
from ehr_backup.models import Status
from ehr_backup.service import BackupService

from .conftest import ACTOR, metadata_sql


def test_list_spans_locations_and_filters_by_location(service: BackupService, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    a = service.create(ACTOR, description="in default")
    b = service.create(ACTOR, description="on desktop", location="desktop")
    c = service.create(ACTOR, description="custom", location="custom", custom_path=str(tmp_path / "c"))
    assert Path(b.directory) == Path(env["HOME"]) / "Desktop" / "EHR-Backups"
    ids = [x["id"] for x in service.list()]
    assert ids == [c.id, b.id, a.id]  # newest first
    assert [x["id"] for x in service.list(location="desktop")] == [b.id]
    view = service.list(location="custom")[0]
    for field in ("id", "filename", "description", "location", "path", "size", "sha256", "createdAt",
                  "createdBy", "database", "status"):
        assert view[field] is not None, field
    assert view["createdBy"] == "tester" and view["status"] == "completed"


def test_files_the_catalogue_did_not_know_are_listed_from_their_headers_and_can_be_verified(
        service: BackupService, env: dict[str, str], tmp_path: Path) -> None:
    record = service.create(ACTOR, description="copied in from another server")
    src = Path(record.directory) / record.id
    stash = tmp_path / record.id
    shutil.copy(src, stash)
    service.delete(ACTOR, record.id)
    shutil.copy(stash, src)
    listed = service.list()
    assert len(listed) == 1
    found = listed[0]
    assert found["status"] == Status.DISCOVERED and found["origin"] == "discovered" and found["unverified"]
    assert found["description"] == "copied in from another server"
    assert service.verify(ACTOR, record.id)["ok"]
    proven = service.list()[0]
    assert proven["status"] == Status.COMPLETED and not proven["unverified"]
    assert proven["createdAt"].startswith(record.created_at.strftime("%Y-%m-%dT%H:%M:%S"))


def test_a_found_files_header_is_a_claim_and_cannot_make_it_sort_first(service: BackupService,
                                                                      env: dict[str, str]) -> None:
    import hashlib
    import json
    import struct
    older = service.create(ACTOR, description="real and older")
    record = service.create(ACTOR, description="to be planted")
    path = Path(record.directory) / record.id
    data = path.read_bytes()
    service.catalogue.delete(record.id)
    _, version, length = struct.unpack(">8sHI", data[:14])
    header = json.loads(data[14:14 + length])
    header.update(createdAt="2030-01-01T00:00:00.000Z", createdBy="chief-admin", description="Trust me")
    blob = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    prefix = data[:8] + struct.pack(">HI", version, len(blob)) + blob
    path.write_bytes(prefix + hashlib.sha256(prefix).digest()[:16] + data[14 + length + 16:])
    os.utime(path, (1_700_000_000, 1_700_000_000))  # the file's own time: 2023
    rows = {r["id"]: r for r in service.list()}
    planted = rows[record.id]
    assert planted["unverified"] and planted["status"] == Status.DISCOVERED
    assert planted["createdAt"].startswith("2023-11-14") and planted["createdBy"] == "chief-admin"
    assert not rows[older.id]["unverified"]
    assert [r["id"] for r in sorted(rows.values(), key=lambda r: r["createdAt"], reverse=True)][0] == older.id
    with pytest.raises(NotAuthentic):
        service.verify(ACTOR, record.id)
    assert service.list() and {r["id"]: r for r in service.list()}[record.id]["unverified"]


def test_catalogued_files_that_disappeared_are_marked_missing(service: BackupService) -> None:
    record = service.create(ACTOR, description="will vanish")
    (Path(record.directory) / record.id).unlink()
    assert service.list()[0]["status"] == Status.MISSING


def test_delete_removes_file_and_row_together(service: BackupService) -> None:
    record = service.create(ACTOR, description="delete me")
    service.delete(ACTOR, record.id)
    assert not (Path(record.directory) / record.id).exists()
    assert service.list() == []


def test_a_download_handle_survives_a_delete(service: BackupService) -> None:
    record = service.create(ACTOR, description="download then delete")
    fh, size, name = service.open_download(ACTOR, record.id)
    service.delete(ACTOR, record.id)
    data = fh.read()
    fh.close()
    assert len(data) == size == record.size and name == record.id


def test_every_operation_is_audited_with_actor_time_and_outcome(service: BackupService) -> None:
    record = service.create(ACTOR, description="audited")
    service.verify(ACTOR, record.id)
    service.open_download(ACTOR, record.id)[0].close()
    service.delete(ACTOR, record.id)
    entries = list(reversed(service.audit.entries()))
    pairs = [(e.action, e.outcome) for e in entries]
    assert pairs == [("create", "started"), ("create", "ok"), ("verify", "ok"),  # read back right after
                     ("verify", "started"), ("verify", "ok"), ("download", "ok"), ("delete", "started"),
                     ("delete", "ok")]
    assert all(e.actor == "tester" and e.address == "127.0.0.1" and e.ts for e in entries)
    assert service.audit.verify().ok


def test_editing_or_deleting_an_audit_entry_breaks_the_chain(service: BackupService, env: dict[str, str]) -> None:
    for i in range(3):
        service.audit.record(ACTOR, "test", f"t{i}")
    metadata_sql(env, "UPDATE audit SET outcome = 'failed' WHERE seq = 2")
    report = service.audit.verify()
    assert not report.ok and report.first_bad == 2
    metadata_sql(env, "UPDATE audit SET outcome = 'ok' WHERE seq = 2; DELETE FROM audit WHERE seq = 2")
    assert not service.audit.verify().ok


def test_deleting_the_newest_audit_entries_is_detected(service: BackupService, env: dict[str, str]) -> None:
    for i in range(5):
        service.audit.record(ACTOR, "test", f"t{i}")
    assert service.audit.verify().ok
    metadata_sql(env, "DELETE FROM audit WHERE seq > 3")
    report = service.audit.verify()
    assert not report.ok and "removed" in report.reason


def test_if_the_audit_log_cannot_be_written_the_action_does_not_happen(service: BackupService,
                                                                        env: dict[str, str]) -> None:
    record = service.create(ACTOR, description="keep me")
    metadata_sql(env, "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(FAIL, 'disk'); END",
                 "ALTER TABLE audit ADD CONSTRAINT no_audit CHECK (false) NOT VALID")
    with pytest.raises(AuditError):
        service.delete(ACTOR, record.id)
    with pytest.raises(AuditError):
        service.create(ACTOR, description="not without audit")
    assert (Path(record.directory) / record.id).exists()
    assert [r.id for r in service.catalogue.all()] == [record.id]


def test_audit_csv_export_neutralises_formulas(service: BackupService) -> None:
    service.audit.record(ACTOR, "test", "=HYPERLINK(\"x\")")
    out = io.StringIO()
    assert service.audit.export_csv(out) == 1
    assert "'=HYPERLINK" in out.getvalue()


def test_start_up_records_operations_that_never_finished_but_not_running_ones(service: BackupService) -> None:
    record = service.create(ACTOR, description="to verify")
    running = service.prepare_verify(ACTOR, record.id)  # started and alive (its lock is held)
    service.reconcile()
    assert [e.outcome for e in service.audit.entries(action="verify")] == ["started", "ok"]  # ok: right after
    # the backup was written
    running._locks[0].release()  # as if its process had died without an outcome
    service.reconcile()
    service.reconcile()  # only once
    entries = service.audit.entries(action="verify")
    assert [e.outcome for e in entries] == ["interrupted", "started", "ok"]
    assert entries[0].actor == "system" and "tester" in entries[0].detail
