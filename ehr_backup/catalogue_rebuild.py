"""`catalogue rebuild` for one installation: which folders are read, the plan applied, every change audited."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from . import paths as paths_
from . import storage
from .audit import Actor
from .catalogue import utcnow
from .errors import BackupError, Busy, InvalidInput, NotFound
from .locks import DatabaseLock
from .models import BackupRecord
from .rebuild import FILLED, MISSING_NOTE, Finding, Plan, Row, examine, marked_missing, plan
from .rebuild_source import LocalFolder, Source
from .text import clean_text, printable

if TYPE_CHECKING:
    from .service import BackupService

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
        """The standard locations, every folder the catalogue or a schedule names, and `paths` (custom
        folders, checked like a custom location: inside EHR_BACKUP_CUSTOM_ROOTS, no system folder)."""
        found: list[tuple[str, Path]] = [(x.key, Path(os.path.realpath(x.path)))
                                         for x in storage.standard_locations(self.s.settings.default_dir)]
        for key in storage.LOCATIONS:
            found += [(key, Path(d)) for d in self.s.catalogue.directories(key)]
        found += [("custom", Path(s.custom_path)) for s in self.s.schedules.all()
                  if s.location == "custom" and s.custom_path]
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

    def run(self, actor: Actor, *, location: str | None = None, paths: Sequence[str] = (),
            dry_run: bool = False) -> dict[str, Any]:
        """Read every backup file, authenticate it, and add, complete or mark missing the catalogue's rows."""
        target = printable(location)[:100] if location else "all locations"
        try:
            sources = self.sources(location, paths)
            keyring = self.s.keyring()
            lock = DatabaseLock(self.s.settings.data_dir / "locks", "catalogue-rebuild").acquire(
                f"a catalogue rebuild by {actor.name}")
        except BackupError as exc:
            self.s.audit.record(actor, ACTION, target, "refused", exc.message)
            raise
        try:
            self.s.audit.record(actor, ACTION, target, "started", "preview" if dry_run else "")
            findings = list(self._examine_all(sources, keyring))
            rows = [_row(r) for r in self.s.catalogue.all()]
            result = plan(findings, rows, [s.directory for s in sources])
            for w in result.warnings:  # a forged or foreign verification record: ignored, and said so
                log.warning("catalogue rebuild: %s in %s: %s", w["file"], w["directory"], w["warning"])
            if not dry_run:
                self._apply(actor, result)
                for applier in self.appliers:
                    applier(actor, result, sources)
            out = {"dryRun": dry_run, "sources": [{"location": s.location, "directory": s.directory}
                                                  for s in sources],
                   "files": len(findings), **result.as_dict()}
            self.s.audit.record(actor, ACTION, target, "ok", _summary(out))
            return out
        except BackupError as exc:
            self.s.audit.record(actor, ACTION, target, "failed", exc.message)
            raise
        finally:
            lock.release()

    def _examine_all(self, sources: list[Source], keyring: Any) -> Iterator[Finding]:
        for source in sources:
            for entry in source.entries():
                try:  # not while it is being deleted
                    reading = self.s._backup_lock(entry.name).acquire(f"a catalogue rebuild reading {entry.name}")
                except Busy:
                    yield Finding(source.location, source.directory, entry.name, entry.size,
                                  problem="busy: it is being deleted; not read", unread=True)
                    continue
                try:
                    yield examine(source, entry, keyring)
                finally:
                    reading.release()

    def _apply(self, actor: Actor, result: Plan) -> None:
        for fields in result.add:
            try:
                self.s.catalogue.add(BackupRecord(**fields))
            except IntegrityError:
                continue  # a concurrent list imported it as discovered meanwhile; the next rebuild completes it
            self.s.audit.record(actor, ACTION, fields["id"], "ok", "added from its authenticated file")
        for backup_id, changes in result.update.items():
            self.s.catalogue.update(backup_id, **changes)
            self.s.audit.record(actor, ACTION, backup_id, "ok", "completed from its authenticated file: "
                                + ", ".join(sorted(changes)))
        for backup_id in result.missing:
            record = self.s.catalogue.get(backup_id)
            if record is not None and not marked_missing(record):
                self.s.catalogue.update(backup_id, error=MISSING_NOTE)
                self.s.audit.record(actor, ACTION, backup_id, "ok", "marked missing: the file is not in its location")
        for backup_id, reason in result.failed.items():  # as verify would record it: rotation then holds it
            self.s.catalogue.update(backup_id, verified_at=utcnow(), verify_ok=False,
                                    verify_message=f"catalogue rebuild: {reason}", verify_duration_s=None)
            self.s.audit.record(actor, ACTION, backup_id, "failed", f"its file failed authentication: {reason}")
        for refused in result.refused:
            self.s.audit.record(actor, ACTION, refused["file"], "refused", refused["reason"])


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
