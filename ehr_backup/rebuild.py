"""Catalogue rebuild: the catalogue recreated from the backup files' authenticated headers and trailers.

Three steps. `examine` reads one file of a source (rebuild_source.py) and authenticates it: the header
is parsed and the footer located by seeking, but the file's one HMAC tag covers every byte, so
authenticating header and trailer means reading the whole file once; it is streamed in 1 MiB pieces
(constant memory, the body is never decrypted). `plan` (pure) compares what the files say with the
catalogue's rows: rows to add, rows to complete, rows whose file is gone, files refused. `apply` writes
that plan. A file that fails authentication is reported and never recorded as good.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import BackupError
from .fileformat import OpenedFile
from .keys import KEY_ID_RE, KeyRing
from .profiles import NAME_RE as PROFILE_NAME_RE
from .rebuild_source import Entry, Source
from .storage import LOCATIONS
from .verified_sidecar import SidecarInvalid, Verified, check

MAX_DESCRIPTION = 500
KINDS = ("manual", "scheduled", "safety")
READABLE = ("completed", "discovered")  # statuses whose file should be in its location
COMPLETABLE = ("completed", "discovered", "failed", "cancelled")  # rows an authentic file may complete
# the record fields a file proves; a row of ours keeps its own values, the file only fills the gaps
FILLED = ("description", "database", "created_by", "kind", "compression", "key_id", "server_version",
          "pg_dump_version", "schedule", "protects", "profile", "size", "sha256", "dump_bytes", "table_counts",
          "finished_at", "duration_s")


@dataclass(frozen=True)
class Finding:
    """What one file in one source turned out to be: its record fields when authentic, else the problem."""

    location: str
    directory: str
    name: str
    size: int
    fields: dict[str, Any] | None = None  # BackupRecord fields, from the authenticated header and trailer
    problem: str | None = None
    verified: Verified | None = None  # the last verification its sidecar records, when that authenticates
    warning: str | None = None  # e.g. a sidecar that did not authenticate (ignored)
    unread: bool = False  # not read at all (busy): says nothing about the file


@dataclass(frozen=True)
class Row:
    """The catalogue facts the plan compares with the files."""

    id: str
    location: str
    directory: str
    status: str
    origin: str = "catalogue"
    sha256: str | None = None
    table_counts: str | None = None
    verified_at: datetime | None = None
    verify_ok: bool | None = None
    error: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the FILLED fields as they are now


@dataclass
class Plan:
    """What a rebuild does: add, update (id -> changed fields), mark missing; refused files and warnings."""

    add: list[dict[str, Any]] = field(default_factory=list)
    update: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    found_in: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (location, directory) read from
    failed: dict[str, str] = field(default_factory=dict)  # catalogued good, its file refused: id -> why
    # every place an accepted backup's identical bytes were found: id -> [(location, directory, size, sha256)]
    # (the first is found_in; the others are copies, e.g. the same backup at an S3 destination)
    copies: dict[str, list[tuple[str, str, int, str]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (updates as {id, changes: [field names]})."""
        return {"added": [{"id": a["id"], "location": a["location"], "directory": a["directory"],
                           "description": a["description"], "database": a["database"],
                           "createdAt": _iso(a["created_at"]), "size": a["size"],
                           "verification": None if a.get("verify_ok") is None else
                           ("ok" if a["verify_ok"] else "failed")} for a in self.add],
                "updated": [{"id": i, "changes": sorted(c)} for i, c in self.update.items()],
                "missing": list(self.missing), "unchanged": len(self.unchanged),
                "failedVerification": [{"id": i, "reason": r} for i, r in self.failed.items()],
                "refused": list(self.refused), "warnings": list(self.warnings)}


def examine(source: Source, entry: Entry, keyring: KeyRing) -> Finding:
    """Authenticate one file (every byte streamed through the MAC once) and read what it records."""
    def refused(problem: str) -> Finding:
        return Finding(source.location, source.directory, entry.name, entry.size, problem=problem)

    try:
        fh = entry.open_binary()
    except BackupError as exc:
        return refused(exc.message)
    except OSError as exc:
        return refused(f"cannot read the file: {exc.strerror or exc}")
    try:
        opened = OpenedFile(fh, keyring)  # header read; footer found by seeking; key known or KeyNotAvailable
        trailer = opened.authenticate()  # the one tag covers the whole file: one streaming pass
        size, sha = opened.size, opened.sha256
    except BackupError as exc:  # NotAuthentic, KeyNotAvailable (named), a read error
        return refused(exc.message)
    except OSError as exc:
        return refused(f"cannot read the file: {exc.strerror or exc}")
    finally:
        fh.close()
    assert sha is not None
    header = opened.header.fields
    if header.get("id") not in (None, entry.name):
        return refused("its authenticated header names another backup id: it was renamed or swapped; not recorded")
    fields = record_fields(entry.name, header, trailer, size=size, sha256=sha)
    if fields["created_at"] is None:
        return refused("its authenticated header has no creation time; not recorded")
    verified, warning = None, None
    data = source.read_sidecar(entry.name)
    if data is not None:
        try:
            verified = check(data, keyring, backup_id=entry.name, sha256=sha, size=size)
        except SidecarInvalid as exc:
            warning = f"verification record ignored: {exc.message}"
    return Finding(source.location, source.directory, entry.name, size, fields=fields, verified=verified,
                   warning=warning)


def record_fields(name: str, header: dict[str, Any], trailer: dict[str, Any], *, size: int,
                  sha256: str) -> dict[str, Any]:
    """BackupRecord fields from an authenticated header and trailer (text still bounded and printable)."""
    created = parse_time(header.get("createdAt"))
    finished = parse_time(trailer.get("completedAt"))
    counts = trailer.get("tableRowCounts")
    dump_bytes = trailer.get("dumpBytes")
    kind = text(header, "kind", 20)
    key_id = header.get("keyId")
    profile = text(header, "profile", 40)  # the database profile it was made from (profiles.py); none: default
    return {"id": name, "description": text(header, "description", MAX_DESCRIPTION),
            "database": text(header, "database", 63), "created_at": created, "created_by": text(header, "createdBy", 200),
            "kind": kind if kind in KINDS else "manual", "compression": text(header, "compression", 10) or "gzip",
            "key_id": key_id if isinstance(key_id, str) and KEY_ID_RE.fullmatch(key_id) else None,
            "server_version": text(header, "serverVersion", 200) or None,
            "pg_dump_version": text(header, "pgDumpVersion", 200) or None,
            "schedule": text(header, "schedule", 64) or None, "protects": text(header, "protects", 300) or None,
            "profile": profile if profile and profile != "default" and PROFILE_NAME_RE.fullmatch(profile) else None,
            "size": size, "sha256": sha256,
            "dump_bytes": dump_bytes if isinstance(dump_bytes, int) else None,
            "table_counts": json.dumps(counts) if isinstance(counts, dict) else None,
            "finished_at": finished,
            "duration_s": round((finished - created).total_seconds(), 3) if finished and created else None}


def plan(findings: Iterable[Finding], rows: Sequence[Row], scanned: Iterable[str]) -> Plan:
    """Compare the files with the catalogue (pure): what to add, complete, mark missing, and what is refused.

    Existing rows are completed, never duplicated: a row of ours keeps its values and gains the ones it
    lacks; a row made from an unauthenticated header (discovered) or left failed by a crash takes what
    the authenticated file says. A file whose SHA-256 or row counts differ from its row is refused (a
    swapped file). Rows of a scanned folder whose file was not found are marked missing; a row whose own
    file does not authenticate (a key not configured included, as verify counts it) fails verification.
    """
    by_id = {r.id: r for r in rows}
    result = Plan()
    seen: set[str] = set()
    findings = list(findings)
    present = {(f.name, f.directory) for f in findings}  # refused files are there all the same: not missing
    for f in sorted(findings, key=lambda f: (f.name, _prefer(by_id.get(f.name), f))):
        where = {"file": f.name, "location": f.location, "directory": f.directory}
        if f.warning:
            result.warnings.append({**where, "warning": f.warning})
        if f.fields is None:
            result.refused.append({**where, "reason": f.problem or "not authentic"})
            row = by_id.get(f.name)
            if (not f.unread and row is not None and row.directory == f.directory and row.status in READABLE
                    and row.verify_ok is not False):
                result.failed[f.name] = f.problem or "not authentic"  # recorded as a failed verification
            continue
        if f.name in seen:
            if (f.location not in LOCATIONS and f.name in result.copies
                    and result.copies[f.name][0][3] == f.fields["sha256"]):
                result.copies[f.name].append((f.location, f.directory, f.size, f.fields["sha256"]))
                continue  # the same bytes at a destination (S3): a copy of it; two local folders stay refused
            result.refused.append({**where, "reason": "another copy of this backup was recorded from another "
                                                      "folder; this one is left as it is"})
            continue
        row = by_id.get(f.name)
        accepted = [(f.location, f.directory, f.size, f.fields["sha256"])]
        if row is None:
            seen.add(f.name)
            result.found_in[f.name] = (f.location, f.directory)
            result.add.append(_new_row(f))
            result.copies[f.name] = accepted
            continue
        if row.status not in COMPLETABLE:
            seen.add(f.name)
            result.unchanged.append(row.id)  # running: its own job finishes it
            continue
        if (row.sha256 and row.sha256 != f.fields["sha256"]) or (
                row.table_counts and f.fields["table_counts"]
                and json.loads(row.table_counts) != json.loads(f.fields["table_counts"])):
            reason = "this is not the file catalogued under its id (its SHA-256 or row counts differ): it was replaced"
            result.refused.append({**where, "reason": reason})
            if row.directory == f.directory and row.status in READABLE and row.verify_ok is not False:
                result.failed[row.id] = reason  # as verify records a swapped file
            continue
        seen.add(f.name)  # only now: a swapped file does not hide an authentic copy of this backup elsewhere
        result.found_in[f.name] = (f.location, f.directory)
        result.copies[f.name] = accepted
        changes = _completion(row, f)
        if changes:
            result.update[row.id] = changes
        else:
            result.unchanged.append(row.id)
    folders = set(scanned)
    for r in rows:
        if r.id not in seen and (r.id, r.directory) not in present and r.status in READABLE and r.directory in folders:
            result.missing.append(r.id)  # apply() writes the mark only on rows not marked yet
    return result


MISSING_NOTE = "missing: the file was not found in its location when the catalogue was rebuilt"


def marked_missing(r: Any) -> bool:
    """Whether a row (or record) already carries the missing mark."""
    return (r.error or "").startswith("missing:")


def _prefer(row: Row | None, f: Finding) -> tuple[int, int]:
    """Among copies of one id, a local file first (it becomes the primary again when the row points at a
    destination), then the one in the row's own folder."""
    return (0 if f.location in LOCATIONS else 1, 0 if row is not None and row.directory == f.directory else 1)


def _new_row(f: Finding) -> dict[str, Any]:
    assert f.fields is not None
    row = {**f.fields, "location": f.location, "directory": f.directory, "status": "completed",
           "origin": "catalogue", "error": None}
    if f.verified is not None:
        row.update(_verification(f.verified))
    return row


def _completion(row: Row, f: Finding) -> dict[str, Any]:
    """The fields an existing row gains from its authenticated file."""
    assert f.fields is not None
    changes: dict[str, Any] = {}
    take_all = row.status != "completed"  # discovered (unauthenticated claims) or failed by a crash
    for name in FILLED:
        value, now = f.fields.get(name), row.values.get(name)
        if value is not None and (take_all or now in (None, "")) and now != value:
            changes[name] = value
    if row.status == "discovered" and f.fields["created_at"]:
        changes["created_at"] = f.fields["created_at"]  # a discovered row sorted by the file's mtime
    if row.status != "completed":
        changes["status"] = "completed"
    if row.origin == "discovered":  # authenticated with a key of ours: adopted, as if the catalogue had made it
        changes["origin"] = "catalogue"
    if row.error and (take_all or marked_missing(row)):
        changes["error"] = None
    if row.directory != f.directory or row.location != f.location:
        changes.update(directory=f.directory, location=f.location)  # the file moved to another folder
    known = _aware(row.verified_at)
    if f.verified is not None and (known is None or f.verified.at > known):
        changes.update(_verification(f.verified))
    return changes


def _verification(v: Verified) -> dict[str, Any]:
    return {"verified_at": v.at, "verify_ok": v.ok, "verify_message": v.message, "verify_duration_s": v.seconds}


def text(header: dict[str, Any], key: str, limit: int) -> str:
    """A header field as printable, bounded text (authentic is not the same as safe to show)."""
    value = header.get(key)
    raw = value if isinstance(value, str) else ""
    return "".join(c if c.isprintable() else "?" for c in raw)[:limit]


def parse_time(value: Any) -> datetime | None:
    """An ISO time from a header or trailer, timezone-aware (UTC when it says nothing)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11 reads a trailing Z
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None
