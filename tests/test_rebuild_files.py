"""Catalogue rebuild over files written by the real writer: streaming, keys, links (no database needed)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from ehr_backup import verified_sidecar as sidecar
from ehr_backup.fileformat import EncryptedWriter
from ehr_backup.keys import MasterKey, generate_key, load_keyring, parse_key
from ehr_backup.rebuild import examine, plan
from ehr_backup.rebuild_source import LocalFolder

NAME = "backup_2026-11-29T02-00-00-000Z_file.sql.gz.enc"
OTHER = "backup_2026-11-29T03-00-00-000Z_other.sql.gz.enc"


def make(directory: Path, name: str, key: MasterKey, size: int = 1000) -> Path:
    """A backup file made by the real writer (the body is random bytes: a rebuild never decompresses it)."""
    path = directory / name
    with open(path, "wb") as fh:
        w = EncryptedWriter(fh, key, {"id": name, "description": "made here", "database": "ehr",
                                      "createdAt": "2026-11-29T02:00:00.000Z", "createdBy": "ann", "kind": "safety",
                                      "compression": "gzip", "protects": f"{OTHER} into ehr"})
        left = size
        while left:
            piece = os.urandom(min(left, 1 << 20))
            w.write(piece)
            left -= len(piece)
        w.finish({"tableRowCounts": {"public.t": 7}, "dumpBytes": size, "completedAt": "2026-11-29T02:00:05Z"})
    return path


def test_a_large_file_is_authenticated_in_one_pass_in_constant_memory(tmp_path: Path) -> None:
    ring = load_keyring(generate_key(), None)
    path = make(tmp_path, NAME, ring.encryption_key(), size=64 << 20)
    folder = LocalFolder("default", tmp_path)
    [entry] = list(folder.entries())
    tracemalloc.start()
    try:
        found = examine(folder, entry, ring)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # a 64 MiB file read with a few MiB at most
    assert found.fields is not None and found.problem is None
    assert found.fields["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert found.fields["size"] == path.stat().st_size and found.fields["dump_bytes"] == 64 << 20
    assert found.fields["kind"] == "safety" and found.fields["protects"] == f"{OTHER} into ehr"
    assert found.fields["duration_s"] == 5.0


def test_files_of_an_older_key_rebuild_and_of_an_unknown_key_are_refused_by_name(tmp_path: Path) -> None:
    old, new, stranger = generate_key(), generate_key(), generate_key()
    make(tmp_path, NAME, parse_key(old))
    make(tmp_path, OTHER, parse_key(stranger))
    folder = LocalFolder("default", tmp_path)
    ring = load_keyring(new, old)  # the key was rotated: the old one still reads old files
    found = {f.name: f for f in (examine(folder, e, ring) for e in folder.entries())}
    assert found[NAME].fields is not None
    assert found[OTHER].fields is None and f"key {parse_key(stranger).key_id} not available" in (found[OTHER].problem or "")


def test_a_truncated_file_and_a_link_are_never_recorded(tmp_path: Path) -> None:
    ring = load_keyring(generate_key(), None)
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    path = make(inside, NAME, ring.encryption_key(), size=5000)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 1)
    real = make(outside, OTHER, ring.encryption_key())
    (inside / OTHER).symlink_to(real)  # a link named like a backup: never followed
    folder = LocalFolder("default", inside)
    findings = [examine(folder, e, ring) for e in folder.entries()]
    result = plan(findings, [], [folder.directory])
    assert [f.name for f in findings] == [NAME] and not result.add
    assert result.refused[0]["file"] == NAME and "not authentic" in result.refused[0]["reason"]


def test_a_passphrase_key_vouches_for_its_verification_records(tmp_path: Path) -> None:
    ring = load_keyring("passphrase:correct horse battery staple", None)
    path = make(tmp_path, NAME, ring.encryption_key())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    done = sidecar.Verified(datetime(2026, 11, 29, 4, tzinfo=UTC), False, "row counts differ", 2.0)
    assert sidecar.record(tmp_path, NAME, ring.encryption_key(), sha256=digest, size=path.stat().st_size,
                          verified=done)
    folder = LocalFolder("default", tmp_path)
    [entry] = list(folder.entries())  # the record is no backup
    found = examine(folder, entry, ring)
    assert found.verified == done and found.warning is None
    assert plan([found], [], [folder.directory]).add[0]["verify_ok"] is False
