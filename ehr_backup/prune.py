"""Apply rotation: plan from the catalogue, then delete exactly what the plan forgets, under the locks.

A dry run only plans. A real run takes the lock of every database it deletes from (no backup or
restore of it can start meanwhile), plans again under it, and before each file, holding that file's
exclusive lock (nobody is reading it), plans that database once more from the catalogue as it is now:
a file goes only if that plan still forgets it, so a pin, a failed verification or a vanished file
seconds earlier is honoured. Every deletion is audited (`prune.delete`), the run as a whole too (`prune`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import storage
from .audit import Actor
from .catalogue import as_utc, utcnow
from .errors import BackupError, Busy, ConfigError, InvalidInput, NotFound
from .locks import DatabaseLock
from .models import BackupRecord, Status
from .retention import Candidate, Decision, Plan, RetentionPolicy, plan, zone
from .text import clean_text

if TYPE_CHECKING:
    from .service import BackupService

DEFAULT_POLICY = RetentionPolicy()


def local_zone() -> tzinfo:
    """The server's time zone with its daylight-saving rules (/etc/localtime), else its current offset."""
    try:
        target = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in target:
            return ZoneInfo(target.split("/zoneinfo/", 1)[1])
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return datetime.now().astimezone().tzinfo or UTC


def schedule_of(record: BackupRecord) -> str | None:
    """The schedule that made a backup (None: made by hand, or before schedules existed)."""
    return getattr(record, "schedule", None) or None  # the column comes with the schedules


def candidate(record: BackupRecord) -> Candidate:
    """The facts rotation reads about one catalogued backup."""
    path = Path(record.directory) / record.id
    return Candidate(id=record.id, database=record.database, place=record.directory,
                     created_at=as_utc(record.created_at) or utcnow(), status=record.status,
                     ours=record.origin != "discovered", exists=path.is_file() and not path.is_symlink(),
                     verify_ok=record.verify_ok, pinned=bool(record.pinned), kind=record.kind,
                     schedule=schedule_of(record), location=record.location)


class Rotation:
    """Rotation of one installation's backups."""

    def __init__(self, service: BackupService) -> None:
        self.s = service

    def plan(self, policy: RetentionPolicy, records: Iterable[BackupRecord], *, include_discovered: bool = False,
             schedule_policies: Mapping[str, RetentionPolicy] | None = None) -> Plan:
        """The plan for these records now."""
        tz = zone(policy.timezone) if policy.timezone else local_zone()
        return plan([candidate(r) for r in records], policy, utcnow(), tz=tz,
                    safety_keep_days=self.s.settings.safety_keep_days, include_discovered=include_discovered,
                    schedule_policies=schedule_policies)

    def kept_by(self, records: Sequence[BackupRecord]) -> dict[str, list[str]]:
        """For each backup, the rules that keep it under the default policy now (empty: it would go)."""
        return self.plan(DEFAULT_POLICY, records).reasons()

    def prune(self, actor: Actor, *, database: str | None = None, location: str | None = None,
              schedule: str | None = None, policy: RetentionPolicy | None = None, dry_run: bool = True,
              include_discovered: bool = False, expect: Collection[str] | None = None,
              schedule_policies: Mapping[str, RetentionPolicy] | None = None) -> dict[str, Any]:
        """Preview (dry_run) or apply rotation to the backups the filters select.

        expect: the ids a preview showed as going; a real run then deletes only those of them that the
        plan still forgets, never one the person did not see.
        """
        scope = _scope(database, location, schedule)
        try:
            database, location, schedule = self._filters(database, location, schedule)
            policy = policy or DEFAULT_POLICY
            expected = None if expect is None else {storage.validate_id(i) for i in expect}
        except BackupError as exc:
            if not dry_run:
                self.s.audit.record(actor, "prune", scope, "refused", exc.message)
            raise

        def wanted(b: Candidate) -> bool:
            return ((database is None or b.database == database) and (location is None or b.location == location)
                    and (schedule is None or b.schedule == schedule))

        def current(db: str | None = None) -> Plan:
            records = self.s.catalogue.all(database=db)
            return self.plan(policy, records, include_discovered=include_discovered,
                             schedule_policies=schedule_policies).only(wanted)

        first = current(database)
        result: dict[str, Any] = {"dryRun": dry_run, "policy": policy.as_dict(), "timezone": _zone_name(policy),
                                  "safetyKeepDays": self.s.settings.safety_keep_days, **first.as_dict(),
                                  "deleted": [], "skipped": [], "removedTemporaryFiles": 0}
        if dry_run:
            return result
        alive = self.s._started(actor, "prune", scope, f"policy: {policy.describe()}")
        deleted: list[str] = []
        skipped: list[dict[str, str]] = []
        try:
            databases = sorted({d.backup.database for d in first.forget})
            locks = self._lock_databases(actor, databases)
            try:
                planned = current(database)  # again, now that no backup or restore of them can start
                going = [d for d in planned.forget if expected is None or d.backup.id in expected]
                if expected is not None:
                    still = {d.backup.id for d in planned.forget}
                    skipped += [{"id": i, "reason": "no longer planned to go"} for i in sorted(expected - still)]
                for d in going:
                    why = self._delete(actor, d, partial(current, d.backup.database))
                    if why is None:
                        deleted.append(d.backup.id)
                    else:
                        skipped.append({"id": d.backup.id, "reason": why})
                places = {Path(d.backup.place) for d in (*planned.keep, *planned.forget)}
                removed = sum(storage.remove_leftovers(p, self._alive) for p in sorted(places))
            finally:
                for lock in locks:
                    lock.release()
        except BackupError as exc:
            self.s.audit.record(actor, "prune", scope, "refused" if isinstance(exc, Busy) else "failed", exc.message)
            raise
        finally:
            alive.release()
        self.s.audit.record(actor, "prune", scope, "ok", f"deleted {len(deleted)}, skipped {len(skipped)}, "
                                                        f"kept {len(planned.keep)}, temporary files {removed}")
        result.update(planned.as_dict(), deleted=deleted, skipped=skipped, removedTemporaryFiles=removed)
        return result

    def _filters(self, database: str | None, location: str | None,
                 schedule: str | None) -> tuple[str | None, str | None, str | None]:
        if location is not None and location not in storage.LOCATIONS:
            raise InvalidInput(f"unknown location {location!r}: choose one of {', '.join(storage.LOCATIONS)}")
        if schedule is not None:
            schedule = clean_text(schedule, 200, "the schedule") or None
        if database is not None:
            database = clean_text(database, 63, "the database name")
            self.s._import_discovered()
            if not self.s.catalogue.all(database=database):
                raise NotFound(f"no backups of a database named {database!r} in the catalogue")
        else:
            self.s._import_discovered()
        return database, location, schedule

    def _alive(self, name: str) -> bool:
        return self.s._job_lock(name).held_elsewhere()

    def _lock_databases(self, actor: Actor, databases: list[str]) -> list[DatabaseLock]:
        """The lock of each database (as its backups and restores take it), or Busy with nothing held."""
        try:
            conn = self.s.connection()
        except ConfigError:
            conn = None  # no database configured: no backup can run; rotations still exclude each other
        held: list[DatabaseLock] = []
        try:
            for name in databases:
                # the catalogue knows databases by name: the configured server's database of that name
                lock = (self.s._lock(conn.with_dbname(name)) if conn is not None
                        else DatabaseLock(self.s.settings.data_dir / "locks" / "rotation", name))
                held.append(lock.acquire(f"a rotation by {actor.name}"))
        except BaseException:
            for lock in held:
                lock.release()
            raise
        return held

    def _delete(self, actor: Actor, planned: Decision, replan: Callable[[], Plan]) -> str | None:
        """Delete one backup the plan forgets, if a plan made while its file is held still does; else say why not."""
        b = planned.backup
        try:
            alone = self.s._backup_lock(b.id, exclusive=True).acquire(f"a rotation removing {b.id}")
        except Busy as exc:
            return exc.message
        try:
            now = replan().find(b.id)
            record = self.s.catalogue.get(b.id)
            if now is None or record is None:
                return "no longer in the catalogue"
            if now.keep:
                return "kept now: " + ", ".join(now.reasons)
            self.s.audit.record(actor, "prune.delete", b.id, "started", now.reasons[0])
            try:
                if record.status in (Status.COMPLETED, Status.DISCOVERED):  # failed runs left no file
                    storage.unlink_in(Path(record.directory), record.id)
            except BackupError as exc:
                self.s.audit.record(actor, "prune.delete", b.id, "failed", exc.message)
                return exc.message
            self.s.catalogue.delete(b.id)
            self.s.audit.record(actor, "prune.delete", b.id, "ok", now.reasons[0])
            return None
        finally:
            alone.release()


def _scope(database: str | None, location: str | None, schedule: str | None) -> str:
    """What a run covers, for the audit log (printable, bounded)."""
    parts = [f"{k}={v}" for k, v in (("database", database), ("location", location), ("schedule", schedule)) if v]
    text = " ".join(parts) or "all backups"
    return text.encode("unicode_escape").decode("ascii")[:300]


def _zone_name(policy: RetentionPolicy) -> str:
    if policy.timezone:
        return policy.timezone
    tz = local_zone()
    return getattr(tz, "key", None) or str(tz)
