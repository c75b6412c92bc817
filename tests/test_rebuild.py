"""Catalogue rebuild: losing the metadata database loses no backup; what does not authenticate is never recorded."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ehr_backup import verified_sidecar as sidecar
from ehr_backup.config import Settings
from ehr_backup.keys import generate_key, load_keyring
from ehr_backup.rebuild import MISSING_NOTE, Finding, Row, plan
from ehr_backup.service import BackupService

from .conftest import ACTOR, drop_databases, query, run_sql, url_for
from .test_cli import cli

T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
ID_A = "backup_2026-11-29T02-00-00-000Z_a.sql.gz.enc"
ID_B = "backup_2026-11-29T03-00-00-000Z_b.sql.gz.enc"
ID_C = "backup_2026-11-29T04-00-00-000Z_c.sql.gz.enc"


def _fields(name: str, **extra: object) -> dict[str, object]:
    base = {"id": name, "description": f"about {name[:30]}", "database": "ehr", "created_at": T0, "created_by": "ann",
            "kind": "manual", "compression": "gzip", "key_id": "k0123456789abcdef", "server_version": "15",
            "pg_dump_version": "15", "schedule": None, "protects": None, "size": 100, "sha256": "aa" * 32,
            "dump_bytes": 10, "table_counts": json.dumps({"public.t": 3}), "finished_at": T0 + timedelta(seconds=5),
            "duration_s": 5.0}
    return {**base, **extra}


def _found(name: str, directory: str = "/b", **extra: object) -> Finding:
    return Finding("default", directory, name, 100, fields=_fields(name, **extra))


def _row(name: str, directory: str = "/b", status: str = "completed", **values: object) -> Row:
    f = _fields(name)
    kept = {k: values.pop(k, f[k]) for k in f if k not in ("id", "created_at")}
    return Row(id=name, location="default", directory=directory, status=status, sha256=kept["sha256"],  # type: ignore[arg-type]
               table_counts=kept["table_counts"], values=kept, **values)  # type: ignore[arg-type]


def test_plan_adds_unknown_files_completes_rows_and_marks_vanished_files_missing() -> None:
    rows = [_row(ID_A, description="", server_version=None), _row(ID_B), _row(ID_C, directory="/other")]
    result = plan([_found(ID_A), _found(ID_B), _found("backup_2026-11-29T05-00-00-000Z_new.sql.gz.enc")],
                  rows, ["/b"])
    assert [a["id"] for a in result.add] == ["backup_2026-11-29T05-00-00-000Z_new.sql.gz.enc"]
    assert result.add[0]["status"] == "completed" and result.add[0]["origin"] == "catalogue"
    assert result.update == {ID_A: {"description": f"about {ID_A[:30]}", "server_version": "15"}}  # gaps only
    assert result.unchanged == [ID_B]
    assert result.missing == []  # /other was not read: its row is not judged


def test_plan_marks_missing_only_in_folders_it_read_and_never_deletes() -> None:
    result = plan([_found(ID_A)], [_row(ID_A), _row(ID_B), _row(ID_C, status="failed")], ["/b"])
    assert result.missing == [ID_B]  # a failed row never had a file
    assert not result.add and not result.refused


def test_plan_refuses_what_did_not_authenticate_and_files_swapped_under_an_id() -> None:
    bad = Finding("default", "/b", ID_A, 100, problem="backup file is not authentic")
    swapped = _found(ID_B, sha256="bb" * 32)
    result = plan([bad, swapped], [_row(ID_B)], ["/b"])
    assert list(result.failed) == [ID_B]  # no row of ID_A; ID_B's file is not the catalogued one: verify fails it
    assert plan([bad], [_row(ID_A)], ["/b"]).failed == {ID_A: "backup file is not authentic"}
    assert plan([bad], [_row(ID_A)], ["/b"]).missing == []  # it is there, only not good
    busy = Finding("default", "/b", ID_A, 100, problem="busy", unread=True)
    assert plan([busy], [_row(ID_A)], ["/b"]).failed == {}  # not read: says nothing about the file
    assert (result.refused[0]["file"], result.refused[0]["reason"]) == (ID_A, "backup file is not authentic")
    assert "SHA-256" in result.refused[1]["reason"] and not result.add and not result.update
    assert result.missing == []  # the row's file is there; it is just not the catalogued one


def test_plan_completes_discovered_and_crash_failed_rows_from_the_authenticated_file() -> None:
    discovered = _row(ID_A, status="discovered", description="a claim", origin="discovered", sha256=None,
                      table_counts=None)
    crashed = _row(ID_B, status="failed", error="interrupted: the program stopped while it ran")
    result = plan([_found(ID_A), _found(ID_B)], [discovered, crashed], ["/b"])
    assert result.update[ID_A]["status"] == "completed" and result.update[ID_A]["description"] == f"about {ID_A[:30]}"
    assert result.update[ID_A]["origin"] == "catalogue" and result.update[ID_A]["created_at"] == T0
    assert result.update[ID_B]["status"] == "completed" and result.update[ID_B]["error"] is None


def test_plan_records_a_copy_once_and_prefers_the_rows_own_folder() -> None:
    result = plan([_found(ID_A, directory="/a"), _found(ID_A, directory="/b")], [_row(ID_A, directory="/b")],
                  ["/a", "/b"])
    assert result.unchanged == [ID_A] and result.refused[0]["directory"] == "/a"
    assert result.found_in == {ID_A: ("default", "/b")}


def test_a_verification_record_authenticates_only_for_its_own_file_and_key() -> None:
    ring = load_keyring(generate_key(), None)
    master = ring.encryption_key()
    when = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
    data = sidecar.build(master, backup_id=ID_A, sha256="aa" * 32, size=100,
                         verified=sidecar.Verified(when, True, "authentic; dump complete", 1.5))
    got = sidecar.check(data, ring, backup_id=ID_A, sha256="aa" * 32, size=100)
    assert got == sidecar.Verified(when, True, "authentic; dump complete", 1.5)
    forged = json.loads(data)
    forged["ok"] = False
    with pytest.raises(sidecar.SidecarInvalid, match="forged or altered"):
        sidecar.check(json.dumps(forged).encode(), ring, backup_id=ID_A, sha256="aa" * 32, size=100)
    with pytest.raises(sidecar.SidecarInvalid, match="another file"):
        sidecar.check(data, ring, backup_id=ID_B, sha256="aa" * 32, size=100)
    with pytest.raises(sidecar.SidecarInvalid, match="another file"):
        sidecar.check(data, ring, backup_id=ID_A, sha256="bb" * 32, size=100)
    with pytest.raises(sidecar.SidecarInvalid):  # another installation's key cannot vouch for it
        sidecar.check(data, load_keyring(generate_key(), None), backup_id=ID_A, sha256="aa" * 32, size=100)
    with pytest.raises(sidecar.SidecarInvalid):
        sidecar.check(b"\x00not json", ring, backup_id=ID_A, sha256="aa" * 32, size=100)


# ----- with real backups of a real PostgreSQL database -------------------------------------------------------

def _lose_metadata(service: BackupService, env: dict[str, str]) -> BackupService:
    """Delete the metadata database file (catalogue, audit log, settings) and start afresh on the same data dir."""
    service.db.dispose()
    data = Path(env["EHR_BACKUP_DATA_DIR"])
    for name in ("catalogue.sqlite3", "catalogue.sqlite3-wal", "catalogue.sqlite3-shm"):
        (data / name).unlink(missing_ok=True)
    if env.get("EHR_BACKUP_METADATA_URL"):  # EHR_TEST_METADATA=pg: every table gone
        run_sql(env["EHR_BACKUP_METADATA_URL"], "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    fresh = BackupService(Settings.from_env(env))
    assert fresh.catalogue.ids() == set()
    return fresh


def _facts(view: dict[str, object]) -> dict[str, object]:
    return {k: view[k] for k in ("id", "description", "database", "createdAt", "createdBy", "kind", "compression",
                                 "size", "sha256", "tableRowCounts", "dumpBytes", "location", "path",
                                 "verifiedAt", "verification", "status", "schedule")}


def test_losing_the_metadata_database_loses_no_backup(service: BackupService, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    url = env["DATABASE_URL"]
    run_sql(url, "CREATE TABLE patients AS SELECT g AS id, 'p' || g AS name FROM generate_series(1, 300) g;")
    first = service.create(ACTOR, description="before the ward move")
    run_sql(url, "INSERT INTO patients SELECT g, 'q' FROM generate_series(301, 420) g;")
    custom = tmp_path / "offsite"
    second = service.create(ACTOR, description="custom folder, zstd", location="custom", custom_path=str(custom),
                            compression="zstd")
    third = service.create(ACTOR, description="nightly", kind="scheduled", schedule="nightly")
    before = {b["id"]: _facts(b) for b in service.list()}
    assert all(Path(b["path"] + ".verified").is_file() for b in before.values())  # written by each verification
    assert all(b["verification"] == "ok" for b in before.values())

    service = _lose_metadata(service, env)
    preview = service.rebuild_catalogue(ACTOR, dry_run=True)
    assert sorted(a["id"] for a in preview["added"]) == sorted([first.id, third.id])  # the custom folder is unknown
    assert service.catalogue.ids() == set()  # a preview writes nothing

    done = service.rebuild_catalogue(ACTOR, paths=[str(custom)])
    assert sorted(a["id"] for a in done["added"]) == sorted(before) and not done["refused"] and not done["warnings"]
    after = {b["id"]: _facts(b) for b in service.list()}
    assert after == before  # same ids, descriptions, times, row counts, sizes, hashes and verification state
    assert after[third.id]["kind"] == "scheduled" and after[third.id]["schedule"] == "nightly"
    assert service.get(first.id).origin == "catalogue"

    again = service.rebuild_catalogue(ACTOR, paths=[str(custom)])  # nothing duplicated, nothing changed
    assert not again["added"] and not again["updated"] and again["unchanged"] == 3
    entries = [(e.target, e.outcome) for e in service.audit.entries(action="catalogue.rebuild")]
    assert (first.id, "ok") in entries and ("all locations", "started") in entries

    target = f"rebuild_{os.getpid()}_restored"
    try:
        report = service.restore(ACTOR, second.id, target_database=target)
        assert report.ok and report.backup_id == second.id
        assert query(url_for(target), "SELECT count(*) FROM patients") == [(420,)]
    finally:
        drop_databases([target])


def test_a_file_that_does_not_authenticate_is_reported_and_never_recorded(service: BackupService,
                                                                          env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 200) g;")
    good = service.create(ACTOR, description="good")
    rotten = service.create(ACTOR, description="rotten")
    forged = service.create(ACTOR, description="forged verification")
    path = Path(rotten.directory) / rotten.id
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit flipped in the body: the header and trailer still parse
    path.write_bytes(bytes(data))
    record = Path(forged.directory) / (forged.id + ".verified")
    doc = json.loads(record.read_bytes())
    doc["verifiedAt"] = "2099-01-01T00:00:00Z"  # a later date, without the key
    record.write_text(json.dumps(doc))

    service = _lose_metadata(service, env)
    res = cli(env, "catalogue", "rebuild", "--json")
    assert res.returncode == 1 and "1 file was refused" in res.stderr and rotten.id in res.stderr
    out = json.loads(res.stdout)
    assert [r["file"] for r in out["refused"]] == [rotten.id] and "not authentic" in out["refused"][0]["reason"]
    assert [w["file"] for w in out["warnings"]] == [forged.id]
    assert sorted(a["id"] for a in out["added"]) == sorted([good.id, forged.id])
    assert service.catalogue.get(rotten.id) is None
    rebuilt = service.catalogue.get(forged.id)
    assert rebuilt is not None and rebuilt.verified_at is None and rebuilt.verify_ok is None  # the forgery ignored
    assert service.catalogue.get(good.id).verify_ok is True  # type: ignore[union-attr]
    refused = [e for e in service.audit.entries(action="catalogue.rebuild") if e.outcome == "refused"]
    assert [e.target for e in refused] == [rotten.id]


def test_rows_are_kept_completed_and_vanished_files_marked_missing(service: BackupService,
                                                                   env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 200) g;")
    kept = service.create(ACTOR, description="kept")
    crashed = service.create(ACTOR, description="crashed")
    gone = service.create(ACTOR, description="gone")
    rotten = service.create(ACTOR, description="rotten on disk")
    path = Path(rotten.directory) / rotten.id
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x08
    path.write_bytes(bytes(data))
    service.catalogue.update(crashed.id, status="failed", error="interrupted: the program stopped while it ran",
                             sha256=None, table_counts=None, size=None)
    os.unlink(Path(gone.directory) / gone.id)
    assert Path(gone.directory, gone.id + ".verified").exists()  # lost behind our back: its record stays, inert

    preview = cli(env, "catalogue", "rebuild", "--dry-run")
    assert preview.returncode == 1 and "1 file was refused" in preview.stderr  # the rotten one: exit 1
    assert "complete " + crashed.id in preview.stdout and "missing  " + gone.id in preview.stdout
    assert "FAILED   " + rotten.id in preview.stdout
    assert service.catalogue.get(crashed.id).status == "failed"  # type: ignore[union-attr]
    assert service.catalogue.get(rotten.id).verify_ok is True  # type: ignore[union-attr]  # a preview writes nothing

    out = service.rebuild_catalogue(ACTOR)
    assert [u["id"] for u in out["updated"]] == [crashed.id] and out["missing"] == [gone.id]
    assert out["files"] == 3 and not out["added"]  # the orphan record is no backup
    assert [r["file"] for r in out["refused"]] == [rotten.id] and [f["id"] for f in out["failedVerification"]] == [
        rotten.id]
    failing = service.view(service.get(rotten.id))  # was good: now failing verification, so rotation holds it
    assert failing["verification"] == "failed" and "not authentic" in failing["verifyMessage"]
    fixed = service.view(service.get(crashed.id))
    assert fixed["status"] == "completed" and fixed["sha256"] == crashed.sha256 and fixed["size"] == crashed.size
    assert fixed["tableRowCounts"] == service.view(service.get(kept.id))["tableRowCounts"]
    missing = service.view(service.get(gone.id))  # kept, not deleted
    assert missing["status"] == "missing" and missing["error"] == MISSING_NOTE
    assert service.get(kept.id).error is None
    assert len(service.catalogue.ids()) == 4


def test_the_verification_record_is_no_backup_and_goes_with_its_backup(service: BackupService,
                                                                       env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 50) g;")
    made = service.create(ACTOR, description="with record")
    record = Path(made.directory) / (made.id + ".verified")
    assert record.is_file() and oct(record.stat().st_mode & 0o777) == "0o600"
    assert [b["id"] for b in service.list()] == [made.id]  # not listed, not discovered
    service.delete(ACTOR, made.id)
    assert not record.exists() and not (Path(made.directory) / made.id).exists()


def test_the_command_refuses_bad_input_and_a_second_rebuild_at_once(service: BackupService,
                                                                    env: dict[str, str]) -> None:
    from ehr_backup.locks import lock_for

    wrong = cli(env, "catalogue", "rebuild", "--location", "downloads", "--path", env["EHR_BACKUP_DEFAULT_DIR"])
    assert wrong.returncode == 2 and "--path reads a custom folder" in wrong.stderr
    assert cli(env, "catalogue", "rebuild", "--location", "nowhere").returncode == 2
    system = cli(env, "catalogue", "rebuild", "--path", "/etc")
    assert system.returncode == 2 and "/etc" in system.stderr
    helped = cli(env, "catalogue", "rebuild", "--help").stdout
    assert all(flag in helped for flag in ("--location", "--path", "--dry-run", "--json"))
    settings = Settings.from_env(env)  # a flock file, or with PostgreSQL metadata an advisory lock
    held = lock_for(settings, settings.data_dir / "locks", "catalogue-rebuild").acquire("a test")
    try:
        busy = cli(env, "catalogue", "rebuild", "--dry-run")
        assert busy.returncode == 1 and "a test" in busy.stderr
    finally:
        held.release()
    refused = [(e.target, e.outcome) for e in service.audit.entries(action="catalogue.rebuild")]
    assert refused.count(("all locations", "refused")) == 2 and not any(o == "started" for _, o in refused)


def test_files_listed_as_discovered_after_the_loss_are_completed_by_the_rebuild(service: BackupService,
                                                                                env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 80) g;")
    made = service.create(ACTOR, description="listed first")
    before = _facts(service.view(service.get(made.id)))
    service = _lose_metadata(service, env)
    [claimed] = service.list()  # the list finds the file first: a claim from its unauthenticated header
    assert claimed["status"] == "discovered" and claimed["origin"] == "discovered"
    out = service.rebuild_catalogue(ACTOR)
    assert [u["id"] for u in out["updated"]] == [made.id] and not out["added"]
    after = service.view(service.get(made.id))
    assert _facts(after) == before and after["origin"] == "catalogue" and after["unverified"] is False


def test_a_rebuilt_row_takes_its_profile_from_the_authenticated_header() -> None:
    from ehr_backup.rebuild import record_fields

    def profile_of(value: object) -> object:
        header = {"createdAt": "2026-11-30T01:00:00Z", "description": "x", "profile": value}
        return record_fields("b.sql.gz.enc", header, {}, size=1, sha256="0" * 64)["profile"]

    assert profile_of("site-b") == "site-b"
    assert profile_of("default") is None  # DATABASE_URL's backups carry no profile in the catalogue
    assert profile_of("Bad Name!") is None  # not a profile name: never a label to trust
    assert profile_of(None) is None  # files made before profiles belong to the default
