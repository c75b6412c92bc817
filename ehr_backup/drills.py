"""Restore drills: prove a backup restores by restoring it into a scratch database, checking it, and
dropping it again, with an evidence report whose hashes go into the audit chain.

Record, then work: the scratch database's name is recorded (and a lock held) before it is created, so
a drill killed half-way leaves a trace that the next start-up (`reconcile`) drops; likewise each role a
drill makes (powerless, see drill_roles) is recorded before it exists and dropped when the drill ends. One drill per server
at a time; the scratch database is `<db>__drill_<random>`, never the live database's name. The loading
is the restore's own (ehr_backup/restore): the same loader, the same row counting.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import or_
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from . import __version__, drill_blobs, drill_roles, pg
from .audit import Actor
from .catalogue import as_utc, utcnow
from .drill_checks import CheckResult, DrillChecks, run_checks
from .drill_report import Written, audit_detail
from .drill_report import write as write_report
from .drill_verdict import compare_tables, is_scratch, may_drop, newest_verified, scratch_name, verdict
from .errors import BackupError, Busy, Cancelled, InvalidInput, NotFound
from .locks import DatabaseLock, lock_for
from .models import AppSetting, BackupRecord, Drill, Status
from .pg import ConnInfo, connect
from .pipeline import Progress
from .restore import database
from .restore.counts import count_tables
from .restore.operation import check_matches_catalogue, default_jobs
from .restore.run import Context, load

if TYPE_CHECKING:
    from .service import BackupService, Task

log = logging.getLogger(__name__)
SYSTEM = Actor("system")
DEFAULT_SCHEDULE = "weekly-drill"
DEFAULT_SCHEDULE_FLAG = "default-drill-schedule-created"


class DrillFailed(BackupError):
    """A drill ran and failed (or could not finish); `report` holds its result and report paths."""

    status = 422
    code = "drill_failed"

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def scratch_key(server: str, name: str) -> str:
    """The job lock held while a drill works on a scratch database (a start-up elsewhere spares it)."""
    return f"drill-scratch:{server}/{name}"


class Drills:
    """Run drills, list them, settle what a crash left, and keep the default drill schedule."""

    def __init__(self, service: BackupService) -> None:
        self.s = service
        self.checks = DrillChecks(service)

    def server(self, profile: str | None = None) -> ConnInfo:
        """The maintenance database of the server drills use: EHR_BACKUP_DRILL_URL's, else the server of
        the backup's database profile (DATABASE_URL's for the default one)."""
        url = self.s.settings.drill_url
        return database.maintenance(ConnInfo.parse(url) if url else self.s.connection(profile))

    def _servers(self) -> dict[str, ConnInfo]:
        """Every server a drill may have used, by identity: the drill server, else each profile's (the ones
        reachable now); a start-up clean-up finds a scratch database left on any of them."""
        names: list[str | None] = [None]
        if not self.s.settings.drill_url:
            names += [p.name for p in self.s.profiles.all()]
        found: dict[str, ConnInfo] = {}
        for name in names:
            try:
                target = self.server(name)
                found.setdefault(pg.server_identity(target), target)
            except BackupError:
                continue  # unreachable or misconfigured now: its rows stay recorded for a later start-up
        return found

    def _server_lock(self, identity: str) -> DatabaseLock:
        return lock_for(self.s.settings, self.s.settings.data_dir / "locks" / "drills", identity,
                        noun="the drill server")

    # ----- running a drill -------------------------------------------------------------------------------
    def prepare(self, actor: Actor, backup_id: str) -> Task:
        """Reserve the drill server and the backup, record the scratch name; the task runs the drill."""
        from .service import Task

        record = self.s._resolve(actor, "drill", backup_id)
        held: list[DatabaseLock] = []
        try:
            if record.status not in (Status.COMPLETED, Status.DISCOVERED):
                raise InvalidInput(f"backup {record.id} is {record.status}; only completed backups can be drilled")
            target = self.server(record.profile)
            identity = pg.server_identity(target)
            held.append(self._server_lock(identity).acquire(f"a drill of {record.id} by {actor.name}"))
            held.append(self.s._backup_lock(record.id).acquire(f"a drill of {record.id}"))
            live = self.s.connection(record.profile).dbname
            with connect(target) as conn:
                scratch = scratch_name(record.database or live, secrets.token_hex(4))
                if database.exists(conn, scratch):
                    raise Busy(f"a database named {scratch} exists already; try again")
            if scratch in (live, record.database) or not is_scratch(scratch):
                raise InvalidInput("refusing to drill into the live database's name")
            held.append(self.s._job_lock(scratch_key(identity, scratch)).acquire(f"drill into {scratch}"))
            held.append(self.s._started(actor, "drill", record.id, f"into {scratch} on {target.display}"))
        except BackupError as exc:
            for h in held:
                h.release()
            self.s.audit.record(actor, "drill", record.id, "refused", exc.message)
            raise
        try:
            row = Drill(backup_id=record.id, database=record.database, server=identity, server_display=target.display,
                        scratch=scratch, actor=actor.name, started_at=utcnow())
            with self.s.db.writing() as s:  # recorded before the scratch database exists
                s.add(row)
        except BaseException:
            for h in held:
                h.release()
            raise

        def work(progress: Progress, cancel: threading.Event) -> dict[str, Any]:
            return self._run(actor, record, row, target, progress, cancel)

        return Task("drill", record.id, work, held, backup_id=record.id)

    def _run(self, actor: Actor, record: BackupRecord, row: Drill, target: ConnInfo, progress: Progress,
             cancel: threading.Event) -> dict[str, Any]:
        """Run the drill; whatever stops it, it ends recorded (failed, audited) rather than stuck running."""
        try:
            return self._attempt(actor, record, row, target, progress, cancel)
        except Exception as exc:
            if self.get(row.id or 0).outcome == "running":  # not settled by _finish: an unexpected error
                message = exc.message if isinstance(exc, BackupError) else f"internal error: {type(exc).__name__}"
                log.warning("drill %s of %s stopped: %s", row.id, record.id, message, exc_info=True)
                self._update(row.id, outcome="failed", finished_at=utcnow(), message=message)
                self.s.audit.record(actor, "drill", record.id, "failed", f"drill {row.id}: {message}")
            raise

    def _attempt(self, actor: Actor, record: BackupRecord, row: Drill, target: ConnInfo, progress: Progress,
                 cancel: threading.Event) -> dict[str, Any]:
        """Authenticate, load into the scratch database, compare and check; always drop it; report."""
        phases: dict[str, float] = {}
        tables: dict[str, dict[str, Any]] = {}
        checks: list[CheckResult] = []
        facts: dict[str, Any] = {"sha256": record.sha256, "serverVersion": None, "notes": []}
        error: BackupError | None = None
        scratch = target.with_dbname(row.scratch)
        try:
            opened = self.s._open(record)
            try:
                progress.phase, progress.total = "authenticating", opened.size
                t0 = time.monotonic()
                trailer = opened.authenticate(lambda done, _total: setattr(progress, "bytes_read", done))
                facts["sha256"] = opened.sha256
                check_matches_catalogue(record, opened, trailer)
                phases["authenticate"] = time.monotonic() - t0
                if cancel.is_set():
                    raise Cancelled()
                t0 = time.monotonic()
                loaded = self._load(record, row, target, opened, trailer, progress, cancel, facts)
                phases["load"] = time.monotonic() - t0
            finally:
                opened.fh.close()
            progress.phase = "checking"
            t0 = time.monotonic()
            counts = count_tables(scratch, loaded, default_jobs())
            tables = compare_tables(trailer.get("tableRowCounts") or {}, loaded, counts)
            checks = run_checks(self.checks.all(), scratch, self._live(record), self.s.settings.drill_check_timeout)
            phases["check"] = time.monotonic() - t0
            passed, message = verdict(tables, checks)
        except BackupError as exc:
            error, passed, message = exc, False, exc.message
        except psycopg.Error as exc:
            error, passed = BackupError("database error"), False
            message = f"the drill stopped on a database error: {str(exc).strip().splitlines()[0][:300]}"
        finally:
            progress.phase = "dropping the scratch database"
            dropped = self._drop(row, target)
            facts["notes"] += drill_roles.drop_all(self.s.db, target, row) if dropped else []
        return self._finish(actor, record, row, target, passed, message, phases, tables, checks, facts, dropped,
                            error, progress)

    def _load(self, record: BackupRecord, row: Drill, target: ConnInfo, opened: Any, trailer: dict[str, Any],
              progress: Progress, cancel: threading.Event, facts: dict[str, Any]) -> list[Any]:
        """Create the scratch database with the backup's properties and load the dump into it."""
        progress.phase = "loading"
        with connect(target) as conn:
            v = conn.execute("SHOW server_version").fetchone()
            facts["serverVersion"] = str(v[0]) if v else None
            recorded = trailer.get("globals")
            if recorded and (recorded.get("server") or "") != row.server:  # another server: roles it needs
                facts["notes"] += drill_roles.make_all(self.s.db, conn, row, recorded)
            database.create(conn, row.scratch, trailer.get("database"))
        ctx = Context(target=target.with_dbname(row.scratch), server=row.server, kept=self.s.restores.kept,
                      backup_id=record.id, jobs=default_jobs(), roles=False, progress=progress, cancel=cancel,
                      step=lambda _step, _detail: None, hold=lambda name: None)
        result = load(ctx, ctx.target, opened, trailer)
        if cancel.is_set():
            raise Cancelled()
        return result.loaded

    def _live(self, record: BackupRecord) -> ConnInfo | None:
        """The live database of this backup (on its database profile's server), for compare-live checks."""
        try:
            live = self.s.connection(record.profile)
        except BackupError:
            return None
        return live.with_dbname(record.database) if record.database and record.database != live.dbname else live

    def _may_drop(self, row: Drill) -> bool:
        """Whether the row's scratch name may be dropped WITH (FORCE); a damaged row is refused and left."""
        lives: list[str | None] = []
        for name in [None, *(p.name for p in self.s.profiles.all())]:  # no profile's live database, ever
            try:
                lives.append(self.s.connection(name).dbname)
            except BackupError:
                continue
        if may_drop(row.scratch, (*lives, row.database)):
            return True
        log.warning("drill %s: refusing to drop %r: not a scratch database's name (a damaged drill row); left",
                    row.id, row.scratch)
        return False

    def _drop(self, row: Drill, target: ConnInfo) -> bool:
        """Drop the scratch database; if that fails it stays recorded for the next start-up."""
        if not self._may_drop(row):
            return False
        try:
            with connect(target) as conn:
                database.drop(conn, row.scratch, target)
        except BackupError:
            return False
        self._update(row.id, scratch_dropped=True)
        return True

    def _finish(self, actor: Actor, record: BackupRecord, row: Drill, target: ConnInfo, passed: bool, message: str,
                phases: dict[str, float], tables: dict[str, dict[str, Any]], checks: list[CheckResult],
                facts: dict[str, Any], dropped: bool, error: BackupError | None, progress: Progress) -> dict[str, Any]:
        """Write the report, audit its hashes, record the outcome; raise DrillFailed when it failed."""
        finished = utcnow()
        outcome = "passed" if passed else "failed"
        recovery = round(sum(phases.values()), 3) if phases else None
        if not dropped:
            facts["notes"].append(f"the scratch database {row.scratch} could not be dropped; the next start-up "
                                  "drops it")
        report = {"drillId": row.id, "outcome": outcome, "message": message, "actor": actor.name,
                  "startedAt": _iso(row.started_at), "finishedAt": _iso(finished),
                  "backup": {"id": record.id, "sha256": facts["sha256"], "database": record.database,
                             "createdAt": _iso(record.created_at), "createdBy": record.created_by,
                             "description": record.description, "size": record.size, "keyId": record.key_id,
                             "serverVersion": record.server_version, "pgDumpVersion": record.pg_dump_version},
                  "server": {"display": target.display.rsplit("/", 1)[0], "version": facts["serverVersion"],
                             "scratchDatabase": row.scratch, "scratchDropped": dropped},
                  "app": {"name": "EHR Backup", "version": __version__},
                  "phases": {k: round(v, 3) for k, v in phases.items()}, "recoverySeconds": recovery,
                  "tables": tables, "checks": [c.as_dict() for c in checks], "notes": facts["notes"]}
        written: Written | None = None
        try:
            written = write_report(self.s.settings.data_dir, row.id or 0, report)
        except BackupError as exc:
            message += f"; the report could not be written: {exc.message}"
        if written is not None:  # in the metadata database too: any instance serves the report (drill_blobs.py)
            try:
                drill_blobs.save(self.s.db, row.id or 0, {"json": written.json_data, "pdf": written.pdf_data})
            except SQLAlchemyError:
                log.warning("drill %s: the report could not be stored in the metadata database", row.id,
                            exc_info=True)
                message += "; the report is only in this instance's data directory"
        hashes = audit_detail(written.json_sha256, written.pdf_sha256) if written else "no report"
        self.s.audit.record(actor, "drill", record.id, "ok" if passed else "failed",
                            f"drill {row.id}: {hashes}; recovery {recovery} s; {message}"[:2000])
        self._update(row.id, finished_at=finished, outcome=outcome, recovery_s=recovery, message=message[:2000],
                     authenticate_s=phases.get("authenticate"), load_s=phases.get("load"),
                     check_s=phases.get("check"), report_json=str(written.json_path) if written else None,
                     report_pdf=str(written.pdf_path) if written else None,
                     report_sha256=written.json_sha256 if written else None,
                     report_pdf_sha256=written.pdf_sha256 if written else None)
        progress.phase = "done"
        result = {"id": row.id, "backupId": record.id, "database": record.database, "outcome": outcome,
                  "message": message, "recoverySeconds": recovery, "phases": report["phases"], "tables": tables,
                  "checks": report["checks"], "scratchDatabase": row.scratch, "scratchDropped": dropped,
                  "report": {"json": str(written.json_path) if written else None,
                             "pdf": str(written.pdf_path) if written else None,
                             "jsonSha256": written.json_sha256 if written else None,
                             "pdfSha256": written.pdf_sha256 if written else None}}
        if isinstance(error, Cancelled):
            raise error
        if not passed:
            raise DrillFailed(f"drill {row.id} of {record.id} failed: {message}", result)
        return result

    def _update(self, drill_id: int | None, **fields: Any) -> None:
        with self.s.db.writing() as s:
            row = s.get(Drill, drill_id)
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)
                s.add(row)

    # ----- reading -----------------------------------------------------------------------------------
    def get(self, drill_id: int) -> Drill:
        """One drill, or NotFound."""
        with self.s.db.reading() as s:
            row = s.get(Drill, drill_id)
        if row is None:
            raise NotFound(f"no drill {drill_id}")
        return row

    def all(self, limit: int = 200) -> list[Drill]:
        """The newest drills, newest first."""
        with self.s.db.reading() as s:
            return list(s.exec(select(Drill).order_by(col(Drill.id).desc()).limit(limit)))

    def latest(self) -> list[dict[str, Any]]:
        """Per database, its newest finished drill (the interface the dashboard and alerts read)."""
        seen: dict[str, dict[str, Any]] = {}
        with self.s.db.reading() as s:
            rows = s.exec(select(Drill).where(col(Drill.outcome).in_(("passed", "failed")))
                          .order_by(col(Drill.started_at).desc(), col(Drill.id).desc()).limit(1000))
            for r in rows:
                seen.setdefault(r.database, {"database": r.database, "backupId": r.backup_id,
                                             "at": _iso(r.finished_at or r.started_at), "outcome": r.outcome,
                                             "recoverySeconds": r.recovery_s, "message": r.message})
        return [seen[k] for k in sorted(seen)]

    def last_for(self, backup_id: str) -> dict[str, Any] | None:
        """A backup's newest finished drill as the backup JSON shows it (`lastDrill`)."""
        with self.s.db.reading() as s:
            r = s.exec(select(Drill).where(Drill.backup_id == backup_id, col(Drill.outcome).in_(("passed", "failed")))
                       .order_by(col(Drill.id).desc()).limit(1)).first()
        return None if r is None else {"at": _iso(r.finished_at), "outcome": r.outcome, "recoverySeconds": r.recovery_s,
                                       "drillId": r.id}

    # ----- start-up and schedules ------------------------------------------------------------------------
    def reconcile(self, alive: Any) -> dict[str, int]:
        """Drop scratch databases and roles left by drills that died, and mark those drills failed."""
        with self.s.db.reading() as s:
            rows = list(s.exec(select(Drill).where(or_(col(Drill.outcome) == "running",
                                                      col(Drill.scratch_dropped).is_(False),
                                                      col(Drill.roles_pending) != ""))))
        dropped = 0
        servers: dict[str, ConnInfo] | None = None
        for row in rows:
            if alive(scratch_key(row.server, row.scratch)):
                continue  # a drill in another process is working on it
            if not row.scratch_dropped or row.roles_pending:
                try:
                    if servers is None:
                        servers = self._servers()
                    target = servers.get(row.server)
                    if target is None:
                        continue  # made on a server not configured (or reachable) now: left recorded
                    if not row.scratch_dropped and self._may_drop(row):
                        with connect(target) as conn:
                            database.drop(conn, row.scratch, target)
                        self._update(row.id, scratch_dropped=True)
                        row.scratch_dropped = True
                        self.s.audit.record(SYSTEM, "drill.drop-scratch", row.scratch, "ok",
                                            f"left by drill {row.id} of {row.backup_id}, which stopped before it "
                                            "finished")
                        dropped += 1
                except BackupError as exc:
                    self.s.audit.record(SYSTEM, "drill.drop-scratch", row.scratch, "failed", exc.message)
                    continue
                if row.scratch_dropped and row.roles_pending:  # roles only once nothing of theirs is left
                    notes = drill_roles.drop_all(self.s.db, target, row)
                    self.s.audit.record(SYSTEM, "drill.drop-roles", row.scratch,
                                        "failed" if drill_roles.pending(self.s.db, row.id) else "ok",
                                        f"left by drill {row.id}: " + "; ".join(notes))
            if row.outcome == "running":
                message = "interrupted: the program stopped during the drill"
                self._update(row.id, outcome="failed", finished_at=utcnow(), message=message)
                self.s.audit.record(SYSTEM, "drill", row.backup_id, "failed", f"drill {row.id}: {message}")
        return {"droppedDrillDatabases": dropped}

    def ensure_default_schedule(self) -> bool:
        """Create the weekly drill schedule once per installation; an admin who removes it keeps it removed."""
        cron = self.s.settings.drill_schedule
        if cron is None:
            return False
        with self.s.db.reading() as s:
            if s.get(AppSetting, DEFAULT_SCHEDULE_FLAG) is not None:
                return False
        try:
            self.s.schedules.create(SYSTEM, DEFAULT_SCHEDULE, kind="drill", cron=cron, description="Restore drill",
                                    retries=0)
            made = True
        except InvalidInput:
            made = False  # a schedule of that name exists already (made by another process or by hand)
        with self.s.db.writing() as s:
            if s.get(AppSetting, DEFAULT_SCHEDULE_FLAG) is None:
                s.add(AppSetting(key=DEFAULT_SCHEDULE_FLAG, value=cron, updated_at=utcnow()))
        return made

    def run_scheduled(self, actor: Actor, progress: Progress, cancel: threading.Event) -> dict[str, Any]:
        """Drill the newest verified-good backup of each database, one after another."""
        results = []
        for record in newest_verified(self.s.catalogue.all()):
            if cancel.is_set():
                raise Cancelled()
            try:
                task = self.prepare(actor, record.id)
                task.progress, task.cancel = progress, cancel
                out = task.run()
                results.append({"backupId": record.id, "database": record.database, "outcome": "passed",
                                "drillId": out["id"]})
            except Cancelled:
                raise
            except BackupError as exc:
                drill_id = getattr(exc, "report", {}).get("id")
                results.append({"backupId": record.id, "database": record.database, "outcome": "failed",
                                "drillId": drill_id, "error": exc.message})
        failed = [r for r in results if r["outcome"] == "failed"]
        summary = {"drilled": len(results), "passed": len(results) - len(failed), "failed": len(failed),
                   "results": results}
        if failed:
            raise DrillFailed(f"{len(failed)} of {len(results)} drills failed: "
                              + "; ".join(f"{r['backupId']}: {r['error']}" for r in failed[:3]), summary)
        return summary


def view(r: Drill) -> dict[str, Any]:
    """The JSON form of a recorded drill."""
    return {"id": r.id, "backupId": r.backup_id, "database": r.database, "server": r.server_display,
            "scratchDatabase": r.scratch, "scratchDropped": r.scratch_dropped, "actor": r.actor,
            "startedAt": _iso(r.started_at), "finishedAt": _iso(r.finished_at), "outcome": r.outcome,
            "recoverySeconds": r.recovery_s,
            "phases": {"authenticate": r.authenticate_s, "load": r.load_s, "check": r.check_s},
            "message": r.message, "report": {"json": r.report_json, "pdf": r.report_pdf,
                                             "jsonSha256": r.report_sha256, "pdfSha256": r.report_pdf_sha256}}


def _iso(value: Any) -> str | None:
    value = as_utc(value)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None
