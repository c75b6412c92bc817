"""BackupService: the operations every edge (CLI, REST, pages) calls, audited and catalogued."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import IntegrityError

from . import __version__, clusterinfo, demo, drill_blobs, drill_report, paths, pg, pins, safedir, storage
from .alerts.service import Alerts
from .alerts.thresholds import Thresholds
from .audit import Actor, AuditLog
from .audit_anchor import FIELD as AUDIT_ANCHOR_FIELD
from .audit_anchor import find_anchors
from .audit_chain import ChainReport, load_audit_keys
from .catalogue import Catalogue, as_utc, utcnow
from .catalogue_rebuild import CatalogueRebuild
from .compression import EXTENSIONS, check
from .config import Settings
from .db import Database
from .default_location import resolve as resolve_default_location
from .destinations import plan as destination_plan
from .destinations import rebuild_s3, s3_only
from .destinations.copies import Copies, remote_primary
from .destinations.store import Destinations
from .drill_checks import view as drill_check_view
from .drills import Drills
from .drills import view as drill_view
from .errors import BackupError, Busy, Cancelled, ConfigError, InvalidInput, NotFound, Pinned, StorageError
from .fileformat import OpenedFile, peek_header
from .kept_profiles import profile_holding as kept_profile_holding
from .kept_profiles import with_profiles as kept_with_profiles
from .keys import KEY_ID_RE, KeyRing, load_keyring
from .listing import Listing, ListQuery, last_drills
from .locks import DatabaseLock, lock_for
from .models import BackupRecord, Status
from .pg import ConnInfo
from .pipeline import Progress, run_backup, scan_dump
from .profile_dirs import local_data_dirs as profile_local_data_dirs
from .profiles import Profiles
from .prune import Rotation, file_exists
from .rebuild import marked_missing
from .restore.operation import Restores
from .retention import RetentionPolicy
from .schedules import Schedules, run_view
from .storage_stats import StorageStatus
from .text import clean_text
from .verification import Verifications

log = logging.getLogger("ehr_backup")
MAX_DESCRIPTION = 500
SPACE_MARGIN = 16 * 1024 * 1024


def private_dir(path: Path) -> None:
    """Create the data directory 0700, and tighten an existing one that others could read or enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise ConfigError(f"cannot make the data directory {path} private (mode 0700): {exc.strerror}") from None


@dataclass
class Task:
    """A prepared operation holding its database lock; run() does the work and releases the lock."""

    kind: str
    target: str
    _run: Callable[[Progress, threading.Event], Any]
    _locks: list[DatabaseLock]
    progress: Progress = field(default_factory=Progress)
    cancel: threading.Event = field(default_factory=threading.Event)
    backup_id: str | None = None

    def run(self) -> Any:
        """Do the work (on any thread); always releases the lock."""
        try:
            return self._run(self.progress, self.cancel)
        finally:
            for lock in self._locks:
                lock.release()


class BackupService:
    """Create, list, verify, restore, delete and download backups."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        private_dir(settings.data_dir)
        self.db = Database(settings.data_dir / "catalogue.sqlite3", settings.metadata_url)
        self.catalogue = Catalogue(self.db)
        self.audit = AuditLog(self.db, settings.data_dir, syslog=settings.audit_syslog,
                              keys=lambda: load_audit_keys(settings.audit_key, settings.encryption_key,
                                                           settings.old_keys))
        self.audit.shared = bool(settings.metadata_url)  # other instances write it too: heads per data directory
        self.settings = settings = resolve_default_location(self.db, self.audit, settings)  # before any use
        self._keyring: KeyRing | None = None
        self.restores = Restores(self)
        self.verifications = Verifications(self)
        self.storage_status = StorageStatus(self)
        self.rotation = Rotation(self)
        self.schedules = Schedules(self)
        self.drills = Drills(self)
        self.alerts = Alerts(self)  # ehr_backup/alerts/: channels, checks, history
        # stored alert/storage thresholds over the environment's; everything compares against .current()
        self.alert_thresholds = Thresholds(self.db, settings, self.audit)
        self.listing = Listing(self)  # ehr_backup/listing.py: paged, filtered, sorted in SQLite
        self.catalogue_rebuild = CatalogueRebuild(self)  # ehr_backup/catalogue_rebuild.py, rebuild.py
        self.profiles = Profiles(self)  # ehr_backup/profiles.py: named databases besides DATABASE_URL
        self.destinations = Destinations(self)  # ehr_backup/destinations/: S3 destinations and backup copies
        self.copies = Copies(self)
        rebuild_s3.install(self)  # catalogue rebuild reads S3 destinations too (destinations/rebuild_s3.py)

    # ----- configuration -----------------------------------------------------------------------------
    def connection(self, database: str | None = None) -> ConnInfo:
        """A database profile's connection (ehr_backup/profiles.py); without one the configured database:
        DATABASE_URL, else the demo cluster."""
        if database is not None and database != "default":
            return self.profiles.connection(database)
        if self.settings.database_url:
            return ConnInfo.parse(self.settings.database_url)
        url = demo.ensure_running(self.settings.data_dir)
        if url is None:
            raise ConfigError("DATABASE_URL is not set: set it to the database to back up, or run "
                              "`ehr-backup demo` to start a demo database")
        return ConnInfo.parse(url)

    def using_demo(self) -> bool:
        """Whether the configured database is the demo cluster."""
        return not self.settings.database_url

    def keyring(self) -> KeyRing:
        """Keys from the environment; for the demo only, a generated key kept in the data directory."""
        if self._keyring is None:
            current = self.settings.encryption_key
            if not current and self.using_demo() and demo.database_url(self.settings.data_dir):
                current = demo.demo_key(self.settings.data_dir)
                log.warning("using the demo encryption key kept in %s; real use needs "
                            "BACKUP_ENCRYPTION_KEY, kept away from the backups", self.settings.data_dir)
            self._keyring = load_keyring(current, self.settings.old_keys)
        return self._keyring

    def _job_lock(self, backup_id: str) -> DatabaseLock:
        """Held while a backup is being written, so that a start-up elsewhere knows it is alive."""
        return lock_for(self.settings, self.settings.data_dir / "locks" / "jobs", backup_id, remove_on_release=True)

    def _started(self, actor: Actor, action: str, target: str, detail: str = "") -> DatabaseLock:
        """Audit the start of a long operation; the returned lock, held while it runs, tells a later
        start-up that the operation is alive (a released lock with no outcome means it was killed)."""
        entry = self.audit.record(actor, action, target, "started", detail)
        return self._job_lock(f"audit:{entry.seq}").acquire(f"{action} {target}")

    def _backup_lock(self, backup_id: str, *, exclusive: bool = False) -> DatabaseLock:
        """Held (shared) while a backup file is read; delete needs it alone (exclusive)."""
        return lock_for(self.settings, self.settings.data_dir / "locks" / "backups", backup_id,
                        shared=not exclusive, noun=f"backup {backup_id}")

    def _lock(self, conn: ConnInfo, identity: str | None = None) -> DatabaseLock:
        """The lock of one database, the same whichever address names its server."""
        identity = identity or pg.server_identity(conn)
        return lock_for(self.settings, self.settings.data_dir / "locks", f"{identity}/{conn.dbname}")

    # ----- locations ---------------------------------------------------------------------------------
    def forbidden_dirs(self) -> list[Path]:
        """Directories a custom location must not overlap."""
        dirs = [self.settings.data_dir]
        pgdata = demo.pgdata_dir(self.settings.data_dir)
        if pgdata:
            dirs.append(pgdata)
        try:  # the configured server's own data directory, when it runs here and we may read the setting
            server_dir = pg.data_directory(self.connection())
        except BackupError:
            server_dir = None
        if server_dir:
            dirs.append(Path(server_dir))
        dirs += profile_local_data_dirs(self)  # database profiles' servers running here, too
        return dirs

    def locations(self) -> list[dict[str, Any]]:
        """Each standard location with its path, whether it exists, is writable, and its free space."""
        out = []
        warn = self.alert_thresholds.current().min_free_mb * 1024 * 1024
        for loc in storage.standard_locations(self.settings.default_dir):
            free = storage.free_bytes(loc.path)
            out.append({"key": loc.key, "label": loc.label, "path": str(loc.path),
                        "exists": loc.path.is_dir(), "writable": storage.is_writable(loc.path)
                        if loc.path.exists() else storage.is_writable(_existing_parent(loc.path)),
                        "freeBytes": free, "lowSpace": free is not None and free < warn})
        return out

    def resolve_location(self, key: str, custom_path: str | None) -> tuple[str, Path]:
        """Turn a location key (and a custom path) into a validated, existing directory."""
        if key not in storage.LOCATIONS:
            raise InvalidInput(f"unknown location {key!r}: choose one of {', '.join(storage.LOCATIONS)}")
        if key == "custom":
            if not custom_path:
                raise InvalidInput("a custom location needs a path")
            return key, storage.validate_custom(custom_path, self.forbidden_dirs(), self.settings.custom_roots)
        if custom_path:
            raise InvalidInput("a path is only accepted with the custom location")
        loc = next(x for x in storage.standard_locations(self.settings.default_dir) if x.key == key)
        storage.ensure_dir(loc.path)
        return key, Path(os.path.realpath(loc.path))

    def browse(self, path: str | None) -> dict[str, Any]:
        """List the sub-folders of a folder inside the custom roots, for the custom-location chooser.

        Every folder is listed whatever its name (the page shows names as text); `entries` marks the
        ones whose name a location may not hold, and `allowed`/`reason` say whether this folder may be
        chosen.
        """
        roots = self.settings.custom_roots
        path = path or next((str(r) for r in roots if r.is_dir()), None)
        if not path:
            raise NotFound(f"none of the folders custom locations may use exists ({paths.roots_text(roots)})")
        target = Path(os.path.realpath(paths.check_path_text(path, strict=False)))
        if not paths.within(target, roots):
            raise InvalidInput(f"{target} is outside the folders custom locations may use "
                               f"({paths.roots_text(roots)})")
        try:
            with safedir.opened(target) as fd:
                names = sorted(e.name for e in os.scandir(fd)
                               if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))[:1000]
                try:
                    paths.check_custom(str(target), self.forbidden_dirs(), roots)
                    safedir.check_private(fd, target)
                    allowed, reason = True, ""
                except BackupError as exc:
                    allowed, reason = False, exc.message
        except NotFound:
            raise NotFound("no such folder") from None
        except OSError as exc:
            raise safedir.os_error(exc, f"cannot list {target}") from None
        entries = [{"name": n, "allowed": (p := paths.name_problem(n)) is None, "reason": p or ""} for n in names]
        parent = target.parent if target != target.parent and paths.within(target.parent, roots) else None
        return {"path": str(target), "parent": str(parent) if parent else None, "dirs": names,
                "entries": entries, "allowed": allowed, "reason": reason,
                "roots": [str(r) for r in roots]}

    def create_folder(self, actor: Actor, parent: str, name: str) -> str:
        """Create a sub-folder (0700) inside an allowed location; return its path."""
        try:
            name = paths.check_name(clean_text(name, paths.MAX_PATH_BYTES, "a folder name"))
            path = paths.check_custom(f"{parent.rstrip('/')}/{name}", self.forbidden_dirs(),
                                      self.settings.custom_roots)
        except BackupError as exc:
            self.audit.record(actor, "folder.create", _safe_target(f"{parent}/{name}"), "refused", exc.message)
            raise
        self.audit.record(actor, "folder.create", str(path), "started")
        try:
            with safedir.opened(path, create=True, private=True):
                pass
        except BackupError as exc:
            self.audit.record(actor, "folder.create", str(path), "failed", exc.message)
            raise
        self.audit.record(actor, "folder.create", str(path), "ok")
        return str(path)

    def _scan_dirs(self) -> list[tuple[str, Path]]:
        dirs = [(x.key, Path(os.path.realpath(x.path)))
                for x in storage.standard_locations(self.settings.default_dir)]
        for directory in self.catalogue.directories("custom"):  # the folders only, not every record
            d = ("custom", Path(directory))
            if d not in dirs:
                dirs.append(d)
        return dirs

    def verify_audit(self) -> ChainReport:
        """Check the audit chain, its saved head, and the heads recorded in the newest backup files."""
        files = [path for _, directory in self._scan_dirs() for path in storage.scan(directory)]
        return self.audit.verify(find_anchors(files, self.keyring()))

    # ----- start-up ----------------------------------------------------------------------------------
    def reconcile(self) -> dict[str, Any]:
        """After a crash: running rows become FAILED and temporary files are removed."""
        def alive(backup_id: str) -> bool:
            return self._job_lock(backup_id).held_elsewhere()

        failed = self.catalogue.fail_interrupted(reason="interrupted: the program stopped while it ran",
                                                 alive=alive)
        removed = sum(storage.remove_leftovers(d, alive) for _, d in self._scan_dirs())
        for entry in self.audit.unfinished(("create", "verify", "restore", "prune", "catalogue.rebuild")):
            if not alive(f"audit:{entry.seq}"):
                self.audit.record(Actor("system"), entry.action, entry.target, "interrupted",
                                  f"started by {entry.actor} (entry {entry.seq}); the program stopped before "
                                  "it finished")
        kept = self.restores.reconcile(alive)
        drills = self.drills.reconcile(alive)
        return {"failed": failed, "removedTemporaryFiles": removed, **kept, **drills}

    # ----- create ------------------------------------------------------------------------------------
    def prepare_create(self, actor: Actor, *, description: str, location: str = "default",
                       custom_path: str | None = None, compression: str | None = None,
                       kind: str = "manual", lock: DatabaseLock | None = None,
                       slug: str | None = None, conn: ConnInfo | None = None, schedule: str | None = None,
                       protects: str | None = None, database: str | None = None,
                       destinations: Sequence[str] = (), local: bool = True) -> Task:
        """Validate, reserve the database and record a RUNNING backup; the returned task does the work.

        database: the profile to back up (default DATABASE_URL's); destinations: where copies go
        (ehr_backup/destinations/): a local location key, and S3 destinations; local=False: no local file,
        the S3 copies are the backup (destinations/s3_only.py)."""
        try:
            profile = self.profiles.checked(database)
            location, remote = destination_plan.split(destinations, location)
            targets = destination_plan.targets(self, remote)
            description = clean_text(description, MAX_DESCRIPTION, "description")
            algorithm = compression or self.settings.compression
            level = check(algorithm, self.settings.gzip_level if algorithm == "gzip"
                          else self.settings.zstd_level)
            loc_key, directory = (self.resolve_location(location, custom_path) if local
                                  else s3_only.primary(targets, location, custom_path))
            key = self.keyring().encryption_key()
            conn = conn or self.connection(profile)
        except BackupError as exc:
            self.audit.record(actor, "create", location, "refused", exc.message)
            raise
        own_lock = lock is None
        if lock is None:
            try:
                lock = self._lock(conn).acquire(f"a backup by {actor.name}")
            except Busy as exc:
                self.audit.record(actor, "create", conn.dbname, "refused", exc.message)
                raise
        locks = [lock] if own_lock else []
        try:
            backup_id = self._new_id(slug or description, algorithm, directory if local else None)
            locks.append(self._job_lock(backup_id).acquire(f"backup {backup_id}"))
            locks.append(self._started(actor, "create", backup_id, f"location={loc_key}"
                                       + (f"; database={profile}" if profile else "")))
            record = self.catalogue.add(BackupRecord(
                id=backup_id, location=loc_key, directory=str(directory), description=description,
                kind=kind, schedule=schedule, protects=protects, status=Status.RUNNING, step="starting",
                compression=algorithm, key_id=key.key_id, database=conn.dbname, created_at=utcnow(),
                created_by=actor.name, profile=profile))
        except BaseException:
            for held in locks:
                held.release()
            raise

        def work(progress: Progress, cancel: threading.Event) -> BackupRecord:
            return self._run_create(actor, record, conn, key, level, directory if local else None, progress,
                                    cancel, targets)

        return Task("create", backup_id, work, locks, backup_id=backup_id)

    def create(self, actor: Actor, **kwargs: Any) -> BackupRecord:
        """Make a backup now and return its record."""
        result: BackupRecord = self.prepare_create(actor, **kwargs).run()
        return result

    def _new_id(self, description: str, algorithm: str, directory: Path | None) -> str:
        now = utcnow()
        known = self.catalogue.ids()
        while True:
            backup_id = storage.make_id(now, description, EXTENSIONS[algorithm])
            if backup_id not in known and not (directory is not None and (directory / backup_id).exists()):
                return backup_id
            now += timedelta(milliseconds=1)

    def _run_create(self, actor: Actor, record: BackupRecord, conn: ConnInfo, key: Any, level: int,
                    directory: Path | None, progress: Progress, cancel: threading.Event,
                    targets: Sequence[Any] = ()) -> BackupRecord:
        step = "connecting"
        progress.phase = step
        try:
            facts = pg.server_facts(conn)
            progress.total = facts.database_size
            step = "checking free space"
            free = storage.free_bytes(directory) if directory is not None else None  # S3 only: nothing local
            needed = self._space_needed(conn.dbname, facts.database_size)
            if free is not None and free < needed:
                raise StorageError(f"not enough free space in {directory}: {_mb(free)} free, about "
                                   f"{_mb(needed)} needed for a database of {_mb(facts.database_size)}")
            step = "finding pg_dump"
            pg_dump = pg.find_tool("pg_dump", facts.major, self.settings.pg_bin)
            _, dump_version = pg.tool_version(pg_dump)
            step = "reading the database's properties and the server's roles"
            recorded = clusterinfo.record(conn, self.settings.pg_bin, facts.major)
            step = "dumping"
            self.catalogue.update(record.id, step=step, server_version=facts.version,
                                  pg_dump_version=dump_version)
            fields = {"id": record.id, "description": record.description, "database": conn.dbname,
                      "createdAt": _iso(record.created_at), "createdBy": actor.name,
                      "serverVersion": facts.version, "pgDumpVersion": dump_version,
                      "compression": record.compression, "kind": record.kind, "app": f"ehr-backup {__version__}",
                      "databaseSize": facts.database_size, "profile": record.profile or "default",
                      # what a catalogue rebuilt from the files alone shows for it (catalogue_rebuild.py)
                      **{k: v for k, v in (("schedule", record.schedule), ("protects", record.protects)) if v},
                      AUDIT_ANCHOR_FIELD: self.audit.anchor()}  # the log must reach this entry from now on
            sinks = destination_plan.start_sinks(self, targets, record.id, self.settings.s3_part_mb * 1024 * 1024)
            try:
                result = run_backup(conn=conn, pg_dump=pg_dump, directory=directory, backup_id=record.id, key=key,
                                    fields=fields, algorithm=record.compression, level=level,
                                    threads=self.settings.threads, progress=progress, cancel=cancel,
                                    recorded=recorded, sinks=sinks)
                step = "finishing the copies"
                failed_copies = [c for c in destination_plan.finish_sinks(self, record.id, sinks) if c.error]
                if directory is None:  # S3 only: at least one copy must stand, and the first good one is primary
                    s3_only.settle(self, record, targets, failed_copies)
            except BaseException:
                destination_plan.abort_sinks(sinks)  # a failed backup leaves no copy anywhere
                raise
        except Cancelled as exc:
            self._finish_failed(actor, record, Status.CANCELLED, step, exc.message, "create")
            raise
        except KeyboardInterrupt:
            self._finish_failed(actor, record, Status.CANCELLED, step, "interrupted (Ctrl-C)", "create")
            raise
        except BackupError as exc:
            self._finish_failed(actor, record, Status.FAILED, step, exc.message, "create")
            raise
        except OSError as exc:
            message = f"cannot write the backup: {exc.strerror or exc}"
            self._finish_failed(actor, record, Status.FAILED, step, message, "create")
            raise StorageError(message) from None
        except BaseException as exc:
            self._finish_failed(actor, record, Status.FAILED, step, f"internal error: {exc.__class__.__name__}",
                                "create")
            raise
        done = self.catalogue.update(record.id, status=Status.COMPLETED, step=None, size=result.size,
                                     sha256=result.sha256, dump_bytes=result.dump_bytes,
                                     table_counts=json.dumps(result.rows), finished_at=utcnow(),
                                     duration_s=round(result.seconds, 3))
        self.audit.record(actor, "create", record.id, "ok",
                          f"{result.size} bytes, {len(result.rows)} tables, {result.seconds:.1f}s"
                          + "".join(f"; degraded: the copy to {c.destination} failed: {c.error}" for c in failed_copies))
        assert done is not None
        try:
            self.storage_status.sample(force=True)
        except (OSError, BackupError):
            log.warning("could not sample the storage after %s", record.id)
        if self.settings.verify_after_backup:
            done = self.verifications.after_create(actor, done, progress, cancel)
        progress.phase = "done"
        return done

    def _space_needed(self, database: str, database_size: int) -> int:
        """Room a new backup needs: a quarter more than this database's last backup, else half its size."""
        sizes = [r.size for r in self.catalogue.all() if r.status == Status.COMPLETED and r.database == database
                 and r.size]
        last = max(sizes[:3]) if sizes else None  # the newest three (records come newest first)
        return (last + last // 4 if last else database_size // 2) + SPACE_MARGIN

    def status(self, points: int | None = None, database: str | None = None) -> dict[str, Any]:
        """Storage per location (used, free, trend, fill date, warnings) and backup sizes per database
        (points: at most about that many history points per database, for a chart; database: only that
        profile's databases)."""
        result = self.storage_status.status(points=points)
        if database is not None:
            profile = self.profiles.checked(database) or "default"
            result["databases"] = [d for d in result["databases"] if d["profile"] == profile]
        return result

    def _finish_failed(self, actor: Actor, record: BackupRecord, status: str, step: str, message: str,
                       action: str) -> None:
        self.catalogue.update(record.id, status=status, step=step, error=message[:1000], finished_at=utcnow())
        try:
            self.audit.record(actor, action, record.id, "cancelled" if status == Status.CANCELLED else "failed",
                              f"{step}: {message}")
        except BackupError:
            log.warning("could not audit the failure of %s", record.id)

    # ----- list --------------------------------------------------------------------------------------
    def list(self, *, location: str | None = None, database: str | None = None) -> list[dict[str, Any]]:
        """Every backup across locations: catalogued ones, files found on disk, and missing files
        (database: only that profile's; a name that is no profile: the databases of that name)."""
        if location is not None and location not in storage.LOCATIONS:
            raise InvalidInput(f"unknown location {location!r}")
        by_profile = database is not None and self.profiles.is_profile(database)  # else the database's own name
        profile = self.profiles.checked(database) if by_profile else None
        self._import_discovered()
        records = self.catalogue.all()
        kept = self.rotation.kept_by(records)  # one planning pass for the whole list

        def wanted(r: BackupRecord) -> bool:
            if database is None:
                return True
            return (r.profile or None) == profile if by_profile else r.database == database

        records = [r for r in records if (location is None or r.location == location) and wanted(r)]
        drills = last_drills(self.db, [r.id for r in records])  # one query, not one per backup
        return [self.view(r, kept.get(r.id, []), last_drill=drills.get(r.id)) for r in records]

    def list_page(self, *, location: str | None = None, database: str | None = None, kind: str | None = None,
                  status: str | None = None, search: str | None = None, sort: str = "createdAt",
                  descending: bool = True, limit: int = 100, cursor: str | None = None,
                  offset: int = 0) -> dict[str, Any]:
        """One page of backups, filtered, searched (description, id) and sorted in the database:
        {backups, total, nextCursor}; pass nextCursor back for the next page (None: this was the last);
        offset (without a cursor) skips rows, for a table's page numbers; database: a profile's name (its
        backups), else a database's own name as before)."""
        profile = None
        if database is not None and self.profiles.is_profile(database):
            profile, database = database, None
        return self.listing.page(ListQuery(location, database, kind, status, search, sort, descending, limit, cursor,
                                           offset, profile))

    def iter_list(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every backup the filters select (those of list_page), read a page at a time."""
        if filters.get("database") is not None and self.profiles.is_profile(filters["database"]):
            filters = {**filters, "profile": filters["database"], "database": None}
        return self.listing.walk(ListQuery(**{**filters, "limit": 500}).checked())  # checked now, not when read

    def _import_discovered(self, *, if_changed: bool = False) -> None:
        """Catalogue backup files found in the locations; if_changed: skip when no folder changed since the
        last look (within 30 s), so paging through a long list does not rescan every time."""
        dirs = self._scan_dirs()
        stamps = [(d, _dir_stamp(d)) for _, d in dirs]  # taken first: a file added meanwhile is seen next time
        last = getattr(self, "_scanned", None)
        if if_changed and last is not None and last[1] == stamps and time.monotonic() - last[0] < 30:
            return
        known = self.catalogue.ids()
        for key, directory in dirs:
            for path in storage.scan(directory):
                if path.name in known:
                    continue
                try:
                    h = peek_header(path)
                except (BackupError, OSError):
                    h = {}
                # the header is not authenticated until the file is verified: it is shown as a claim, and
                # the list sorts by the file's own time (a header cannot make a file sort first)
                created = _mtime(path)
                key_id = h.get("keyId")
                try:
                    self.catalogue.add(BackupRecord(
                        id=path.name, location=key, directory=str(directory), status=Status.DISCOVERED,
                        description=_header_text(h, "description", MAX_DESCRIPTION),
                        compression=_header_text(h, "compression", 10), size=path.stat().st_size,
                        key_id=key_id if isinstance(key_id, str) and KEY_ID_RE.fullmatch(key_id) else None,
                        database=_header_text(h, "database", 63), created_at=created,
                        created_by=_header_text(h, "createdBy", 200),
                        server_version=_header_text(h, "serverVersion", 200) or None,
                        pg_dump_version=_header_text(h, "pgDumpVersion", 200) or None, origin="discovered",
                        error=None if h else "not a readable EHR Backup file"))
                except IntegrityError:
                    pass  # a concurrent list imported it first
                known.add(path.name)
        self._scanned = (time.monotonic(), stamps)

    def view(self, r: BackupRecord, kept_by: Sequence[str] | None = None,
             last_drill: dict[str, Any] | None | bool = False, copies: Sequence[Any] | None = None) -> dict[str, Any]:
        """The public JSON form of a backup; kept_by: the rotation rules that keep it (default: planned now);
        last_drill: its newest drill when already read (default: read now); copies: its S3 copies when
        already read (default: read now)."""
        if copies is None:
            copies = self.copies.rows(r.id)
        if last_drill is False:
            last_drill = self.drills.last_for(r.id)
        if kept_by is None:
            kept_by = self.rotation.kept_by(self.catalogue.all(database=r.database)).get(r.id, [])
        path = os.path.join(r.directory, r.id)  # directories are stored as str(Path): already normal
        exists = file_exists(r)  # a regular file, not a link: one lstat (a list page views 100 backups)
        if remote_primary(r):  # kept at an S3 destination only: there while a copy there is good
            path, exists = r.directory + r.id, any(c.status == "ok" for c in copies)
        status = r.status
        if r.status in (Status.COMPLETED, Status.DISCOVERED) and not exists:
            status = Status.MISSING
        error = None if exists and marked_missing(r) else r.error  # a file that came back is not missing
        return {"id": r.id, "filename": r.id, "description": r.description, "location": r.location,
                "path": path, "size": r.size, "sha256": r.sha256, "createdAt": _iso(r.created_at),
                "createdBy": r.created_by, "database": r.database, "status": status, "kind": r.kind,
                "compression": r.compression, "keyId": r.key_id, "origin": r.origin, "exists": exists,
                "tableRowCounts": json.loads(r.table_counts) if r.table_counts else None,
                "dumpBytes": r.dump_bytes, "durationSeconds": r.duration_s, "error": error,
                "step": r.step, "serverVersion": r.server_version, "pgDumpVersion": r.pg_dump_version,
                "finishedAt": _iso(r.finished_at), "verifiedAt": _iso(r.verified_at), "verifyOk": r.verify_ok,
                "verifyMessage": r.verify_message,
                "verification": None if r.verify_ok is None else ("ok" if r.verify_ok else "failed"),
                "pinned": bool(r.pinned), "pinReason": r.pin_reason, "keptBy": [*kept_by], "schedule": r.schedule,
                "protects": r.protects, "profile": r.profile or "default",
                # a file found on disk and not verified yet: its description, creator and database are
                # what its unauthenticated header claims
                "unverified": r.status == Status.DISCOVERED, "lastDrill": last_drill,
                **self.copies.view(r, exists, copies)}  # copies: [{destination, uri, size, sha256, status}], degraded

    def get(self, backup_id: str) -> BackupRecord:
        """The catalogued backup with this id (ids are validated, never used as paths directly)."""
        storage.validate_id(backup_id)
        record = self.catalogue.get(backup_id)
        if record is None:
            self._import_discovered()
            record = self.catalogue.get(backup_id)
        if record is None:
            raise NotFound(f"no backup with id {backup_id}")
        return record

    def _resolve(self, actor: Actor, action: str, backup_id: str) -> BackupRecord:
        try:
            return self.get(backup_id)
        except BackupError as exc:
            self.audit.record(actor, action, _safe_target(backup_id), "refused", exc.message)
            raise

    def _open(self, record: BackupRecord) -> OpenedFile:
        """The backup from a healthy copy: its local file, else a good S3 copy (streamed, no temporary file)."""
        return self.copies.open_any(record)

    # ----- verify (ehr_backup/verification.py) ---------------------------------------------------------
    def prepare_verify(self, actor: Actor, backup_id: str) -> Task:
        """Check that a backup can be used: every byte authenticated, decompressed, dump complete."""
        return self.verifications.prepare(actor, backup_id)

    def verify(self, actor: Actor, backup_id: str) -> dict[str, Any]:
        """Verify now and return the result."""
        result: dict[str, Any] = self.prepare_verify(actor, backup_id).run()
        return result

    def verify_all(self, actor: Actor, since: datetime | None = None) -> dict[str, Any]:
        """Verify every stored backup (made since a time, when given); failures are counted."""
        return self.verifications.verify_all(actor, since)

    def reverify_tonight(self, actor: Actor) -> dict[str, Any]:
        """Re-read tonight's share of the stored backups, so each is re-read within EHR_BACKUP_REVERIFY_DAYS."""
        return self.verifications.reverify_tonight(actor, self.settings.reverify_days)

    # ----- restore (ehr_backup/restore/) ------------------------------------------------------------
    def prepare_restore(self, actor: Actor, backup_id: str, **options: Any) -> Task:
        """Validate and reserve the target; the task builds a fresh copy, checks it and swaps it in."""
        return self.restores.prepare(actor, backup_id, **options)

    def restore(self, actor: Actor, backup_id: str, **options: Any) -> Any:
        """Restore now and return the report."""
        return self.prepare_restore(actor, backup_id, **options).run()

    def rollback(self, actor: Actor, database: str | None = None, profile: str | None = None) -> dict[str, Any]:
        """Put back the database the newest restore replaced (on a database profile's server, when given)."""
        return self.restores.rollback(actor, database, profile)

    def kept_databases(self) -> list[dict[str, Any]]:
        """Databases restores keep for rollback, each with the database profile whose server holds it."""
        return kept_with_profiles(self, self.restores.kept_databases())

    def drop_kept(self, actor: Actor, name: str, profile: str | None = None) -> None:
        """Drop a database a restore kept, on a profile's server: the one given, else the one holding it."""
        if profile is None:
            profile = kept_profile_holding(self, name)
        self.restores.drop_kept(actor, name, profile=profile)

    def contents(self, actor: Actor, backup_id: str) -> dict[str, Any]:
        """What a backup holds, like pg_restore -l."""
        return self.restores.contents(actor, backup_id)

    # ----- delete, download, decrypt ----------------------------------------------------------------
    def delete(self, actor: Actor, backup_id: str) -> None:
        """Delete a backup's file and its catalogue row together."""
        record = self._resolve(actor, "delete", backup_id)
        if record.status == Status.RUNNING:
            self.audit.record(actor, "delete", record.id, "refused", "the backup is still running")
            raise Busy("the backup is still running; cancel it first")
        try:  # not while it is being restored, verified or downloaded
            alone = self._backup_lock(record.id, exclusive=True).acquire(f"deleting {record.id}")
        except Busy as exc:
            self.audit.record(actor, "delete", record.id, "refused", exc.message)
            raise
        try:
            current = self.catalogue.get(record.id)  # read again while held: it may have been pinned meanwhile
            if current is not None and current.pinned:
                self.audit.record(actor, "delete", record.id, "refused", "the backup is pinned")
                raise Pinned(f"backup {record.id} is pinned ({current.pin_reason or 'no reason given'}); "
                             "unpin it first")
            self.audit.record(actor, "delete", record.id, "started")
            try:
                self.copies.delete_remote(record)  # every S3 copy first: the record goes only when all are gone
                if not remote_primary(record):  # a backup kept at S3 only has no local file
                    storage.unlink_in(Path(record.directory), record.id)
            except BackupError as exc:
                self.audit.record(actor, "delete", record.id, "failed", exc.message)
                raise
            self.catalogue.delete(record.id)
            self.audit.record(actor, "delete", record.id, "ok")
        finally:
            alone.release()

    # ----- rotation (ehr_backup/retention.py, prune.py) and pins (pins.py) -----------------------------
    def prune(self, actor: Actor, *, database: str | None = None, location: str | None = None,
              schedule: str | None = None, policy: RetentionPolicy | None = None, dry_run: bool = True,
              include_discovered: bool = False, expect: Collection[str] | None = None,
              schedule_policies: Mapping[str, RetentionPolicy] | None = None) -> dict[str, Any]:
        """Preview (dry_run) or apply grandfather-father-son rotation: {keep, forget, deleted, ...}."""
        return self.rotation.prune(actor, database=database, location=location, schedule=schedule, policy=policy,
                                   dry_run=dry_run, include_discovered=include_discovered, expect=expect,
                                   schedule_policies=schedule_policies)

    def dashboard(self) -> Sequence[dict[str, Any]]:
        """Per database: freshness (green/amber/red), last good backup, verification, drill, alerts, next run."""
        from .dashboard import overview

        return overview(self)

    # ----- schedules (ehr_backup/schedules.py; they run in ehr_backup/scheduler.py) ----------------------
    def schedule_list(self) -> Sequence[dict[str, Any]]:
        """Every schedule with its reading, next runs and last outcome."""
        return [self.schedules.view(s) for s in self.schedules.all()]

    def schedule_get(self, name: str, runs: int = 20) -> dict[str, Any]:
        """One schedule and its newest runs."""
        return {**self.schedules.view(self.schedules.get(name)),
                "runs": [run_view(r) for r in self.schedules.runs(name, runs)]}

    def schedule_create(self, actor: Actor, name: str, **fields: Any) -> dict[str, Any]:
        """Add a schedule (see Schedules for the fields)."""
        return self.schedules.view(self.schedules.create(actor, name, **fields))

    def schedule_update(self, actor: Actor, name: str, **fields: Any) -> dict[str, Any]:
        """Change some fields of a schedule (enabled=False disables it)."""
        return self.schedules.view(self.schedules.update(actor, name, **fields))

    def schedule_remove(self, actor: Actor, name: str) -> None:
        """Delete a schedule; the backups it made stay."""
        self.schedules.remove(actor, name)

    def schedule_preview(self, expression: str, timezone: str | None = None,
                         description: str | None = None) -> dict[str, Any]:
        """The reading in words and the next five runs of an expression being typed."""
        return self.schedules.preview(expression, timezone, description)

    # ----- restore drills (ehr_backup/drills.py, drill_report.py, drill_checks.py) -----------------------
    def prepare_drill(self, actor: Actor, backup_id: str) -> Task:
        """Reserve the drill server; the task restores the backup into a scratch database, checks, drops it."""
        return self.drills.prepare(actor, backup_id)

    def drill(self, actor: Actor, backup_id: str) -> dict[str, Any]:
        """Drill now; the result (DrillFailed when the drill failed)."""
        result: dict[str, Any] = self.prepare_drill(actor, backup_id).run()
        return result

    def drill_list(self, limit: int = 200) -> Sequence[dict[str, Any]]:
        """The newest drills, newest first."""
        return [drill_view(d) for d in self.drills.all(limit)]

    def drill_get(self, drill_id: int) -> dict[str, Any]:
        """One drill with its full report (the JSON written for it)."""
        row = self.drills.get(drill_id)
        report = json.loads(drill_blobs.load(self.db, row, "json")) if row.report_json else None
        return {**drill_view(row), "evidence": report}

    def drill_report_file(self, actor: Actor, drill_id: int, kind: str) -> tuple[bytes, str]:
        """A drill report's bytes (kind json or pdf) and its file name, for a download (audited)."""
        row = self.drills.get(drill_id)
        path = row.report_pdf if kind == "pdf" else row.report_json
        if kind not in ("pdf", "json") or not path:
            raise NotFound(f"drill {drill_id} has no {kind} report")
        data = drill_blobs.load(self.db, row, kind)  # the metadata database first: any instance serves it
        self.audit.record(actor, "drill.report", str(drill_id), "ok", f"{kind} downloaded")
        return data, Path(path).name

    def verify_drill_report(self, actor: Actor, path: Path) -> dict[str, Any]:
        """Check a report file against the hashes the audit chain recorded for drills (ReportAltered if not)."""
        data = drill_report.read(path)
        chain = self.verify_audit()
        if not chain.ok:
            raise BackupError(f"the audit chain does not verify ({chain.reason}); it cannot vouch for any report")
        recorded = [(e.seq or 0, e.target, e.detail) for e in self.audit.entries(action="drill")
                    if e.outcome in ("ok", "failed")]
        try:
            result = drill_report.verify_file(data, recorded)
        except BackupError as exc:
            self.audit.record(actor, "drill.verify-report", _safe_target(str(path)), "failed", exc.message)
            raise
        self.audit.record(actor, "drill.verify-report", _safe_target(str(path)), "ok", f"audit entry {result['auditEntry']}")
        return {**result, "file": str(path)}

    def drill_checks(self) -> Sequence[dict[str, Any]]:
        """The check queries every drill runs."""
        return [drill_check_view(c) for c in self.drills.checks.all()]

    def drill_check_add(self, actor: Actor, name: str, sql: str, *, expect: str | None = None,
                        compare_live: bool = False) -> dict[str, Any]:
        """Add a check query (one SELECT returning one value) with an expected value or compare_live."""
        return drill_check_view(self.drills.checks.add(actor, name, sql, expect=expect, compare_live=compare_live))

    def drill_check_remove(self, actor: Actor, name: str) -> None:
        """Remove a check query."""
        self.drills.checks.remove(actor, name)

    def pin(self, actor: Actor, backup_id: str, reason: str) -> dict[str, Any]:
        """Pin a backup (with a reason, e.g. a legal hold): rotation and Delete leave it alone."""
        return self.view(pins.pin(self, actor, backup_id, reason))

    def unpin(self, actor: Actor, backup_id: str) -> dict[str, Any]:
        """Unpin a backup."""
        return self.view(pins.unpin(self, actor, backup_id))

    def open_download(self, actor: Actor, backup_id: str) -> tuple[IO[bytes], int, str]:
        """Open a backup for streaming to a client from a healthy copy (local first): (handle, size, file name)."""
        record = self._resolve(actor, "download", backup_id)
        try:
            if record.status not in (Status.COMPLETED, Status.DISCOVERED):
                raise InvalidInput(f"backup {record.id} is {record.status}; nothing to download")
            fh, size = self.copies.open_stream(record)
        except BackupError as exc:
            self.audit.record(actor, "download", record.id, "refused", exc.message)
            raise
        try:
            self.audit.record(actor, "download", record.id, "ok")
        except BaseException:
            fh.close()
            raise
        return fh, size, record.id

    # ----- destinations and copies (ehr_backup/destinations/) -------------------------------------------
    def destination_list(self) -> list[dict[str, Any]]:
        """Every S3 destination (credentials only as stored / AWS chain)."""
        return self.destinations.list()

    def destination_add(self, actor: Actor, name: str, credentials: tuple[str, str] | None = None,
                        **settings: Any) -> dict[str, Any]:
        """Add an S3 destination (see destinations/store.check_settings for the fields)."""
        from .destinations.store import check_settings

        try:
            checked = check_settings(**settings)
        except BackupError as exc:
            self.audit.record(actor, "destination.add", _safe_target(str(name))[:63], "refused", exc.message)
            raise
        return self.destinations.add(actor, name, checked, credentials)

    def destination_test(self, actor: Actor, name: str) -> dict[str, Any]:
        """Test connection: list, write, read and delete a probe object; say which permission is missing."""
        from .destinations.probe import probe

        try:
            target = self.destinations.target(name)
        except BackupError as exc:
            self.audit.record(actor, "destination.test", _safe_target(str(name))[:63], "refused", exc.message)
            raise
        result = probe(target)
        self.audit.record(actor, "destination.test", name, "ok" if result["ok"] else "failed", result["message"])
        return result

    def destination_remove(self, actor: Actor, name: str) -> None:
        """Forget a destination (its objects stay in the bucket)."""
        self.destinations.remove(actor, name)

    def copy(self, actor: Actor, backup_id: str, destination: str) -> dict[str, Any]:
        """Copy a backup from a healthy copy to a destination and record it."""
        return self.copies.copy_to(actor, backup_id, destination)

    def rebuild_catalogue(self, actor: Actor, *, location: str | None = None, paths: Sequence[str] = (),
                          dry_run: bool = False) -> dict[str, Any]:
        """Recreate the catalogue from the backup files' authenticated headers and trailers (dry_run: a preview);
        paths: custom folders to read besides the ones the app knows."""
        return self.catalogue_rebuild.run(actor, location=location, paths=paths, dry_run=dry_run)

    def prepare_rebuild(self, actor: Actor, *, location: str | None = None, paths: Sequence[str] = (),
                        dry_run: bool = False) -> Task:
        """The catalogue rebuild as a job (Busy while one runs): progress in files and bytes, Cancel between reads."""
        return self.catalogue_rebuild.prepare(actor, location=location, paths=paths, dry_run=dry_run)
    # ----- database profiles (ehr_backup/profiles.py) ------------------------------------------------------
    def database_list(self) -> list[dict[str, Any]]:
        """Every database profile, the implicit default (DATABASE_URL) first; never a password."""
        return self.profiles.views()

    def database_add(self, actor: Actor, name: str, url: str, *, password_env: str | None = None,
                     password: str | None = None) -> dict[str, Any]:
        """Add a profile: a URL without a password, the password from an env var, stored encrypted, or libpq's."""
        return self.profiles.add(actor, name, url, password_env=password_env, password=password)

    def database_remove(self, actor: Actor, name: str) -> None:
        """Forget a profile (refused while a schedule uses it); its backups stay."""
        self.profiles.remove(actor, name)

    def database_test(self, actor: Actor, name: str | None) -> dict[str, Any]:
        """Connect with a profile and report the server's version and the database's size."""
        return self.profiles.test(actor, name)

    def decrypt_file(self, actor: Actor, source: Path, output: Path) -> dict[str, Any]:
        """Authenticate and decrypt a backup file to plain SQL, with only the file and the key."""
        target = _safe_target(str(source))
        self.audit.record(actor, "decrypt", target, "started", f"to {output}")
        try:
            try:
                fh = open(source, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise safedir.os_error(exc, f"cannot open {source}") from None
            try:
                opened = OpenedFile(fh, self.keyring())
                trailer = opened.authenticate()
                output = output.resolve()
                if output.name in ("", ".", "..") or os.path.isdir(output):
                    raise InvalidInput("the output must be a file name, not a directory")
                # private=False: the admin may write the plain dump where they like, e.g. /tmp; it is
                # still created 0600 without following links and never replaces an existing file
                with storage.atomic_file(output.parent, output.name, private=False) as out:
                    scan = scan_dump(opened, trailer, Progress(), threading.Event(), out=out)
            finally:
                fh.close()
        except BackupError as exc:
            self.audit.record(actor, "decrypt", target, "failed", exc.message)
            raise
        except OSError as exc:
            self.audit.record(actor, "decrypt", target, "failed", str(exc.strerror))
            raise StorageError(f"cannot write {output}: {exc.strerror}") from None
        self.audit.record(actor, "decrypt", target, "ok")
        return {"output": str(output), "dumpBytes": scan.dump_bytes, "tableRowCounts": scan.rows}


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MB"


def _iso(value: Any) -> str | None:
    value = as_utc(value)
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: Any) -> datetime | None:
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _header_text(header: dict[str, Any], key: str, limit: int) -> str:
    """A field of an unauthenticated header as printable, bounded text."""
    value = header.get(key)
    text = value if isinstance(value, str) else ""
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def _dir_stamp(path: Path) -> tuple[int, int] | None:
    """What changes when a folder gains or loses a file: its inode and modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _safe_target(text: str) -> str:
    """A printable, bounded form of an untrusted id for the audit log."""
    return text.encode("unicode_escape").decode("ascii")[:200]


def iter_file(fh: IO[bytes], chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """Read an open file in chunks and close it at the end."""
    try:
        while data := fh.read(chunk):
            yield data
    finally:
        fh.close()
