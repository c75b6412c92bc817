"""A whole-database restore: build the backup into a fresh database, check it, then swap it in.

Nothing of the database being replaced is reused, so nothing made after the backup (objects, default
privileges, settings) can survive; the replaced database is kept, renamed, for a rollback. A failure
before the swap leaves the live database untouched and drops the half-built copy.

`recreate` mode is for servers without room for a second copy: a safety backup first, then the
database is dropped, created anew and loaded; if that fails, the safety backup is loaded back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..dumptoc import DumpIndex, index_from_json
from ..errors import BackupError, Cancelled, InvalidInput, NotAuthentic, StorageError
from ..fileformat import OpenedFile
from ..pg import ConnInfo, connect
from ..pipeline import Progress, plaintext
from . import database
from .counts import TableCount, count_tables
from .kept import BUILDING, PREVIOUS, SWAPPING, KeptDatabases, lock_key
from .loader import Loader, LoadResult
from .roles import ensure_roles

SPACE_MARGIN = 1.1  # a restored database is about its recorded size; leave a little room


@dataclass
class Outcome:
    """What a restore did, for the report."""

    database: str
    tables: list[TableCount] = field(default_factory=list)
    previous: str | None = None
    roles: dict[str, list[str]] | None = None
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    mode: str = "swap"
    jobs: int = 1
    safety_backup: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every table holds exactly the rows of the backup."""
        return all(t.ok for t in self.tables)


@dataclass
class Context:
    """Everything a restore needs from the service."""

    target: ConnInfo
    server: str  # the target server's identity
    kept: KeptDatabases
    backup_id: str
    jobs: int
    roles: bool | None  # None: only on a server other than the backup's own
    progress: Progress
    cancel: threading.Event
    step: Callable[[str, str], None]  # (step, detail) for the audit log
    hold: Callable[[str], Any]  # a lock held while a copy is built or swapped (a start-up elsewhere spares it)
    safety: Callable[[], str | None] | None = None  # recreate mode: take the safety backup, return its id


def source_of(opened: OpenedFile, trailer: dict[str, Any]) -> tuple[Callable[[int], Iterator[bytes]],
                                                                    DumpIndex | None, int]:
    """How to read a file's dump: from any offset (version 2), or only from the start (version 1)."""
    if opened.header.version >= 2 and "frames" in trailer:
        from ..randomread import RandomReader

        reader = RandomReader(opened, trailer)
        return reader.read_from, index_from_json(trailer.get("index")), reader.frame

    def from_start(offset: int) -> Iterator[bytes]:
        if offset != 0:
            raise NotAuthentic()
        return plaintext(opened)

    return from_start, None, 0


def load(ctx: Context, info: ConnInfo, opened: OpenedFile, trailer: dict[str, Any]) -> LoadResult:
    """Load the backup's dump into the database `info` names (already created, empty)."""
    source, index, frame = source_of(opened, trailer)
    total = int(trailer.get("dumpBytes") or 0) or None
    ctx.progress.total = total

    def progress(done: int) -> None:
        ctx.progress.bytes_read = done

    loader = Loader(info, jobs=ctx.jobs, cancel=ctx.cancel, source=source, index=index, legacy=index is None,
                    frame=frame, progress=progress)
    result = loader.load()
    if not result.complete:
        raise NotAuthentic()
    if index is None and (result.legacy_rows != trailer.get("tableRowCounts")
                          or result.dump_bytes != trailer.get("dumpBytes")):
        raise NotAuthentic()
    if index is not None and result.dump_bytes != trailer.get("dumpBytes"):
        raise NotAuthentic()
    bad = [x for x in result.loaded if x.loaded != x.dumped]
    if bad:
        raise StorageError(f"the server loaded {bad[0].loaded} rows into {bad[0].target.text()} where the "
                           f"dump holds {bad[0].dumped}")
    return result


def preflight(ctx: Context, props: dict[str, Any] | None) -> None:
    """Refuse early, saying what is missing, when a swap restore cannot work here."""
    with connect(database.maintenance(ctx.target)) as conn:
        replacing = database.exists(conn, ctx.target.dbname)
        missing = database.check_privileges(conn, ctx.target.dbname, replacing)
        if missing:
            raise InvalidInput(f"this database role lacks {', and '.join(missing)}; grant it, or restore as a "
                               "role that has it")
        size = int(props["sizeBytes"]) if props and props.get("sizeBytes") else None
        if size is None and replacing:
            row = conn.execute("SELECT pg_database_size(%s)", (ctx.target.dbname,)).fetchone()
            size = int(row[0]) if row else None
        if size and replacing:
            short = database.free_space_shortfall(conn, int(size * SPACE_MARGIN))
            if short:
                raise StorageError(f"not enough room on the server for a second copy of {ctx.target.dbname}: "
                                   f"about {short[0] // 2**20} MB needed, {short[1] // 2**20} MB free; "
                                   "free some space, or restore with --mode recreate (a safety backup, then "
                                   "the database is replaced in place)")


def swap_restore(ctx: Context, opened: OpenedFile, trailer: dict[str, Any]) -> Outcome:
    """Build into a fresh database, check it, give it the database's properties, swap it in."""
    props = trailer.get("database")
    preflight(ctx, props)
    out = Outcome(ctx.target.dbname, jobs=ctx.jobs)
    when = database.stamp()
    maint = database.maintenance(ctx.target)
    with connect(maint) as conn:
        scratch = database.free_name(conn, ctx.target.dbname, "restore", when)
        replacing = database.exists(conn, ctx.target.dbname)
        if not props and replacing:
            props = database.live_properties(ctx.target)  # an older backup: keep what the database had
        _roles(ctx, conn, trailer, out)
        held = [ctx.hold(lock_key(ctx.server, scratch))]  # before the row: a start-up elsewhere must see it alive
        row = ctx.kept.add(server=ctx.server, display=ctx.target.display, name=scratch,
                           original=ctx.target.dbname, kind=BUILDING, backup_id=ctx.backup_id)
        try:
            database.create(conn, scratch, props)
        except BaseException:
            held[0].release()
            ctx.kept.dropped(row.id or 0)
            raise
    ctx.step("building", f"into {scratch}")
    swapped = False
    try:
        _build(ctx, out, ctx.target.with_dbname(scratch), opened, trailer, props)
        if not out.ok:
            return out  # the caller reports the differences; the copy is dropped below
        ctx.progress.enter("swapping")
        started = time.monotonic()
        with connect(maint) as conn:
            previous = database.free_name(conn, ctx.target.dbname, "before", when) if replacing else None
            aside = None
            if previous is not None:  # recorded first: a crash right after the swap must not lose it
                held.append(ctx.hold(lock_key(ctx.server, previous)))
                aside = ctx.kept.add(server=ctx.server, display=ctx.target.display, name=previous,
                                     original=ctx.target.dbname, kind=SWAPPING, backup_id=ctx.backup_id,
                                     note=f"replaced by {ctx.backup_id}")
            try:
                database.swap(conn, ctx.target.dbname, scratch, previous)
            except BaseException:
                if aside is not None:
                    ctx.kept.dropped(aside.id or 0)
                raise
        swapped = True
        out.phases["swap"] = time.monotonic() - started
        ctx.kept.dropped(row.id or 0)  # the copy is the database now
        if previous is not None and aside is not None:
            paused = _set_aside(ctx.target.with_dbname(previous), out)
            ctx.kept.update(aside.id or 0, kind=PREVIOUS, subscriptions=json.dumps(paused))
        restored = _quietly(lambda: database.subscriptions(ctx.target), [])
        if restored:
            out.notes.append(f"the restored database's subscriptions ({', '.join(restored)}) are disabled, as "
                             "pg_dump leaves them: enable them with ALTER SUBSCRIPTION … ENABLE once checked")
        out.previous = previous
        ctx.step("swapped", f"{ctx.target.dbname} is the restored copy"
                 + (f"; the previous database is kept as {previous}" if previous else ""))
        return out
    finally:
        if not swapped:
            _drop_quietly(maint, scratch, ctx, row.id or 0)
        for lock in held:
            lock.release()


def recreate_restore(ctx: Context, opened: OpenedFile, trailer: dict[str, Any]) -> Outcome:
    """Safety backup, drop, create anew, load; on failure load the safety backup back."""
    props = trailer.get("database")
    out = Outcome(ctx.target.dbname, mode="recreate", jobs=ctx.jobs)
    maint = database.maintenance(ctx.target)
    with connect(maint) as conn:
        replacing = database.exists(conn, ctx.target.dbname)
        missing = database.check_privileges(conn, ctx.target.dbname, replacing)
        if missing:
            raise InvalidInput(f"this database role lacks {', and '.join(missing)}")
    if not props and replacing:
        props = database.live_properties(ctx.target)
    if replacing and ctx.safety is not None:
        ctx.progress.enter("safety backup")
        out.safety_backup = ctx.safety()
        ctx.step("safety backup", f"{out.safety_backup}")
    with connect(maint) as conn:
        _roles(ctx, conn, trailer, out)
        if replacing:
            database.drop(conn, ctx.target.dbname, maint)
            ctx.step("dropped", f"{ctx.target.dbname}, to be created anew")
        database.create(conn, ctx.target.dbname, props)
    try:
        _build(ctx, out, ctx.target, opened, trailer, props)
    except BaseException as exc:
        if out.safety_backup is None:
            raise
        raise _RecreateFailed(exc, out.safety_backup) from None
    return out


class _RecreateFailed(Exception):
    """A recreate restore failed after the database was dropped: the service loads the safety backup."""

    def __init__(self, cause: BaseException, safety_id: str) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.safety_id = safety_id


RecreateFailed = _RecreateFailed


def _roles(ctx: Context, conn: Any, trailer: dict[str, Any], out: Outcome) -> None:
    """Create the roles the backup recorded and this server lacks, when asked, or by default on another
    server than the backup's own (on the same server, a role that was dropped stays dropped)."""
    recorded = trailer.get("globals")
    if not recorded:
        return
    wanted = ctx.roles if ctx.roles is not None else (recorded.get("server") or "") != ctx.server
    if not wanted:
        if ctx.roles is None:
            out.notes.append("roles were not created: this is the server the backup was made on (use --with-roles "
                             "to create roles that were dropped since)")
        return
    out.roles = ensure_roles(conn, recorded)
    out.notes += out.roles.get("notes", [])


def _build(ctx: Context, out: Outcome, info: ConnInfo, opened: OpenedFile, trailer: dict[str, Any],
           props: dict[str, Any] | None) -> None:
    """Load, count, and apply the database's properties (after the load: a setting such as
    default_transaction_read_only must not stop it)."""
    ctx.progress.enter("loading")
    started = time.monotonic()
    result = load(ctx, info, opened, trailer)
    out.phases["load"] = time.monotonic() - started
    if ctx.cancel.is_set():
        raise Cancelled()
    ctx.progress.enter("counting rows")
    started = time.monotonic()
    out.tables = count_tables(info, result.loaded, ctx.jobs)
    out.phases["check"] = time.monotonic() - started
    if not out.ok:
        return
    if props:
        ctx.progress.enter("applying database properties")
        with connect(database.maintenance(info)) as conn:
            out.notes += database.apply_properties(conn, info.dbname, props)


def _set_aside(info: ConnInfo, out: Outcome) -> list[str]:
    """Disable the kept database's subscriptions, so that it does not compete for their slots."""
    try:
        enabled = database.subscriptions(info, enabled_only=True)
        database.set_subscriptions(info, enabled, enabled=False)
    except (BackupError, psycopg.Error) as exc:  # swapped already: report, never fail now
        out.notes.append(f"the previous database's subscriptions could not be checked: {exc}")
        return []
    if enabled:
        out.notes.append(f"subscriptions of the previous database ({', '.join(enabled)}) were disabled; a "
                         "rollback enables them again")
    return enabled


def _quietly(fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except (BackupError, psycopg.Error):
        return default


def _drop_quietly(maint: ConnInfo, name: str, ctx: Context, row_id: int) -> None:
    """Drop the half-built copy; if even that fails, leave it recorded for the next start-up."""
    try:
        with connect(maint) as conn:
            database.drop(conn, name, maint)
        ctx.kept.dropped(row_id)
        ctx.step("dropped", f"the unfinished copy {name}")
    except BackupError:
        pass
