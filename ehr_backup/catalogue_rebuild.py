"""`catalogue rebuild` for one installation: which folders are read, the plan applied, every change audited."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from . import paths as paths_
from . import storage
from .audit import Actor
from .catalogue import utcnow
from .errors import BackupError, Busy, Cancelled, InvalidInput, NotFound
from .locks import lock_for
from .models import BackupRecord
from .rebuild import FILLED, MISSING_NOTE, Finding, Plan, Row, examine, marked_missing, plan
from .rebuild_folders import known_folders
from .rebuild_job import STOPPED, Reading, RebuildProgress
from .rebuild_source import Entry, LocalFolder, Source
from .text import clean_text, printable

if TYPE_CHECKING:
    from .service import BackupService, Task

ACTION = "catalogue.rebuild"
log = logging.getLogger("ehr_backup.rebuild")


class CatalogueRebuild:
    """Rebuild (or preview rebuilding) the catalogue from the files in the locations."""

    def __init__(self, service: BackupService) -> None:
        self.s = service
        # more kinds of storage (S3 destinations) plug in here: provider(location) -> its sources, where
        # location is None (all) or the key or name asked for; a provider that knows no such name returns []
        self.providers: list[Callable[[str | None], list[Source]]] = []
        # and write what they catalogue beside the backups (S3 copies) from the same plan, after _apply
        self.appliers: list[Callable[[Actor, Plan, list[Source]], None]] = []

    def sources(self, location: str | None = None, paths: Sequence[str] = ()) -> list[Source]:
        """What to read: the local folders (local_sources) and the sources of every provider; `location`
        keeps one location's (or one provider's destination's)."""
        if paths and location not in (None, "custom"):
            raise InvalidInput("a path is only accepted with the custom location")
        local = self.local_sources(location, paths) if location is None or location in storage.LOCATIONS else []
        others = [source for provider in self.providers for source in provider(location)]
        if location is not None and location not in storage.LOCATIONS and not others:
            raise InvalidInput(f"unknown location {location!r}: choose one of {', '.join(storage.LOCATIONS)}")
        return local + others

    def local_sources(self, location: str | None, paths: Sequence[str]) -> list[Source]:
        """The standard locations, every folder the app has recorded (rows, schedules, storage history,
        folders created), and `paths` (custom folders, checked like a custom location: inside
        EHR_BACKUP_CUSTOM_ROOTS, no system folder)."""
        found = known_folders(self.s)  # rebuild_folders.py: every folder the app has recorded
        for text in paths:
            checked = paths_.check_custom(clean_text(text, paths_.MAX_PATH_BYTES, "the path"),
                                          self.s.forbidden_dirs(), self.s.settings.custom_roots)
            if not checked.is_dir():
                raise NotFound(f"no such folder: {checked}")
            found.append(("custom", Path(os.path.realpath(checked))))
        out: list[Source] = []
        seen: set[str] = set()
        for key, directory in found:
            if (location is None or key == location) and str(directory) not in seen:
                seen.add(str(directory))
                out.append(LocalFolder(key, directory))
        return out

    def prepare(self, actor: Actor, *, location: str | None = None, paths: Sequence[str] = (),
                dry_run: bool = False) -> Task:
        """Check the request and take the rebuild's lock (Busy while another runs); the task reads every
        backup file, authenticates it, and adds, completes or marks missing the catalogue's rows."""
        from .service import Task  # service.py imports this module

        target = printable(location)[:100] if location else "all locations"
        try:
            sources = self.sources(location, paths)
            keyring = self.s.keyring()
            lock = lock_for(self.s.settings, self.s.settings.data_dir / "locks", "catalogue-rebuild",
                            noun="the catalogue").acquire(f"a catalogue rebuild by {actor.name}")
        except BackupError as exc:
            self.s.audit.record(actor, ACTION, target, "refused", exc.message)
            raise
        try:  # held while it runs: a start-up after a crash records a rebuild that never ended as interrupted
            alive = self.s._started(actor, ACTION, target, "preview" if dry_run else "")
        except BaseException:
            lock.release()
            raise

        def work(progress: Any, cancel: threading.Event) -> dict[str, Any]:
            return self._work(actor, target, sources, keyring, dry_run, progress, cancel)

        return Task("rebuild", target, work, [lock, alive], progress=RebuildProgress())

    def run(self, actor: Actor, *, location: str | None = None, paths: Sequence[str] = (),
            dry_run: bool = False) -> dict[str, Any]:
        """Rebuild now (prepare, then run on this thread) and return the result."""
        result: dict[str, Any] = self.prepare(actor, location=location, paths=paths, dry_run=dry_run).run()
        return result

    def _work(self, actor: Actor, target: str, sources: list[Source], keyring: Any, dry_run: bool,
              progress: RebuildProgress, cancel: threading.Event) -> dict[str, Any]:
        try:
            progress.enter("listing files")
            found: list[tuple[Source, Entry]] = []
            for source in sources:
                if cancel.is_set():
                    raise Cancelled(STOPPED)
                found += [(source, entry) for entry in source.entries()]
            progress.enter("reading")
            progress.files_total, progress.total = len(found), sum(e.size for _, e in found)
            findings = list(self._examine_all(found, keyring, Reading(progress, cancel)))
            rows = [_row(r) for r in self.s.catalogue.all()]
            result = plan(findings, rows, [s.directory for s in sources])
            for w in result.warnings:  # a forged or foreign verification record: ignored, and said so
                log.warning("catalogue rebuild: %s in %s: %s", w["file"], w["directory"], w["warning"])
            if not dry_run:
                progress.enter("applying")
                self._apply(actor, result, cancel)
                for applier in self.appliers:  # e.g. the S3 copies found (destinations/rebuild_s3.py)
                    applier(actor, result, sources)
            out = {"dryRun": dry_run, "sources": [{"location": s.location, "directory": s.directory}
                                                  for s in sources],
                   "files": len(findings), **result.as_dict()}
            self.s.audit.record(actor, ACTION, target, "ok", _summary(out))
            progress.phase = "done"
            return out
        except Cancelled as exc:
            self.s.audit.record(actor, ACTION, target, "cancelled", exc.message)
            raise
        except BackupError as exc:
            self.s.audit.record(actor, ACTION, target, "failed", exc.message)
            raise
        except BaseException as exc:  # an unexpected error or Ctrl-C: the run still gets its outcome
            self.s.audit.record(actor, ACTION, target, "failed", f"interrupted: {exc.__class__.__name__}")
            raise

    def _examine_all(self, found: list[tuple[Source, Entry]], keyring: Any, reading: Reading) -> Iterator[Finding]:
        for source, entry in found:
            try:  # not while it is being deleted
                held = self.s._backup_lock(entry.name).acquire(f"a catalogue rebuild reading {entry.name}")
            except Busy:
                reading.finished(entry)
                yield Finding(source.location, source.directory, entry.name, entry.size,
                              problem="busy: it is being deleted; not read", unread=True)
                continue
            try:
                finding = examine(source, reading.watched(entry), keyring)
            finally:
                held.release()
            reading.finished(entry)  # Cancelled when the job was cancelled meanwhile
            yield finding

    def _apply(self, actor: Actor, result: Plan, cancel: threading.Event) -> None:
        """Write the plan one row at a time; a cancel stops between rows (each row written is complete and
        audited, so what was applied stays consistent: the next rebuild does the rest)."""
        changes: list[Callable[[], None]] = [
            *(partial(self._add, actor, fields) for fields in result.add),
            *(partial(self._complete, actor, i, c) for i, c in result.update.items()),
            *(partial(self._mark_missing, actor, i) for i in result.missing),
            *(partial(self._fail, actor, i, r) for i, r in result.failed.items())]
        for done, change in enumerate(changes):
            if cancel.is_set():
                raise Cancelled(f"cancelled while applying: {done} of {len(changes)} changes were made (each one "
                                "complete and audited); rebuild again to make the rest")
            change()
        for refused in result.refused:
            self.s.audit.record(actor, ACTION, refused["file"], "refused", refused["reason"])

    def _add(self, actor: Actor, fields: dict[str, Any]) -> None:
        try:
            self.s.catalogue.add(BackupRecord(**fields))
        except IntegrityError:
            return  # a concurrent list imported it as discovered meanwhile; the next rebuild completes it
        self.s.audit.record(actor, ACTION, fields["id"], "ok", "added from its authenticated file")

    def _complete(self, actor: Actor, backup_id: str, changes: dict[str, Any]) -> None:
        self.s.catalogue.update(backup_id, **changes)
        self.s.audit.record(actor, ACTION, backup_id, "ok", "completed from its authenticated file: "
                            + ", ".join(sorted(changes)))

    def _mark_missing(self, actor: Actor, backup_id: str) -> None:
        record = self.s.catalogue.get(backup_id)
        if record is not None and not marked_missing(record):
            self.s.catalogue.update(backup_id, error=MISSING_NOTE)
            self.s.audit.record(actor, ACTION, backup_id, "ok", "marked missing: the file is not in its location")

    def _fail(self, actor: Actor, backup_id: str, reason: str) -> None:
        # as verify would record it: rotation then holds it
        self.s.catalogue.update(backup_id, verified_at=utcnow(), verify_ok=False,
                                verify_message=f"catalogue rebuild: {reason}", verify_duration_s=None)
        self.s.audit.record(actor, ACTION, backup_id, "failed", f"its file failed authentication: {reason}")


def _row(r: BackupRecord) -> Row:
    return Row(id=r.id, location=r.location, directory=r.directory, status=r.status, origin=r.origin,
               sha256=r.sha256, table_counts=r.table_counts, verified_at=r.verified_at, verify_ok=r.verify_ok,
               error=r.error,
               values={name: getattr(r, name) for name in FILLED})


def _summary(out: dict[str, Any]) -> str:
    return (("preview: " if out["dryRun"] else "") + f"{out['files']} files; {len(out['added'])} added, "
            f"{len(out['updated'])} completed, {len(out['missing'])} missing, {len(out['refused'])} refused "
            f"({len(out['failedVerification'])} of them catalogued, recorded as failing verification), "
            f"{out['unchanged']} unchanged")
