"""Restores as the service offers them: validated, locked, audited, reported; rollback and cleanup."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import pg
from ..audit import Actor
from ..catalogue import as_utc, utcnow
from ..errors import BackupError, Cancelled, InvalidInput, NotFound, RowCountsDiffer
from ..fileformat import OpenedFile
from ..models import BackupRecord, Status
from ..pg import ConnInfo, connect
from ..pipeline import Progress
from ..destinations.fallback import open_authenticated
from ..text import clean_text
from . import database
from .contents import describe
from .kept import BUILDING, PREVIOUS, SWAPPING, TRANSIENT, UNDONE, KeptDatabases, lock_key
from .run import Context, Outcome, RecreateFailed, recreate_restore, source_of, swap_restore
from .selective import Selection, SelectiveOutcome, SelectiveRestore, check_schema_name, parse_table

if TYPE_CHECKING:
    from ..service import BackupService, Task

import psycopg

log = logging.getLogger("ehr_backup.restore")
SYSTEM_DATABASES = ("postgres", "template0", "template1")
MODES = ("swap", "recreate")
MAX_JOBS = 8
SELECTIVE_STEPS = ("authenticating", "restoring the chosen tables")


def restore_steps(mode: str, safety: bool) -> list[str]:
    """The steps of a whole-database restore, in order; they are its progress phases (pipeline.Progress)."""
    if mode == "recreate":
        return ["authenticating", *(["safety backup"] if safety else []), "loading", "counting rows",
                "applying database properties"]
    return ["authenticating", "loading", "counting rows", "applying database properties", "swapping"]


def default_jobs() -> int:
    """Loader connections by default: the app host's CPUs, at most 8."""
    return max(1, min(MAX_JOBS, os.cpu_count() or 1))


@dataclass(frozen=True)
class RestoreReport:
    """The outcome of a restore, with the table-by-table comparison."""

    backup_id: str
    outcome: Outcome
    seconds: float
    safety_backup: str | None = None
    recovered_from_safety: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every table came back with exactly its rows."""
        return self.outcome.ok

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        o = self.outcome
        tables = {t.name: {"expected": t.dumped, "loaded": t.loaded, "actual": t.actual,
                           **({"note": t.note} if t.note else {})} for t in o.tables}
        return {"backupId": self.backup_id, "database": o.database, "mode": o.mode, "jobs": o.jobs,
                "previousDatabase": o.previous, "safetyBackup": self.safety_backup or o.safety_backup,
                "rowCountsMatch": o.ok, "tables": tables,
                "mismatchedTables": [t.name for t in o.tables if not t.ok], "roles": o.roles, "notes": o.notes,
                "phases": {k: round(v, 2) for k, v in o.phases.items()}, "seconds": round(self.seconds, 2),
                **self.extra}


@dataclass(frozen=True)
class SelectiveReport:
    """The outcome of restoring chosen tables."""

    backup_id: str
    outcome: SelectiveOutcome
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether every chosen table came back with its rows."""
        return self.outcome.ok

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the same table comparison as a whole restore)."""
        o = self.outcome
        return {"backupId": self.backup_id, "database": o.database, "mode": "tables", "intoSchema": o.into_schema,
                "rowCountsMatch": o.ok, "mismatchedTables": [t.name for t in o.tables if not t.ok],
                "tables": {t.name: {"expected": t.dumped, "loaded": t.loaded, "actual": t.actual} for t in o.tables},
                "restored": o.restored, "leftOut": o.left_out, "notes": o.notes, "seconds": round(self.seconds, 2)}


class Restores:
    """Restore a backup, roll back the last swap, list and drop the databases restores kept."""

    def __init__(self, service: BackupService) -> None:
        self.s = service
        self.kept = KeptDatabases(service.db)

    # ----- restore ----------------------------------------------------------------------------------
    def prepare(self, actor: Actor, backup_id: str, *, target_url: str | None = None,
                target_database: str | None = None, mode: str = "swap", jobs: int | None = None,
                roles: bool | None = None, safety_backup: bool | None = None, tables: list[str] | None = None,
                schemas: list[str] | None = None, into_schema: str | None = None,
                database: str | None = None) -> Task:
        """Validate and reserve the target; the task authenticates, builds, checks and swaps (or, with
        tables or schemas chosen, restores just those beside the live ones). The target is the backup's own
        database profile's server unless `database` names another profile or a target is given."""
        from ..service import Task

        record = self.s._resolve(actor, "restore", backup_id)
        try:
            if record.status not in (Status.COMPLETED, Status.DISCOVERED):
                raise InvalidInput(f"backup {record.id} is {record.status}; only completed backups restore")
            if mode not in MODES:
                raise InvalidInput(f"unknown restore mode {mode!r}: choose swap or recreate")
            if jobs is not None and not 1 <= jobs <= 64:
                raise InvalidInput("jobs must be between 1 and 64")
            if database is not None and target_url:
                raise InvalidInput("give a target URL or a database profile, not both")
            profile = self.s.profiles.checked(database) if database is not None else record.profile
            target = self._target(target_url, target_database, profile)
            selection = self._selection(tables, schemas, into_schema, another=bool(target_url or target_database))
            identity = pg.server_identity(target)
            lock = self.s._lock(target, identity).acquire(f"a restore by {actor.name}")
        except BackupError as exc:
            self.s.audit.record(actor, "restore", record.id, "refused", exc.message)
            raise
        held = [lock]
        try:
            held.append(self.s._backup_lock(record.id).acquire(f"a restore of {record.id}"))
            held.append(self.s._started(actor, "restore", record.id,
                                        f"into {target.display}; mode {mode}"))
        except BaseException as exc:
            for h in held:
                h.release()
            if isinstance(exc, BackupError):
                self.s.audit.record(actor, "restore", record.id, "refused", exc.message)
            raise
        safety = self.s.settings.safety_backup if safety_backup is None else safety_backup

        def work(progress: Progress, cancel: threading.Event) -> Any:
            if selection is not None:
                return self._run_selective(actor, record, target, selection, progress, cancel)
            return self._run(actor, record, target, identity, mode, jobs or default_jobs(), roles, safety, lock,
                             progress, cancel, None if target_url else profile)

        return Task("restore", record.id, work, held, backup_id=record.id)

    def _selection(self, tables: list[str] | None, schemas: list[str] | None, into: str | None,
                   another: bool) -> Selection | None:
        if not tables and not schemas:
            if into:
                raise InvalidInput("--into-schema needs --table or --schema")
            return None
        chosen = Selection([parse_table(t) for t in tables or []],
                           [clean_text(x, 63, "schema name").encode() for x in schemas or []],
                           check_schema_name(into) if into else None)
        if not chosen.into_schema and not another:
            raise InvalidInput("chosen tables are restored beside the live ones: give a schema to restore them "
                               "into (--into-schema), or another database (--target-url)")
        return chosen

    def _run_selective(self, actor: Actor, record: BackupRecord, target: ConnInfo, selection: Selection,
                       progress: Progress, cancel: threading.Event) -> SelectiveReport:
        """Authenticate, then restore the chosen tables in one transaction; report their counts."""
        started = time.monotonic()
        try:
            progress.steps = list(SELECTIVE_STEPS)
            progress.enter("authenticating")
            # the first copy that authenticates (a missing or corrupt local file: a good S3 copy) before any database
            opened, trailer, _ = open_authenticated(self.s, record, _reading(progress), check_matches_catalogue)
            try:
                source, _, _ = source_of(opened, trailer)
                progress.enter("restoring the chosen tables")
                progress.total = int(trailer.get("dumpBytes") or 0) or None
                outcome = SelectiveRestore(target, selection, cancel=cancel,
                                           progress=lambda n: setattr(progress, "bytes_read", n)).run(source(0))
            finally:
                opened.fh.close()
        except BackupError as exc:
            self.s.audit.record(actor, "restore", record.id, "cancelled" if isinstance(exc, Cancelled) else "failed",
                                exc.message)
            raise
        report = SelectiveReport(record.id, outcome, time.monotonic() - started)
        if not outcome.ok:
            message = "row counts of the chosen tables differ; nothing was kept"
            self.s.audit.record(actor, "restore", record.id, "failed", message)
            raise RowCountsDiffer(message, report.as_dict())
        where = f"schema {selection.into_schema} of " if selection.into_schema else ""
        names = ", ".join(t.name for t in outcome.tables)
        self.s.audit.record(actor, "restore", record.id, "ok", f"tables {names[:800]} into {where}{target.display}")
        progress.phase = "done"
        return report

    def _target(self, target_url: str | None, target_database: str | None, profile: str | None = None) -> ConnInfo:
        if target_url and target_database:
            raise InvalidInput("give a target URL or a target database name, not both")
        if target_url:
            return self._checked_target(ConnInfo.parse(target_url))
        try:
            configured = self.s.connection(profile)
        except NotFound:  # the profile was removed since the backup was made
            raise NotFound(f"the backup's database profile {profile} no longer exists: add it again, or give "
                           "another database profile or a target URL") from None
        if target_database:
            target = configured.with_dbname(_clean_db_name(target_database))
        else:
            target = configured
        return self._checked_target(target)

    @staticmethod
    def _checked_target(target: ConnInfo) -> ConnInfo:
        if target.dbname in SYSTEM_DATABASES:
            raise InvalidInput(f"refusing to restore into the system database {target.dbname}")
        return target

    def _run(self, actor: Actor, record: BackupRecord, target: ConnInfo, identity: str, mode: str, jobs: int,
             roles: bool | None, safety: bool, lock: Any, progress: Progress,
             cancel: threading.Event, profile: str | None = None) -> RestoreReport:
        started = time.monotonic()

        def step(name: str, detail: str) -> None:
            self.s.audit.record(actor, "restore", record.id, name, detail[:1500])

        def take_safety() -> str | None:
            if not safety:
                return None
            protects = f"{record.id} into {target.dbname}"  # shown with the backup: which restore it guarded
            task = self.s.prepare_create(actor, description=f"Safety backup before restoring {protects}",
                                         kind="safety", lock=lock, slug=f"pre_restore_safety_{target.dbname}",
                                         conn=target, protects=protects, database=profile)
            task.cancel = cancel  # its own progress: its phases and byte counts are not the restore's
            return str(task.run().id)

        ctx = Context(target=target, server=identity, kept=self.kept, backup_id=record.id, jobs=jobs, roles=roles,
                      progress=progress, cancel=cancel, step=step, hold=self._hold,
                      safety=take_safety if mode == "recreate" else None)
        recovered = False
        safety_id: str | None = None
        try:
            progress.steps = restore_steps(mode, safety)
            progress.enter("authenticating")
            t0 = time.monotonic()
            # the first copy that authenticates (a missing or corrupt local file: a good S3 copy) before any database
            opened, trailer, _ = open_authenticated(self.s, record, _reading(progress), check_matches_catalogue)
            authenticate_s = time.monotonic() - t0
            try:
                if cancel.is_set():
                    raise Cancelled()
                try:
                    outcome = (recreate_restore if mode == "recreate" else swap_restore)(ctx, opened, trailer)
                except RecreateFailed as exc:
                    safety_id = exc.safety_id
                    recovered = self._recover_from_safety(actor, ctx, exc, progress)
                    raise exc.cause if isinstance(exc.cause, BackupError) else exc
                outcome.phases = {"authenticate": authenticate_s, **outcome.phases}
            finally:
                opened.fh.close()
        except BackupError as exc:
            if safety_id is not None:
                exc.message += (f"; {target.dbname} was put back from the safety backup {safety_id}" if recovered
                                else f"; putting {target.dbname} back from the safety backup {safety_id} failed too")
                exc.args = (exc.message,)
            self.s.audit.record(actor, "restore", record.id, "cancelled" if isinstance(exc, Cancelled)
                                else "failed", exc.message)
            raise
        report = RestoreReport(record.id, outcome, time.monotonic() - started)
        if not report.ok:
            bad = [t.name for t in outcome.tables if not t.ok]
            message = (f"row counts differ in {len(bad)} of {len(outcome.tables)} tables ({', '.join(bad[:5])}"
                       f"{' …' if len(bad) > 5 else ''}); the restored copy was dropped and "
                       f"{target.dbname} was left as it was")
            self.s.audit.record(actor, "restore", record.id, "failed", message)
            raise RowCountsDiffer(message, report.as_dict())
        self.s.audit.record(actor, "restore", record.id, "ok",
                            f"into {target.display}; mode {outcome.mode}; {len(outcome.tables)} tables compared"
                            + (f"; previous database kept as {outcome.previous}" if outcome.previous else ""))
        progress.phase = "done"
        progress.table = ""
        return report

    def _recover_from_safety(self, actor: Actor, ctx: Context, exc: RecreateFailed, progress: Progress) -> bool:
        """A recreate restore failed after the drop: load the safety backup back into the database."""
        try:
            record = self.s.get(exc.safety_id)
            opened = self.s._open(record)
            try:
                trailer = opened.authenticate()
                back = Context(target=ctx.target, server=ctx.server, kept=ctx.kept, backup_id=record.id,
                               jobs=ctx.jobs, roles=False, progress=progress, cancel=threading.Event(),
                               step=ctx.step, hold=ctx.hold)
                recreate_restore(back, opened, trailer)
            finally:
                opened.fh.close()
            self.s.audit.record(actor, "restore", ctx.backup_id, "recovered",
                                f"the safety backup {exc.safety_id} was loaded back into {ctx.target.dbname}")
            return True
        except BackupError as again:
            self.s.audit.record(actor, "restore", ctx.backup_id, "failed",
                                f"loading the safety backup {exc.safety_id} back also failed: {again.message}")
            return False

    def contents(self, actor: Actor, backup_id: str) -> dict[str, Any]:
        """What a backup holds (authenticated first), without touching any database."""
        record = self.s._resolve(actor, "contents", backup_id)
        reading = self.s._backup_lock(record.id).acquire(f"a listing of {record.id}")
        try:
            opened = self.s._open(record)
            try:
                trailer = opened.authenticate()
                check_matches_catalogue(record, opened, trailer)
                out = describe(opened, trailer)
            finally:
                opened.fh.close()
        except BackupError as exc:
            self.s.audit.record(actor, "contents", record.id, "failed", exc.message)
            raise
        finally:
            reading.release()
        self.s.audit.record(actor, "contents", record.id, "ok", f"{len(out['tables'])} tables")
        return {"backupId": record.id, **out}

    def _hold(self, name: str) -> Any:
        return self.s._job_lock(name).acquire(name)

    # ----- rollback and kept databases ----------------------------------------------------------------
    def rollback(self, actor: Actor, database_name: str | None = None, profile: str | None = None) -> dict[str, Any]:
        """Put back the database the newest swap replaced; the restored one is kept as `__undone_`
        (profile: on that database profile's server; default DATABASE_URL's)."""
        target = self.s.connection(profile) if not database_name else self.s.connection(profile).with_dbname(
            _clean_db_name(database_name))
        identity = pg.server_identity(target)
        rows = self.kept.live(server=identity, kind=PREVIOUS, original=target.dbname)
        if not rows:
            self.s.audit.record(actor, "restore.rollback", target.dbname, "refused", "no previous database kept")
            raise NotFound(f"no previous database of {target.dbname} is kept: nothing to roll back to")
        row = rows[0]
        lock = self.s._lock(target, identity).acquire(f"a rollback by {actor.name}")
        held: list[Any] = []
        try:
            self.s.audit.record(actor, "restore.rollback", target.dbname, "started", f"back to {row.name}")
            try:
                with connect(database.maintenance(target)) as conn:
                    undone = database.free_name(conn, target.dbname, "undone", database.stamp())
                    if not database.exists(conn, row.name):
                        self.kept.dropped(row.id or 0)
                        raise NotFound(f"the previous database {row.name} no longer exists")
                    held.append(self._hold(lock_key(identity, undone)))
                    entry = self.kept.add(server=identity, display=target.display, name=undone,
                                          original=target.dbname, kind=SWAPPING, backup_id=row.backup_id,
                                          note=f"rolled back from {row.backup_id}")
                    try:
                        database.swap(conn, target.dbname, row.name, undone)
                    except BaseException:
                        self.kept.dropped(entry.id or 0)
                        raise
                self.kept.dropped(row.id or 0)
                self.kept.update(entry.id or 0, kind=UNDONE)
                paused = self._swap_subscriptions(target, undone, json.loads(row.subscriptions or "[]"))
            except BackupError as exc:
                self.s.audit.record(actor, "restore.rollback", target.dbname, "failed", exc.message)
                raise
            self.kept.update(entry.id or 0, subscriptions=json.dumps(paused))
            self.s.audit.record(actor, "restore.rollback", target.dbname, "ok",
                                f"{row.name} is {target.dbname} again; the restored copy is kept as {undone}")
        finally:
            for h in held:
                h.release()
            lock.release()
        return {"database": target.dbname, "restoredFrom": row.name, "undoneKeptAs": undone}

    def _swap_subscriptions(self, target: ConnInfo, undone: str, resume: list[str]) -> list[str]:
        """After a rollback: pause the set-aside copy's subscriptions, resume the ones paused before."""
        try:
            undone_info = target.with_dbname(undone)
            paused = database.subscriptions(undone_info, enabled_only=True)
            database.set_subscriptions(undone_info, paused, enabled=False)
            database.set_subscriptions(target, resume, enabled=True)
            return paused
        except (BackupError, psycopg.Error) as exc:
            log.warning("subscriptions could not be switched after the rollback of %s: %s", target.dbname, exc)
            return []

    def kept_databases(self) -> list[dict[str, Any]]:
        """Databases restores keep beside the live ones (previous and undone copies)."""
        return [{"id": r.id, "name": r.name, "database": r.original, "kind": r.kind, "server": r.server_display,
                 "backupId": r.backup_id, "createdAt": _iso(r.created_at), "note": r.note}
                for r in self.kept.live() if r.kind not in TRANSIENT]

    def drop_kept(self, actor: Actor, name: str, *, reason: str = "by an administrator",
                  profile: str | None = None) -> None:
        """Drop a kept database (previous or undone) of the configured server (or a database profile's)."""
        conn_info = self.s.connection(profile)
        identity = pg.server_identity(conn_info)
        row = next((r for r in self.kept.live(server=identity) if r.name == name and r.kind not in TRANSIENT), None)
        if row is None:
            raise NotFound(f"no kept database named {name} on this server")
        self.s.audit.record(actor, "restore.drop-previous", name, "started", reason)
        try:
            with connect(database.maintenance(conn_info)) as conn:
                database.drop(conn, name, database.maintenance(conn_info))
        except BackupError as exc:
            self.s.audit.record(actor, "restore.drop-previous", name, "failed", exc.message)
            raise
        self.kept.dropped(row.id or 0)
        self.s.audit.record(actor, "restore.drop-previous", name, "ok", reason)

    def reconcile(self, alive: Any) -> dict[str, int]:
        """At start-up: settle what a crashed restore or rollback left (a half-built copy is dropped, a
        database set aside by a swap that committed is kept for rollback), drop kept databases past their
        time, and forget rows whose database is gone (dropped by hand)."""
        removed = expired = 0
        seen: set[str] = set()
        # the configured server and every database profile's: a restore on any of them may have crashed
        for profile in [None, *(p.name for p in self.s.profiles.all())]:
            try:
                conn_info = self.s.connection(profile)
                identity = pg.server_identity(conn_info)
                if identity in seen:
                    continue
                seen.add(identity)
                with connect(database.maintenance(conn_info)) as conn:
                    names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
            except (BackupError, psycopg.Error):
                continue
            r, e = self._reconcile_server(alive, conn_info, identity, names)
            removed, expired = removed + r, expired + e
        return {"droppedUnfinished": removed, "droppedExpired": expired}

    def _reconcile_server(self, alive: Any, conn_info: ConnInfo, identity: str, names: set[str]) -> tuple[int, int]:
        """reconcile() on one server: (half-built copies dropped, kept databases dropped as expired)."""
        removed = expired = 0
        system = Actor("system")
        keep = timedelta(hours=self.s.settings.keep_previous_hours)
        for row in self.kept.live(server=identity):
            if alive(lock_key(identity, row.name)):
                continue  # a restore or rollback elsewhere is working on it
            if row.name not in names:
                self.kept.dropped(row.id or 0)  # gone: a swap that never happened, or dropped by hand
                continue
            if row.kind == SWAPPING:  # the swap committed before the crash: keep it as its kind says
                final = UNDONE if row.note.startswith("rolled back") else PREVIOUS
                self.kept.update(row.id or 0, kind=final)
                self.s.audit.record(system, "restore.keep-previous", row.name, "ok",
                                    f"set aside by a swap of {row.original} that was interrupted; kept for "
                                    f"rollback ({row.note})")
                continue
            if row.kind == BUILDING:
                reason = "left by a restore that stopped before it finished; never swapped in"
            elif utcnow() - (as_utc(row.created_at) or utcnow()) > keep:
                reason = f"kept for rollback longer than {self.s.settings.keep_previous_hours} hours"
            else:
                continue
            try:
                with connect(database.maintenance(conn_info)) as conn:
                    database.drop(conn, row.name, database.maintenance(conn_info))
            except BackupError as exc:
                self.s.audit.record(system, "restore.drop-previous", row.name, "failed", exc.message)
                continue
            self.kept.dropped(row.id or 0)
            self.s.audit.record(system, "restore.drop-previous", row.name, "ok", reason)
            if row.kind == BUILDING:
                removed += 1
            else:
                expired += 1
        return removed, expired


def check_matches_catalogue(record: BackupRecord, opened: OpenedFile, trailer: dict[str, Any]) -> None:
    """Refuse an authentic file that is not the backup catalogued under this id (a swapped file)."""
    if record.sha256 and opened.sha256 != record.sha256:
        raise InvalidInput("the file on disk is not the backup catalogued under this id (its SHA-256 "
                           "differs); it was replaced or modified")
    if opened.header.fields.get("id") not in (None, record.id):
        raise InvalidInput("the file's own header names another backup id; it was renamed or swapped")
    if record.table_counts and json.loads(record.table_counts) != trailer.get("tableRowCounts"):
        raise InvalidInput("the file's recorded row counts differ from the catalogue's; it was swapped")


def _reading(progress: Progress) -> Any:
    """An authenticate() progress callback: bytes read of the copy's size."""
    def update(done: int, total: int) -> None:
        progress.total, progress.bytes_read = total, done
    return update


def _clean_db_name(name: str) -> str:
    name = name.strip()
    if not name or len(name.encode()) > 63 or any(ord(c) < 32 for c in name):
        raise InvalidInput("invalid target database name")
    return name


def _iso(value: Any) -> str | None:
    value = as_utc(value)
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None
