"""The copies of each backup: recorded, shown, opened for reading (local first), made later, and deleted.

The local file at its location is a copy too (named by the location's key); rows in backup_copies hold the
others. A backup whose copy failed or went missing is "degraded"; `copy ID --to DEST` completes it later.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlmodel import col, select

from .. import storage
from ..audit import Actor
from ..catalogue import utcnow
from ..errors import BackupError, InvalidInput, NotFound
from ..fileformat import OpenedFile
from ..models import BackupRecord, Status
from ..pipeline import Progress, scan_dump
from . import s3
from .store import Target
from .tables import BackupCopy

if TYPE_CHECKING:
    from ..service import BackupService

OK, FAILED, MISSING, RUNNING = "ok", "failed", "missing", "running"


class Copies:
    """Copies of backups at destinations."""

    def __init__(self, service: BackupService) -> None:
        self.s = service
        self.db = service.db

    def record(self, backup_id: str, destination: str, uri: str, *, size: int | None, sha256: str | None,
               error: str | None) -> BackupCopy:
        """Store one copy's outcome (replacing an earlier attempt at the same destination)."""
        with self.db.writing() as s:
            for old in s.exec(select(BackupCopy).where(BackupCopy.backup_id == backup_id,
                                                       BackupCopy.destination == destination)).all():
                s.delete(old)
            row = BackupCopy(backup_id=backup_id, destination=destination, uri=uri, size=size, sha256=sha256,
                             status=FAILED if error else OK, error=error[:1000] if error else None,
                             created_at=utcnow())
            s.add(row)
        return row

    def all(self) -> list[BackupCopy]:
        """Every recorded copy (for the alert check)."""
        with self.db.reading() as s:
            return list(s.exec(select(BackupCopy)).all())

    def rows(self, backup_id: str) -> list[BackupCopy]:
        """The recorded (non-local) copies of a backup."""
        with self.db.reading() as s:
            return list(s.exec(select(BackupCopy).where(BackupCopy.backup_id == backup_id)
                               .order_by(BackupCopy.id)).all())

    def rows_of(self, backup_ids: Sequence[str]) -> dict[str, list[BackupCopy]]:
        """The recorded (non-local) copies of several backups, in one query (a list page shows 100)."""
        found: dict[str, list[BackupCopy]] = {backup_id: [] for backup_id in backup_ids}
        if backup_ids:
            with self.db.reading() as s:
                for c in s.exec(select(BackupCopy).where(col(BackupCopy.backup_id).in_(list(backup_ids)))
                                .order_by(BackupCopy.id)).all():
                    found[c.backup_id].append(c)
        return found

    def view(self, record: BackupRecord, exists: bool,
             rows: Sequence[BackupCopy] | None = None) -> dict[str, Any]:
        """`copies` (the local file first) and `degraded` for a backup's JSON; rows: its copies when already read."""
        local_status = {Status.COMPLETED: OK if exists else MISSING, Status.DISCOVERED: OK if exists else MISSING}
        copies = [] if remote_primary(record) else [{"destination": record.location, "uri": os.path.join(record.directory, record.id),
                   "size": record.size, "sha256": record.sha256,
                   "status": local_status.get(record.status, FAILED if record.status == Status.FAILED else
                                              record.status), "error": None}]
        copies += [{"destination": c.destination, "uri": c.uri, "size": c.size, "sha256": c.sha256,
                    "status": c.status, "error": c.error} for c in (self.rows(record.id) if rows is None else rows)]
        done = record.status in (Status.COMPLETED, Status.DISCOVERED)
        return {"copies": copies, "degraded": done and any(c["status"] != OK for c in copies)}

    # ----- reading ------------------------------------------------------------------------------------
    def open_any(self, record: BackupRecord) -> OpenedFile:
        """The backup opened from a healthy copy: the local file first, else each good S3 copy in turn."""
        try:
            fh: IO[bytes] | s3.ObjectReader = self._local(record)
        except NotFound as local_missing:
            fh = self._remote(record, local_missing)
        try:
            return OpenedFile(fh, self.s.keyring())  # type: ignore[arg-type]
        except BaseException:
            fh.close()
            raise

    def _local(self, record: BackupRecord) -> IO[bytes]:
        if remote_primary(record):  # written to (or rebuilt from) S3 only: there is no local file to try
            raise NotFound(f"backup {record.id} has no local file")
        return storage.open_in(Path(record.directory), record.id)

    def _remote(self, record: BackupRecord, local_missing: BackupError) -> s3.ObjectReader:
        tried: list[str] = []
        for row in self.rows(record.id):
            if row.status != OK:
                continue
            try:
                target = self.s.destinations.target(row.destination)
                return s3.ObjectReader(target, target.key_for(record.id))
            except BackupError as exc:
                tried.append(exc.message)
        if tried:
            raise NotFound(f"{local_missing.message}, and no other copy could be read: {'; '.join(tried)}")
        raise local_missing

    def open_stream(self, record: BackupRecord) -> tuple[Any, int]:
        """A readable handle on a healthy copy (local first) and its size, for a download."""
        if any(r.status == OK for r in self.rows(record.id)):  # a good S3 copy to fall back on: authenticate first
            from ..restore.operation import check_matches_catalogue
            from .fallback import open_authenticated

            opened, _, _ = open_authenticated(self.s, record, check=check_matches_catalogue)
            opened.fh.seek(0)
            return opened.fh, opened.size
        try:
            fh = self._local(record)
            return fh, _size(fh)
        except NotFound as local_missing:
            reader = self._remote(record, local_missing)
            return reader, reader.size

    # ----- copy later ---------------------------------------------------------------------------------
    def copy_to(self, actor: Actor, backup_id: str, destination: str) -> dict[str, Any]:
        """Stream a backup from a healthy copy to a destination; record the copy; the bytes must match."""
        record = self.s._resolve(actor, "copy", backup_id)
        try:
            if record.status != Status.COMPLETED or not record.sha256:
                raise InvalidInput(f"backup {record.id} is {record.status}; only a completed backup can be copied")
            target = self.s.destinations.target(destination)
            reading = self.s._backup_lock(record.id).acquire(f"copying {record.id}")
        except BackupError as exc:
            self.s.audit.record(actor, "copy", record.id, "refused", exc.message)
            raise
        self.s.audit.record(actor, "copy", record.id, "started", f"to {target.name}")
        try:
            uri, size, sha = self._stream(record, target)
        except BackupError as exc:
            self.record(record.id, target.name, target.uri(target.key_for(record.id)), size=None, sha256=None,
                        error=exc.message)
            self.s.audit.record(actor, "copy", record.id, "failed", f"to {target.name}: {exc.message}")
            raise
        finally:
            reading.release()
        self.record(record.id, target.name, uri, size=size, sha256=sha, error=None)
        self.s.audit.record(actor, "copy", record.id, "ok", f"to {target.name}: {size} bytes")
        return {"backupId": record.id, "destination": target.name, "uri": uri, "size": size, "sha256": sha,
                "status": OK}

    def _stream(self, record: BackupRecord, target: Target) -> tuple[str, int, str]:
        fh, _ = self.open_stream(record)
        writer = s3.MultipartWriter(target, target.key_for(record.id), self.s.settings.s3_part_mb * s3.MIB)
        try:
            try:
                while data := fh.read(s3.READ_CHUNK):
                    writer.write(data)
            finally:
                fh.close()
            if writer.sha.hexdigest() != record.sha256:  # never publish bytes that differ from the backup
                raise BackupError("the source copy's SHA-256 differs from the backup's record; nothing was copied")
            uri = writer.complete()
        except BaseException:
            writer.abort()
            raise
        return uri, writer.size, writer.sha.hexdigest()

    def forget(self, backup_id: str, destination: str) -> None:
        """Drop the record of one copy (its object was deleted)."""
        with self.db.writing() as s:
            for row in s.exec(select(BackupCopy).where(BackupCopy.backup_id == backup_id,
                                                       BackupCopy.destination == destination)).all():
                s.delete(row)

    # ----- delete -------------------------------------------------------------------------------------
    def delete_remote(self, record: BackupRecord) -> None:
        """Delete every S3 copy of a backup (an unreachable destination fails the delete, nothing forgotten)."""
        for row in self.rows(record.id):
            if row.status == FAILED:
                continue  # an aborted upload left nothing
            try:
                target = self.s.destinations.target(row.destination)
            except NotFound:
                continue  # the destination was removed
            s3.delete(target, target.key_for(record.id))
        with self.db.writing() as s:
            for row in s.exec(select(BackupCopy).where(BackupCopy.backup_id == record.id)).all():
                s.delete(row)

    # ----- verify one copy ------------------------------------------------------------------------------
    def verify_copy(self, actor: Actor, backup_id: str, destination: str) -> dict[str, Any]:
        """Read every byte of one S3 copy back, authenticate it and compare its SHA-256 with the record."""
        record = self.s._resolve(actor, "verify", backup_id)
        rows = [r for r in self.rows(record.id) if r.destination == destination]
        try:
            if not rows:
                raise NotFound(f"backup {record.id} has no copy at {destination}")
            target = self.s.destinations.target(destination)
        except BackupError as exc:
            self.s.audit.record(actor, "verify", record.id, "refused", exc.message)
            raise
        try:
            reader = s3.ObjectReader(target, target.key_for(record.id))
            try:
                opened = OpenedFile(reader, self.s.keyring())  # type: ignore[arg-type]
                trailer = opened.authenticate()
                scan = scan_dump(opened, trailer, Progress(), threading.Event())
            finally:
                reader.close()
            if record.sha256 and opened.sha256 != record.sha256:
                raise BackupError(f"the copy at {destination} differs from the backup (SHA-256)")
        except BackupError as exc:
            self._set_status(rows[-1], FAILED, exc.message)
            self.s.audit.record(actor, "verify", record.id, "failed", f"copy at {destination}: {exc.message}")
            raise
        self._set_status(rows[-1], OK, None)
        self.s.audit.record(actor, "verify", record.id, "ok", f"copy at {destination}: authentic")
        return {"backupId": record.id, "destination": destination, "ok": True, "authentic": True,
                "complete": scan.complete, "sha256": opened.sha256, "dumpBytes": scan.dump_bytes,
                "tableRowCounts": scan.rows}

    def set_status(self, row: BackupCopy, status: str, error: str | None) -> None:
        """Change one recorded copy's state (a re-verification or a rebuild found it good, bad or gone)."""
        self._set_status(row, status, error)

    def _set_status(self, row: BackupCopy, status: str, error: str | None) -> None:
        with self.db.writing() as s:
            found = s.get(BackupCopy, row.id)
            if found is not None:
                found.status, found.error = status, error
                s.add(found)


def remote_primary(record: BackupRecord) -> bool:
    """Whether a backup's own record points at an S3 destination (no local file): its S3 copy is the primary."""
    return (record.directory or "").startswith("s3://")


def _size(fh: IO[bytes]) -> int:
    size = fh.seek(0, 2)
    fh.seek(0)
    return size



def failed_copies(records: list[BackupRecord], copies: list[BackupCopy]) -> list[dict[str, Any]]:
    """Pure: per database and destination, the newest completed backup's copy there when it is not ok
    (records newest first): what an alert is about until a later backup's copy, or `copy --to`, succeeds;
    else a copy of an older backup that failed its re-read (re-verification found it corrupt or gone)."""
    by_backup = {r.id: r for r in records if r.status == Status.COMPLETED}
    newest: dict[tuple[str, str], tuple[BackupRecord, BackupCopy]] = {}
    for c in copies:
        r = by_backup.get(c.backup_id)
        if r is None:
            continue
        key = (r.database, c.destination)
        seen = newest.get(key)
        if seen is None or (r.created_at, c.id or 0) > (seen[0].created_at, seen[1].id or 0):
            newest[key] = (r, c)
    for c in sorted(copies, key=lambda c: c.id or 0):  # a copy that failed its re-read, whatever its age
        r = by_backup.get(c.backup_id)
        if r is not None and c.status != OK and (c.error or "").startswith("re-read: ") and \
                newest[(r.database, c.destination)][1].status == OK:
            newest[(r.database, c.destination)] = (r, c)
    return [{"database": db, "destination": dest, "backupId": r.id, "status": c.status, "error": c.error or "",
             "at": c.created_at} for (db, dest), (r, c) in sorted(newest.items()) if c.status != OK]
