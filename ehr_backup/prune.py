"""Apply rotation: plan from the catalogue, then delete exactly what the plan forgets, under the locks.

A dry run only plans. A real run takes the lock of every database it deletes from (no backup or
restore of it can start meanwhile) and plans again under it. Before each file, holding that file's
exclusive lock (nobody is reading, verifying or pinning it), it reads that database's catalogue rows
and files again: a file goes only if the plan for them as they are now still forgets it, so a pin, a
failed verification or a vanished file seconds earlier is honoured. Every deletion is audited
(`prune.delete`), the run as a whole too (`prune`).
"""

from __future__ import annotations

import os
import stat
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
from .locks import DatabaseLock, lock_for
from .models import BackupRecord, Status
from .profiles import DEFAULT, db_key, split_key
from .retention import Candidate, Decision, Plan, RetentionPolicy, plan, zone
from .text import clean_text

if TYPE_CHECKING:
    from .service import BackupService

DEFAULT_POLICY = RetentionPolicy()
State = list[tuple[Any, bool]]  # a database's catalogue rows (facts()) and whether each file is there


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


def facts() -> tuple[str, ...]:
    """The catalogue columns rotation reads."""
    return ("id", "database", "directory", "location", "created_at", "status", "origin", "verify_ok", "pinned",
            "kind", "schedule", "profile")


def candidate(record: Any, exists: bool | None = None) -> Candidate:
    """The facts rotation reads about one catalogued backup (a record, or a row of `facts()`)."""
    if exists is None:
        exists = file_exists(record)
    # a non-default profile's database is "name@profile": two servers' databases of one name are rotated
    # and held apart (ehr_backup/profiles.py)
    return Candidate(id=record.id, database=db_key(record.database, getattr(record, "profile", None)),
                     place=record.directory,
                     created_at=as_utc(record.created_at) or utcnow(), status=record.status,
                     ours=record.origin != "discovered", exists=exists, verify_ok=record.verify_ok,
                     pinned=bool(record.pinned), kind=record.kind, location=record.location,
                     schedule=_text(record.schedule))


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def file_exists(record: Any) -> bool:
    """Whether the backup's file is there: a regular file, not a link (one system call)."""
    if (record.directory or "").startswith("s3://"):
        return True  # kept at an S3 destination only: its copy's own state says whether it is readable
    try:
        return stat.S_ISREG(os.lstat(os.path.join(record.directory, record.id)).st_mode)
    except OSError:
        return False


class Rotation:
    """Rotation of one installation's backups."""

    def __init__(self, service: BackupService) -> None:
        self.s = service

    def plan(self, policy: RetentionPolicy, backups: Iterable[Candidate], *, include_discovered: bool = False,
             schedule_policies: Mapping[str, RetentionPolicy] | None = None) -> Plan:
        """The plan for these backups now."""
        tz = zone(policy.timezone) if policy.timezone else local_zone()
        return plan(backups, policy, utcnow(), tz=tz, safety_keep_days=self.s.settings.safety_keep_days,
                    include_discovered=include_discovered, schedule_policies=schedule_policies)

    def kept_by(self, records: Sequence[BackupRecord]) -> dict[str, list[str]]:
        """For each backup, the rules that keep it now (a schedule's under its own policy); empty: it goes."""
        from .schedules import policy_of

        policies = {s.name: p for s in self.s.schedules.all() if (p := policy_of(s)) is not None}
        return self.plan(DEFAULT_POLICY, [candidate(r) for r in records], schedule_policies=policies).reasons()

    def prune(self, actor: Actor, *, database: str | None = None, location: str | None = None,
              schedule: str | None = None, policy: RetentionPolicy | None = None, dry_run: bool = True,
              include_discovered: bool = False, expect: Collection[str] | None = None,
              schedule_policies: Mapping[str, RetentionPolicy] | None = None) -> dict[str, Any]:
        """Preview (dry_run) or apply rotation to the backups the filters select.

        expect: the ids a preview showed as going; a real run then deletes only those of them that the
        plan still forgets, never one the person did not see.
        """
        scope = _scope(database, location, schedule)
        profile = None  # `database` naming a profile: that profile's backups; else a database's own name
        if database is not None and self.s.profiles.is_profile(database):
            profile, database = database, None
        try:
            database, location, schedule = self._filters(database, location, schedule)
            expected = None if expect is None else {storage.validate_id(i) for i in expect}
        except BackupError as exc:
            if not dry_run:
                self.s.audit.record(actor, "prune", scope, "refused", exc.message)
            raise
        rules = policy or DEFAULT_POLICY

        def wanted(b: Candidate) -> bool:
            name, of = split_key(b.database)
            return ((database is None or name == database) and (profile is None or (of or DEFAULT) == profile)
                    and (location is None or b.location == location)
                    and (schedule is None or b.schedule == schedule))

        def planned(state: State) -> Plan:
            return self.plan(rules, [candidate(row, exists) for row, exists in state],
                             include_discovered=include_discovered, schedule_policies=schedule_policies).only(wanted)

        first = planned(self._state(database))
        result: dict[str, Any] = {"dryRun": dry_run, "policy": rules.as_dict(), "timezone": _zone_name(rules),
                                  "safetyKeepDays": self.s.settings.safety_keep_days, **first.as_dict(),
                                  "deleted": [], "skipped": [], "removedTemporaryFiles": 0}
        if dry_run:
            return result
        alive = self.s._started(actor, "prune", scope, f"policy: {rules.describe()}")
        try:
            locked = sorted({d.backup.database for d in first.forget})
            locks = self._lock_databases(locked, actor)
            try:
                final = planned(self._state(database))  # again, now that no backup or restore of them can start
                wanted_now = [d for d in final.forget if expected is None or d.backup.id in expected]
                going = [d for d in wanted_now if d.backup.database in locked]  # only of databases held
                skipped = [{"id": d.backup.id, "reason": "planned only after this run began: run rotation again"}
                           for d in wanted_now if d.backup.database not in locked]
                skipped += [{"id": i, "reason": "no longer planned to go"}
                            for i in sorted((expected or set()) - {d.backup.id for d in final.forget})]
                deleted = self._delete_all(actor, going, planned, skipped)
                places = {Path(d.backup.place) for d in (*final.keep, *final.forget)}
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
                                                        f"kept {len(final.keep)}, temporary files {removed}")
        result.update(final.as_dict(), deleted=deleted, skipped=skipped, removedTemporaryFiles=removed)
        return result

    def _state(self, database: str | None) -> State:
        """The catalogue rows (of one database, or all) and whether each file is there, as they are now."""
        return [(row, file_exists(row)) for row in self.s.catalogue.columns(facts(), database=database)]

    def _filters(self, database: str | None, location: str | None,
                 schedule: str | None) -> tuple[str | None, str | None, str | None]:
        if location is not None and location not in storage.LOCATIONS:
            raise InvalidInput(f"unknown location {location!r}: choose one of {', '.join(storage.LOCATIONS)}")
        if schedule is not None:
            schedule = clean_text(schedule, 200, "the schedule") or None
        if database is not None:
            database = clean_text(database, 63, "the database name")
        self.s._import_discovered()  # files found on disk are listed (and kept: not ours) too
        if database is not None and not self.s.catalogue.columns(("id",), database=database):
            raise NotFound(f"no backups of a database named {database!r} in the catalogue")
        return database, location, schedule

    def _alive(self, name: str) -> bool:
        return self.s._job_lock(name).held_elsewhere()

    def _lock_databases(self, databases: list[str], actor: Actor) -> list[DatabaseLock]:
        """The lock of each database (as its backups and restores take it), or Busy with nothing held."""
        try:
            conn = self.s.connection()
        except ConfigError:
            conn = None  # no database configured: no backup can run; rotations still exclude each other
        held: list[DatabaseLock] = []
        try:
            for key in databases:
                # the catalogue knows databases by name (and profile): that server's database of that name
                name, profile = split_key(key)
                server = conn
                if profile is not None:
                    try:
                        server = self.s.connection(profile)
                    except BackupError:  # a removed profile: no backup of it can start
                        server = None
                lock = (self.s._lock(server.with_dbname(name)) if server is not None
                        else lock_for(self.s.settings, self.s.settings.data_dir / "locks" / "rotation", key))
                held.append(lock.acquire(f"a rotation by {actor.name}"))
        except BaseException:
            for lock in held:
                lock.release()
            raise
        return held

    def _delete_all(self, actor: Actor, going: list[Decision], planned: Callable[[State], Plan],
                    skipped: list[dict[str, str]]) -> list[str]:
        """Delete each planned backup that a plan made while its file is held still forgets."""
        deleted: list[str] = []
        replans = {db: Replanner(partial(self._state, split_key(db)[0]), planned)
                   for db in {d.backup.database for d in going}}
        for d in going:
            why = self._delete(actor, d.backup.id, replans[d.backup.database])
            if why is None:
                deleted.append(d.backup.id)
            else:
                skipped.append({"id": d.backup.id, "reason": why})
        return deleted

    def _delete(self, actor: Actor, backup_id: str, replan: Replanner) -> str | None:
        """Delete one backup if the plan still forgets it; else say why not."""
        try:
            alone = self.s._backup_lock(backup_id, exclusive=True).acquire(f"a rotation removing {backup_id}")
        except Busy as exc:
            return exc.message
        try:
            now = replan.decision(backup_id)
            record = self.s.catalogue.get(backup_id)
            if now is None or record is None:
                return "no longer in the catalogue"
            if now.keep:
                return "kept now: " + ", ".join(now.reasons)
            self.s.audit.record(actor, "prune.delete", backup_id, "started", now.reasons[0])
            try:
                self.s.copies.delete_remote(record)  # its S3 copies go with it (ehr_backup/destinations/)
                if record.status in (Status.COMPLETED, Status.DISCOVERED):  # failed runs left no file
                    storage.unlink_in(Path(record.directory), record.id)
            except BackupError as exc:
                self.s.audit.record(actor, "prune.delete", backup_id, "failed", exc.message)
                return exc.message
            self.s.catalogue.delete(backup_id)
            replan.deleted(backup_id)
            self.s.audit.record(actor, "prune.delete", backup_id, "ok", now.reasons[0])
            return None
        finally:
            alone.release()


class Replanner:
    """The plan of one database as its catalogue rows and files are now, re-made only when they changed.

    Deleting a backup the plan forgets changes no other decision (it filled no bucket and was not the
    newest of anything), so when the rows and files are exactly as before but for this run's own
    deletions, the previous plan still holds; anything else (a pin, a verification, a vanished file)
    makes a new plan.
    """

    def __init__(self, load: Callable[[], State], make: Callable[[State], Plan]) -> None:
        self._load = load
        self._make = make
        self._state: State | None = None
        self._plan = Plan()

    def decision(self, backup_id: str) -> Decision | None:
        """What the plan for the database as it is now says about one backup."""
        state = self._load()
        if state != self._state:
            self._plan = self._make(state)
            self._state = state
        return self._plan.find(backup_id)

    def deleted(self, backup_id: str) -> None:
        """Note that this run deleted a backup."""
        if self._state is not None:
            self._state = [(row, exists) for row, exists in self._state if row.id != backup_id]


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
