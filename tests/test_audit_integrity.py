"""The audit log resists tampering by someone who can write the data directory but has no key.

The attacker here knows the published chain formula and can read and write everything in the data
directory (the metadata database, audit-head.json and whatever key file lies beside it), but not
BACKUP_ENCRYPTION_KEY, which is kept elsewhere. Each test plays one attack with sqlite3 and files.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
import socket
import sqlite3
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.errors import AuditError, ConfigError
from ehr_backup.keys import generate_key
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env

GENESIS = "0" * 64


# ----- the attacker's tools ---------------------------------------------------------------------------
def _db(env: dict[str, str]) -> Path:
    return Path(env["EHR_BACKUP_DATA_DIR"]) / "catalogue.sqlite3"


def _head(env: dict[str, str]) -> Path:
    return Path(env["EHR_BACKUP_DATA_DIR"]) / "audit-head.json"


def _sql(env: dict[str, str], *statements: str) -> None:
    with sqlite3.connect(_db(env)) as conn:
        for statement in statements:
            conn.execute(statement)


def _unkeyed_digest(prev: str, seq: int, ts: str, actor: str, action: str, target: str, outcome: str,
                    detail: str, address: str) -> str:
    """The plain SHA-256 chain formula, as anyone can read it in the source."""
    when = datetime.fromisoformat(ts).replace(tzinfo=UTC).isoformat(timespec="microseconds")
    body = json.dumps([prev, seq, when, actor, action, target, outcome, detail, address], ensure_ascii=True,
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def rewrite_chain_unkeyed(env: dict[str, str], edit: str | None = None, start: int = 1, end: int = 10**9,
                          clear_keys: bool = True) -> tuple[int, str]:
    """Apply an UPDATE, then recompute the chain's entries start..end with plain SHA-256 (the attacker
    has no key); clear their key ids too when asked. Return the new (last seq, hash)."""
    with sqlite3.connect(_db(env)) as conn:
        if edit:
            conn.execute(edit)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
        before = conn.execute("SELECT hash FROM audit WHERE seq = ?", (start - 1,)).fetchone()
        prev, seq = before[0] if before else GENESIS, start - 1
        for row in conn.execute("SELECT seq, ts, actor, action, target, outcome, detail, address FROM audit "
                                "WHERE seq BETWEEN ? AND ? ORDER BY seq", (start, end)).fetchall():
            seq = row[0]
            digest = _unkeyed_digest(prev, *row)
            conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
            if clear_keys and "key_id" in columns:
                conn.execute("UPDATE audit SET key_id = '' WHERE seq = ?", (seq,))
            prev = digest
    return seq, prev


def forge_head(env: dict[str, str], seq: int, digest: str) -> None:
    """Sign a head with the key file beside it (making one if there is none), as the old format did."""
    key_file = Path(env["EHR_BACKUP_DATA_DIR"]) / "audit-head.key"
    if not key_file.exists():
        key_file.write_bytes(secrets.token_bytes(32))
    mac = hmac.new(key_file.read_bytes(), f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()
    _head(env).write_text(json.dumps({"seq": seq, "hash": digest, "mac": mac}))


def audit_verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ehr_backup.cli", "audit", "verify"], env=cli_env(env),
                          check=False, capture_output=True, text=True, timeout=300)


def record(service: BackupService, n: int) -> None:
    for i in range(n):
        service.audit.record(ACTOR, "test", f"t{i}")


@pytest.fixture
def make_service(env: dict[str, str]):
    """Services over the same installation with other settings (None removes a variable)."""
    made: list[BackupService] = []

    def make(**changes: str | None) -> BackupService:
        values = {k: v for k, v in {**env, **changes}.items() if v is not None}
        made.append(BackupService(Settings.from_env(values)))
        return made[-1]

    yield make
    for svc in made:
        svc.db.dispose()


# ----- finding 4: each tampering variant -------------------------------------------------------------
def test_removing_the_newest_entries_and_the_head_file_is_detected(service: BackupService,
                                                                   env: dict[str, str]) -> None:
    record(service, 5)
    assert service.audit.verify().ok
    _sql(env, "DELETE FROM audit WHERE seq > 3")
    _head(env).unlink()
    report = service.audit.verify()
    assert not report.ok and "head" in report.reason and "missing" in report.reason


def test_removing_the_newest_entries_and_re_signing_the_head_with_the_file_beside_it_is_detected(
        service: BackupService, env: dict[str, str]) -> None:
    record(service, 5)
    _sql(env, "DELETE FROM audit WHERE seq > 3")
    with sqlite3.connect(_db(env)) as conn:
        (digest,) = conn.execute("SELECT hash FROM audit WHERE seq = 3").fetchone()
    forge_head(env, 3, digest)
    report = service.audit.verify()
    assert not report.ok and "not keyed" in report.reason


@pytest.mark.parametrize("head", ["kept", "deleted", "re-signed"])
@pytest.mark.parametrize("key_ids", ["kept", "cleared"])
def test_editing_an_entry_and_recomputing_the_unkeyed_chain_is_detected(
        service: BackupService, env: dict[str, str], head: str, key_ids: str) -> None:
    record(service, 2)
    service.create(ACTOR, description="nightly")  # as in any installation: backups keep an audit head
    record(service, 2)
    assert audit_verify(env).returncode == 0
    last = rewrite_chain_unkeyed(env, "UPDATE audit SET outcome = 'failed' WHERE seq = 2",
                                 clear_keys=key_ids == "cleared")
    if head == "deleted":
        _head(env).unlink()
    elif head == "re-signed":
        forge_head(env, *last)
    res = audit_verify(env)
    assert res.returncode != 0 and "audit chain broken" in res.stderr


def test_editing_an_entry_and_recomputing_the_unkeyed_chain_is_detected_without_any_backup(
        service: BackupService, env: dict[str, str]) -> None:
    record(service, 5)
    last = rewrite_chain_unkeyed(env, "UPDATE audit SET outcome = 'failed' WHERE seq = 2", clear_keys=False)
    forge_head(env, *last)
    report = service.audit.verify()
    assert not report.ok and report.first_bad == 1


def test_deleting_every_entry_and_the_head_is_detected_by_the_backup_files(service: BackupService,
                                                                           env: dict[str, str]) -> None:
    record(service, 3)
    backup = service.create(ACTOR, description="anchor")
    assert audit_verify(env).returncode == 0
    # the attacker also empties the catalogue, so that only the backup file remembers
    _sql(env, "DELETE FROM audit", "DELETE FROM backups", "DELETE FROM users")
    _head(env).unlink()
    res = audit_verify(env)
    assert res.returncode != 0
    assert backup.id in res.stderr and "removed" in res.stderr


def test_deleting_every_entry_and_the_head_is_detected_by_the_catalogue(service: BackupService,
                                                                        env: dict[str, str]) -> None:
    from ehr_backup.auth import AuthService
    AuthService(service.db, service.audit, service.settings).add_user(ACTOR, "alice", "a-long-password-1")
    record(service, 2)
    _sql(env, "DELETE FROM audit")
    _head(env).unlink()
    report = service.audit.verify()
    assert not report.ok and "1 user" in report.reason


def test_truncating_the_log_behind_a_newer_backup_is_detected_even_with_a_consistent_head(
        service: BackupService, env: dict[str, str]) -> None:
    record(service, 2)
    service.create(ACTOR, description="remembers")
    record(service, 2)
    # the attacker rewinds to before the backup and writes a head that matches the rewound log
    _sql(env, "DELETE FROM audit WHERE seq > 2")
    last = rewrite_chain_unkeyed(env)
    forge_head(env, *last)
    res = audit_verify(env)
    assert res.returncode != 0 and "_remembers." in res.stderr and "removed" in res.stderr


def test_a_downgrade_of_the_entries_after_the_switch_to_a_key_is_detected(make_service,
                                                                          env: dict[str, str]) -> None:
    record(make_service(BACKUP_ENCRYPTION_KEY=None), 3)  # an installation that ran without a key (the demo)
    keyed = make_service()
    record(keyed, 3)
    entries = list(reversed(keyed.audit.entries()))
    assert [e.action for e in entries] == ["test"] * 3 + ["audit.keyed"] + ["test"] * 3
    assert all(e.key_id for e in entries[3:]) and not any(e.key_id for e in entries[:3])
    report = keyed.audit.verify()
    assert report.ok and report.keyed_since == 4
    # rewrite the entries after the switch without the key, and sign a head the old way
    last = rewrite_chain_unkeyed(env, "UPDATE audit SET detail = 'nothing happened' WHERE seq = 6", start=5)
    forge_head(env, *last)
    report = keyed.audit.verify()
    assert not report.ok and report.first_bad == 5 and "downgrade" in report.reason


def test_a_downgrade_of_the_whole_log_is_detected_by_a_backup_made_after_the_switch(make_service,
                                                                                  env: dict[str, str]) -> None:
    record(make_service(BACKUP_ENCRYPTION_KEY=None), 2)
    keyed = make_service()
    keyed.create(ACTOR, description="after the switch")
    record(keyed, 1)
    assert audit_verify(env).returncode == 0
    last = rewrite_chain_unkeyed(env)  # every entry unkeyed, the switch included, as if never keyed
    forge_head(env, *last)
    res = audit_verify(env)
    assert res.returncode != 0 and "after_the_switch" in res.stderr and "rewritten" in res.stderr


def test_an_unkeyed_entry_is_never_written_after_keyed_ones(service: BackupService, make_service) -> None:
    record(service, 2)
    without_key = make_service(BACKUP_ENCRYPTION_KEY=None)
    with pytest.raises(AuditError) as err:
        without_key.audit.record(ACTOR, "test", "after")
    assert "no audit key is configured" in err.value.message
    assert len(service.audit.entries()) == 2 and service.audit.verify().ok


# ----- finding 4: the key, the migration, rotation, anchors, syslog ---------------------------------
def test_the_chain_key_is_not_kept_beside_the_log(service: BackupService, env: dict[str, str],
                                                  make_service) -> None:
    record(service, 3)
    data = Path(env["EHR_BACKUP_DATA_DIR"])
    assert not (data / "audit-head.key").exists()
    assert all(e.key_id for e in service.audit.entries())
    # with another key, nothing can be checked (and the entries' MACs are not SHA-256 of their fields)
    stranger = make_service(BACKUP_ENCRYPTION_KEY=generate_key())
    report = stranger.audit.verify()
    assert not report.ok and "not configured" in report.reason


def test_an_existing_unkeyed_log_stays_verifiable_and_switches_to_the_key(make_service,
                                                                          env: dict[str, str]) -> None:
    old = make_service(BACKUP_ENCRYPTION_KEY=None)
    record(old, 3)
    old.db.dispose()
    _sql(env, "ALTER TABLE audit DROP COLUMN key_id")  # the schema of the version before keyed entries
    upgraded = make_service()
    report = upgraded.audit.verify()
    assert report.ok and report.keyed_since is None and any("not keyed yet" in n for n in report.notes)
    record(upgraded, 1)
    report = upgraded.audit.verify()
    assert report.ok and report.keyed_since == 4 and report.entries == 5
    # the keyed switch seals the unkeyed entries before it
    rewrite_chain_unkeyed(env, "UPDATE audit SET target = 'other' WHERE seq = 2", start=2, end=3)
    report = upgraded.audit.verify()
    assert not report.ok and report.first_bad == 4


def test_a_rotated_key_keeps_older_entries_verifiable_through_the_old_keys(make_service,
                                                                            env: dict[str, str]) -> None:
    first = make_service()
    record(first, 2)
    new_key = generate_key()
    rotated = make_service(BACKUP_ENCRYPTION_KEY=new_key,
                           BACKUP_ENCRYPTION_OLD_KEYS=env["BACKUP_ENCRYPTION_KEY"])
    record(rotated, 2)
    actions = [e.action for e in reversed(rotated.audit.entries())]
    assert actions == ["test", "test", "audit.keyed", "test", "test"]
    assert rotated.audit.verify().ok
    forgetful = make_service(BACKUP_ENCRYPTION_KEY=new_key)
    report = forgetful.audit.verify()
    assert not report.ok and report.first_bad == 1 and "not configured" in report.reason


def test_a_separate_audit_key_macs_the_chain(make_service) -> None:
    separate = make_service(EHR_BACKUP_AUDIT_KEY=generate_key())
    record(separate, 2)
    report = separate.audit.verify()
    assert report.ok and any("EHR_BACKUP_AUDIT_KEY" in n for n in report.notes)
    assert not make_service().audit.verify().ok  # the backup key alone does not verify it


def test_audit_verify_says_when_the_log_is_not_keyed(make_service, env: dict[str, str]) -> None:
    demo_like = {k: v for k, v in env.items() if k != "BACKUP_ENCRYPTION_KEY"}
    record(make_service(BACKUP_ENCRYPTION_KEY=None), 2)
    res = audit_verify(demo_like)
    assert res.returncode == 0 and "NOT KEYED" in res.stdout
    res = audit_verify(env)  # with a key configured, the log is intact but still unkeyed
    assert res.returncode == 0 and "not keyed yet" in res.stdout


def test_each_backup_file_records_the_audit_head_in_its_authenticated_header(service: BackupService) -> None:
    record(service, 2)
    backup = service.create(ACTOR, description="anchored")
    path = Path(backup.directory) / backup.id
    with open(path, "rb") as fh:
        _magic, _version, length = struct.unpack(">8sHI", fh.read(14))
        header = json.loads(fh.read(length))
    started = next(e for e in service.audit.entries(action="create") if e.outcome == "started")
    assert header["auditHead"] == {"seq": started.seq, "mac": started.hash}
    assert service.verify_audit().ok


def test_a_planted_file_claiming_a_newer_head_is_not_trusted(service: BackupService) -> None:
    backup = service.create(ACTOR, description="real")
    path = Path(backup.directory) / backup.id
    data = path.read_bytes()
    length = struct.unpack(">I", data[10:14])[0]
    header = json.loads(data[14:14 + length])
    header["auditHead"] = {"seq": 999, "mac": "0" * 64}
    blob = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    prefix = data[:8] + data[8:10] + struct.pack(">I", len(blob)) + blob
    forged = prefix + hashlib.sha256(prefix).digest()[:16] + data[14 + length + 16:]
    (path.parent / backup.id.replace("_real", "_planted")).write_bytes(forged)
    report = service.verify_audit()
    assert report.ok and any("could not be authenticated" in n for n in report.notes)


def _plant(backup, name: str, seq: int) -> Path:
    """A copy of `backup` whose header claims audit entry `seq` (it fails authentication)."""
    path = Path(backup.directory) / backup.id
    data = path.read_bytes()
    length = struct.unpack(">I", data[10:14])[0]
    header = json.loads(data[14:14 + length])
    header["auditHead"] = {"seq": seq, "mac": "0" * 64}
    blob = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    prefix = data[:8] + data[8:10] + struct.pack(">I", len(blob)) + blob
    planted = path.parent / backup.id.replace(backup.id.split("_", 2)[-1].split(".")[0], name)
    planted.write_bytes(prefix + hashlib.sha256(prefix).digest()[:16] + data[14 + length + 16:])
    return planted


def test_planted_files_do_not_push_the_real_anchors_out_of_reach(service: BackupService,
                                                                 env: dict[str, str]) -> None:
    record(service, 2)
    backup = service.create(ACTOR, description="remembers")
    for i in range(12):  # more than the old limit of ten tries, each claiming a newer head
        _plant(backup, f"planted{i}", 1000 + i)
    record(service, 2)
    _sql(env, "DELETE FROM audit WHERE seq > 2")
    forge_head(env, *rewrite_chain_unkeyed(env))
    report = service.verify_audit()
    assert not report.ok and backup.id in report.reason and "removed" in report.reason


def test_an_anchor_check_that_gives_up_on_planted_files_fails(service: BackupService) -> None:
    from ehr_backup.audit_anchor import find_anchors
    backup = service.create(ACTOR, description="real")
    planted = [_plant(backup, f"planted{i}", 1000 + i) for i in range(4)]
    scan = find_anchors([*planted, Path(backup.directory) / backup.id], service.keyring(), tries=3)
    assert scan.blinded and not scan.anchors and "failed authentication" in scan.problem()
    report = service.audit.verify(scan)
    assert not report.ok and "could not be checked" in report.reason
    scan = find_anchors([*planted[:2], Path(backup.directory) / backup.id], service.keyring(), tries=3)
    assert not scan.blinded and [a.source for a in scan.anchors] == [backup.id] and not scan.problem()


def test_the_audit_head_can_also_go_to_syslog(make_service) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        svc = make_service(EHR_BACKUP_AUDIT_SYSLOG=f"127.0.0.1:{sock.getsockname()[1]}")
        entry = svc.audit.record(ACTOR, "test", "x")
        message = sock.recv(4096).decode()
    assert f"audit head seq={entry.seq} mac={entry.hash}" in message and message.startswith("<37>")


def test_a_malformed_syslog_setting_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**env, "EHR_BACKUP_AUDIT_SYSLOG": "somewhere"})
    assert "EHR_BACKUP_AUDIT_SYSLOG" in str(err.value)


# ----- finding 8: CSV export -------------------------------------------------------------------------
def test_csv_export_neutralises_a_formula_in_every_text_column(service: BackupService) -> None:
    formulas = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", " =1+1", "\t=1", "\uff1d1+1"]
    for f in formulas:
        service.audit.record(Actor(f, f), f, f, f, f)
    out = io.StringIO()
    service.audit.export_csv(out, [e for e in reversed(service.audit.entries())])
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == len(formulas)
    for row, f in zip(rows, formulas, strict=True):
        for column in ("actor", "address", "action", "target", "outcome", "detail"):
            assert row[column] == "'" + f, (column, row[column])
    # plain values are left alone
    service.audit.record(ACTOR, "create", "backup_x", "ok", "fine")
    out = io.StringIO()
    service.audit.export_csv(out, service.audit.entries(limit=1))
    last = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert [last[c] for c in ("actor", "address", "action", "outcome")] == \
        ["tester", "127.0.0.1", "create", "ok"]
