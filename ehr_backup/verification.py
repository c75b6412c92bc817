"""Proving backups intact: right after each backup, on demand, and re-reading stored ones against media rot.

A verification authenticates every byte of the file, decompresses the whole dump, checks it is complete
and that its table-by-table row counts are the ones recorded; the outcome, time and duration are kept
on the backup. `due_for_reverify` is the pure choice of which stored backups to re-read tonight so that
each one is re-read within a number of days.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import verified_sidecar as sidecar
from .audit import Actor
from .catalogue import as_utc, utcnow
from .destinations.fallback import open_authenticated
from .destinations.reverify import verify_copies
from .errors import BackupError, Busy, Cancelled
from .fileformat import OpenedFile
from .models import BackupRecord, Status
from .pipeline import Progress, scan_dump
from .restore.operation import check_matches_catalogue
from .verified_sidecar import Verified

if TYPE_CHECKING:
    from .service import BackupService, Task

READABLE = (Status.COMPLETED, Status.DISCOVERED)


@dataclass(frozen=True)
class Stored:
    """What the re-read choice needs to know about a backup."""

    id: str
    created_at: datetime
    verified_at: datetime | None


def due_for_reverify(backups: Sequence[Stored], now: datetime, within_days: int) -> list[str]:
    """The backups to re-read now so that each is re-read at least every `within_days` days.

    Never-verified backups first, then those verified longest ago; tonight's share is the larger of
    what is overdue and an even share (count / days, rounded up), so the work spreads over the nights.
    """
    if not backups or within_days < 1:
        return []
    limit = timedelta(days=within_days)

    def last(b: Stored) -> datetime:
        return b.verified_at or datetime.min.replace(tzinfo=now.tzinfo)

    ordered = sorted(backups, key=lambda b: (last(b), b.created_at, b.id))
    overdue = [b for b in ordered if b.verified_at is None or now - b.verified_at >= limit]
    share = max(len(overdue), math.ceil(len(backups) / within_days))
    return [b.id for b in ordered[:share]]


class Verifications:
    """Verify one backup, every backup, or tonight's share; record outcome, time and duration."""

    def __init__(self, service: BackupService) -> None:
        self.s = service

    def prepare(self, actor: Actor, backup_id: str) -> Task:
        """Reserve the backup for reading (it cannot be deleted meanwhile); the task verifies it."""
        from .service import Task

        record = self.s._resolve(actor, "verify", backup_id)
        try:
            reading = self.s._backup_lock(record.id).acquire(f"a verification of {record.id}")
        except Busy as exc:
            self.s.audit.record(actor, "verify", record.id, "refused", exc.message)
            raise
        try:
            alive = self.s._started(actor, "verify", record.id)
        except BaseException:
            reading.release()
            raise

        def work(progress: Progress, cancel: threading.Event) -> dict[str, Any]:
            return self.run(actor, record, progress, cancel)

        return Task("verify", record.id, work, [alive, reading], backup_id=record.id)

    def run(self, actor: Actor, record: BackupRecord, progress: Progress,
            cancel: threading.Event) -> dict[str, Any]:
        """Authenticate, decompress and check one backup; record the outcome on it."""
        from .service import MAX_DESCRIPTION, _header_text, _parse_time

        started = time.monotonic()
        opened = None
        try:
            progress.phase = "authenticating"
            # the first copy that authenticates: a missing or corrupt local file falls back to a good S3 copy
            opened, trailer, passed_over = open_authenticated(self.s, record, _reading(progress),
                                                              check_matches_catalogue)
            try:
                sha = opened.sha256
                scan = scan_dump(opened, trailer, progress, cancel)
            finally:
                opened.fh.close()
        except BackupError as exc:
            if not isinstance(exc, Cancelled):
                at, took = utcnow(), _took(started)
                self.s.catalogue.update(record.id, verified_at=at, verify_ok=False,
                                        verify_message=exc.message, verify_duration_s=took)
                if opened is not None and opened.sha256:  # authentic, yet not good: the record says so too
                    self._sidecar(record, opened, Verified(at, False, exc.message, took))
            self.s.audit.record(actor, "verify", record.id, "cancelled" if isinstance(exc, Cancelled) else "failed",
                                exc.message)
            raise
        updates: dict[str, Any] = {"verified_at": utcnow(), "verify_ok": True, "verify_duration_s": _took(started),
                                   "verify_message": f"authentic; dump complete; {len(scan.rows)} tables"
                                   + "".join(f"; passed over {p}" for p in passed_over)[:1500]}
        if record.status == Status.DISCOVERED:  # now proven: fill in what the authenticated file says
            h = opened.header.fields
            updates.update(sha256=sha, size=opened.size, dump_bytes=scan.dump_bytes,
                           table_counts=json.dumps(scan.rows), status=Status.COMPLETED,
                           key_id=opened.header.key_id, error=None,
                           description=_header_text(h, "description", MAX_DESCRIPTION),
                           created_by=_header_text(h, "createdBy", 200), database=_header_text(h, "database", 63),
                           created_at=_parse_time(h.get("createdAt")) or record.created_at)
        self.s.catalogue.update(record.id, **updates)
        self._sidecar(record, opened, Verified(updates["verified_at"], True, updates["verify_message"],
                                               updates["verify_duration_s"]))
        self.s.audit.record(actor, "verify", record.id, "ok",
                            f"{updates['verify_message']}; {updates['verify_duration_s']} s")
        progress.phase = "done"
        return {"backupId": record.id, "ok": True, "authentic": True, "complete": scan.complete, "passedOver": passed_over,
                "sha256": sha, "dumpBytes": scan.dump_bytes, "tableRowCounts": scan.rows,
                "keyId": opened.header.key_id, "seconds": updates["verify_duration_s"]}

    def _sidecar(self, record: BackupRecord, opened: OpenedFile, verified: Verified) -> None:
        """Keep this verification beside the file too, for a catalogue rebuilt from storage alone."""
        assert opened.sha256 is not None
        if (record.directory or "").startswith("s3://"):
            return  # the backup lives at an S3 destination only: there is no local folder to write beside
        try:
            master = self.s.keyring().get(opened.header.key_id)
        except BackupError:
            return
        sidecar.record(Path(record.directory), record.id, master, sha256=opened.sha256, size=opened.size,
                       verified=verified)

    def after_create(self, actor: Actor, record: BackupRecord, progress: Progress,
                     cancel: threading.Event) -> BackupRecord:
        """Read a new backup back from its location at once: a backup is not good until it is proven."""
        progress.phase = "verifying"
        try:
            self.run(actor, record, progress, cancel)
        except Cancelled:
            raise
        except BackupError as exc:
            raise BackupError(f"the backup was written but did not verify: {exc.message}; it is kept, marked "
                              "as failing verification") from None
        done = self.s.catalogue.get(record.id)
        assert done is not None
        return done

    def verify_many(self, actor: Actor, ids: Sequence[str], progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> dict[str, Any]:
        """Verify several backups one after another; failures are recorded and counted, never hidden."""
        results: list[dict[str, Any]] = []
        for backup_id in ids:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            try:
                task = self.prepare(actor, backup_id)
                if progress is not None:
                    task.progress = progress
                out = task.run()
                results.append({"backupId": backup_id, "ok": True, "seconds": out["seconds"]})
            except Cancelled:
                raise
            except BackupError as exc:
                results.append({"backupId": backup_id, "ok": False, "error": exc.message})
            # its S3 copies are read back too: a corrupt or vanished copy degrades the backup (copy alert)
            results[-1]["copies"] = verify_copies(self.s, actor, backup_id)
        failed = [r for r in results if not r["ok"]]
        copies_failed = sum(1 for r in results for c in r["copies"] if not c["ok"])
        return {"verified": len(results) - len(failed), "failed": len(failed), "copiesFailed": copies_failed,
                "results": results}

    def verify_all(self, actor: Actor, since: datetime | None = None) -> dict[str, Any]:
        """Verify every readable backup (made at or after `since`, when given), oldest first."""
        records = [r for r in self.s.catalogue.all() if r.status in READABLE
                   and (since is None or (as_utc(r.created_at) or utcnow()) >= since)]
        records.sort(key=lambda r: as_utc(r.created_at) or utcnow())
        return self.verify_many(actor, [r.id for r in records])

    def reverify_tonight(self, actor: Actor, within_days: int, now: datetime | None = None) -> dict[str, Any]:
        """Re-read tonight's share of the stored backups (see due_for_reverify)."""
        now = now or utcnow()
        stored = [Stored(r.id, as_utc(r.created_at) or now, as_utc(r.verified_at)) for r in self.s.catalogue.all()
                  if r.status in READABLE]
        return self.verify_many(actor, due_for_reverify(stored, now, within_days))


def _reading(progress: Progress) -> Any:
    """An authenticate() progress callback: bytes read of the copy's size."""
    def update(done: int, total: int) -> None:
        progress.total, progress.bytes_read = total, done
    return update


def _took(started: float) -> float:
    return round(time.monotonic() - started, 3)
