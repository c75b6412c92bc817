"""Loader connections: each runs dump entries on its own session, as psql would run them in order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.pq import Escaping

from ..errors import Cancelled, DatabaseUnavailable, NotAuthentic, ToolError
from ..pg import ConnInfo
from ..sqlscan import CopyData, CopyEnd, CopyStart, Ident, SqlScanner, Statement
from .plan import Plan, session_key

State = tuple[tuple[str, bytes], ...]  # session settings in force: (name, the statement that set it)
STREAM_DEPTH = 8
# The load's own session settings: its commits need not wait for the disk (the swap's synchronous
# commit, later, makes everything before it durable).
SESSION_SETUP = b"SET synchronous_commit = off"
PIECE_BYTES = 256 * 1024  # statements sent together in one round trip, up to this size
PIECE_STATEMENTS = 200


@dataclass
class Loaded:
    """One COPY as it went: what the dump held and what the server reported loading."""

    toc_id: int | None
    target: Ident
    dumped: int
    loaded: int


@dataclass
class Job:
    """One dump entry (or a run of data entries) for a worker."""

    number: int
    label: str
    plan: Plan
    state: State  # the session settings the entry expects
    toc_id: int | None = None
    statements: list[bytes] = field(default_factory=list)  # a buffered entry
    stream: queue.Queue[Any] | None = None  # a streamed entry: ops, then None
    ranges: list[Any] | None = None  # a run of pure data entries read from the file by the worker
    loaded: list[Loaded] = field(default_factory=list)
    bytes_read: int = 0
    size: int = 0  # bytes of its buffered statements


class Worker(threading.Thread):
    """A connection of its own, running the jobs it is given one after another."""

    def __init__(self, number: int, info: ConnInfo, done: queue.Queue[tuple[Job, BaseException | None]],
                 cancel: threading.Event, reader_factory: Callable[[int], Iterator[bytes]] | None) -> None:
        super().__init__(name=f"restore-{number}", daemon=True)
        self.number = number
        self._info = info
        self._done = done
        self._cancel = cancel
        self._read_from = reader_factory
        self.inbox: queue.Queue[Job | None] = queue.Queue()
        self.conn: psycopg.Connection | None = None
        self._state: dict[str, bytes] = {}
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.conn = psycopg.connect(self._info.conninfo(), autocommit=True, connect_timeout=10,
                                        application_name="ehr-backup restore")
            self.conn.execute(SESSION_SETUP)
        except psycopg.Error as exc:
            self.error = DatabaseUnavailable(f"cannot connect to {self._info.display}: "
                                             f"{self._info.redact(str(exc).strip().splitlines()[0])}")
        finally:
            self.ready.set()
        if self.error is not None:
            return
        try:
            while (job := self.inbox.get()) is not None:
                try:
                    self._run(job)
                    self._done.put((job, None))
                except BaseException as exc:  # noqa: BLE001 - reported to the conductor, which stops all
                    self._done.put((job, exc))
                    return
        finally:
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.close()

    def interrupt(self) -> None:
        """Ask the server to stop this worker's running statement."""
        conn = self.conn
        if conn is not None:
            try:
                conn.cancel()
            except psycopg.Error:
                pass

    # ----- running one job --------------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        self._apply(job.state)
        if job.ranges is not None:
            self._run_ranges(job)
        elif job.stream is not None:
            self._run_stream(job)
        else:
            self._run_buffered(job)

    def _run_buffered(self, job: Job) -> None:
        """Run a read-ahead entry (or a batch of them) in pieces of several statements per round trip.

        Each piece is one simple query: psql sends the same statements one by one; any error stops the
        whole restore either way, and pg_dump's statements all run inside a transaction block.
        """
        piece: list[bytes] = []
        size = 0
        for sql in job.statements:
            piece.append(sql)
            size += len(sql)
            if size >= PIECE_BYTES or len(piece) >= PIECE_STATEMENTS:
                self._execute(job, b"\n".join(piece), piece)
                piece, size = [], 0
        if piece:
            self._execute(job, b"\n".join(piece), piece)

    def _apply(self, state: State) -> None:
        """Bring this session's settings to what the entry expects (pg_dump emits SETs only on change)."""
        wanted = dict(state)
        if any(k not in wanted for k in self._state):
            self._exec(b"RESET ALL;")
            self._exec(SESSION_SETUP)
            self._state = {}
        for key, sql in state:
            if self._state.get(key) != sql:
                self._exec(sql)
                self._state[key] = sql

    def _exec(self, sql: bytes) -> None:
        assert self.conn is not None
        self.conn.execute(sql)

    def _execute(self, job: Job, sql: bytes, parts: list[bytes] | None = None) -> None:
        if self._cancel.is_set():
            raise Cancelled()
        try:
            self._exec(sql)
        except psycopg.Error as exc:
            raise _failed(job, exc) from None
        for part in parts or [sql]:
            key = session_key(part)
            if key is not None:
                self._state[key] = part

    def _run_stream(self, job: Job) -> None:
        assert job.stream is not None and self.conn is not None
        copy: Any = None
        cursor: Any = None
        manager: Any = None
        target: Ident | None = None
        ended = False
        frozen = False
        try:
            while (op := job.stream.get()) is not None:
                kind = op[0]
                if kind == "data":
                    copy.write(op[1])
                    job.bytes_read += len(op[1])
                elif kind == "stmt":
                    self._execute(job, op[1])
                elif kind == "copy":
                    target = op[2]
                    cursor = self.conn.cursor()
                    frozen = self._begin_frozen(target)
                    manager = cursor.copy(_frozen(op[1]) if frozen else op[1])  # kept: dropping it would
                    copy = manager.__enter__()  # end the COPY with an error
                elif kind == "end":
                    copy = None
                    manager.__exit__(None, None, None)
                    if frozen:
                        self._exec(b"COMMIT")
                    assert target is not None
                    job.loaded.append(Loaded(job.toc_id, target, op[1], cursor.rowcount))
                    cursor.close()
                if self._cancel.is_set():
                    raise Cancelled()
            ended = True
        except psycopg.Error as exc:
            raise _failed(job, exc) from None
        finally:
            if copy is not None:  # stopped half-way: end the COPY with an error, nothing is kept
                _abandon(manager)
            if not ended:
                _drain(job.stream, self._cancel)

    def _begin_frozen(self, target: Ident) -> bool:
        """Start a transaction that empties the (empty, ordinary) table, so that its COPY may FREEZE.

        Rows loaded with COPY FREEZE are written already frozen and marked committed, so the scans that
        follow (keys, indexes, foreign-key checks, the row count) do not have to rewrite every page to
        set hint bits: that saves a good part of a large restore. Only for an ordinary table that is
        still empty and that this role may empty (otherwise: a plain COPY).
        """
        assert self.conn is not None
        esc = Escaping(self.conn.pgconn)
        qual = _qualified(esc, target)
        row = self.conn.execute(
            b"SELECT c.relkind = 'r' AND NOT c.relhastriggers AND (pg_has_role(c.relowner, 'USAGE') OR "
            b"(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) AND NOT EXISTS (SELECT FROM "
            b"pg_constraint k WHERE k.confrelid = c.oid) FROM pg_class c WHERE c.oid = to_regclass("
            + esc.escape_literal(qual) + b")").fetchone()
        if not (row and row[0]):
            return False
        self._exec(b"BEGIN")
        try:
            # locked before it is looked at: nothing can reach the table between the look and the TRUNCATE
            self._exec(b"LOCK TABLE ONLY " + qual + b" IN ACCESS EXCLUSIVE MODE")
            empty = self.conn.execute(b"SELECT NOT EXISTS (SELECT FROM ONLY " + qual + b")").fetchone()
            if not (empty and empty[0]):
                raise _NotFreezable()
            self._exec(b"TRUNCATE ONLY " + qual)
            return True
        except (psycopg.Error, _NotFreezable):
            # rows already there, a foreign key or a TRUNCATE trigger (an extension's configuration
            # table, say): undo the attempt and load it as psql would, with a plain COPY
            self._exec(b"ROLLBACK")
            return False

    def _run_ranges(self, job: Job) -> None:
        """Read a run of pure data entries straight from the file and COPY each one."""
        assert job.ranges is not None and self._read_from is not None and self.conn is not None
        first, last = job.ranges[0], job.ranges[-1]
        scanner = SqlScanner(first.start)
        entries = iter(job.ranges)
        current = next(entries)
        copy: Any = None
        cursor: Any = None
        manager: Any = None
        done = False
        frozen = False
        try:
            for piece in self._read_from(first.start):
                if self._cancel.is_set():
                    raise Cancelled()
                for ev in scanner.feed(piece):
                    if isinstance(ev, CopyData):
                        if copy is None:
                            raise NotAuthentic()
                        copy.write(ev.data)
                        job.bytes_read += len(ev.data)
                    elif isinstance(ev, CopyStart):
                        if copy is not None or ev.target != current.target or ev.offset >= current.end:
                            raise NotAuthentic()
                        cursor = self.conn.cursor()
                        frozen = self._begin_frozen(ev.target)
                        manager = cursor.copy(_frozen(ev.sql) if frozen else ev.sql)
                        copy = manager.__enter__()
                    elif isinstance(ev, CopyEnd):
                        copy = None
                        manager.__exit__(None, None, None)
                        if frozen:
                            self._exec(b"COMMIT")
                        job.loaded.append(Loaded(current.toc_id, current.target, ev.rows, cursor.rowcount))
                        cursor.close()
                        if ev.rows != current.rows:
                            raise NotAuthentic()
                    elif isinstance(ev, Statement):
                        raise NotAuthentic()  # an indexed data entry holds nothing but its COPY
                    else:  # comments: headers of this entry, or the next entry's TOC line
                        if ev.offset >= current.end:  # type: ignore[union-attr]
                            if len(job.loaded) != job.ranges.index(current) + 1:
                                raise NotAuthentic()
                            if current is last:
                                done = True
                                break
                            current = next(entries)
                if done:
                    break
            if not done:
                raise NotAuthentic()
        except psycopg.Error as exc:
            raise _failed(job, exc) from None
        finally:
            if copy is not None:
                _abandon(manager)


def _qualified(esc: Any, target: Ident) -> bytes:
    """A table name quoted by libpq from its raw bytes (never text from the dump as SQL)."""
    parts = [p for p in (target.schema, target.name) if p is not None]
    return b".".join(esc.escape_identifier(p) for p in parts)


def _frozen(copy_sql: bytes) -> bytes:
    """pg_dump's `COPY t (cols) FROM stdin;` with FREEZE (the statement was parsed strictly before)."""
    assert copy_sql.endswith(b" FROM stdin;")
    return copy_sql[:-1] + b" WITH (FREEZE);"


def _abandon(manager: Any) -> None:
    """End a COPY half-way with an error: the server keeps none of its rows."""
    try:
        manager.__exit__(Cancelled, Cancelled(), None)
    except (psycopg.Error, Cancelled):
        pass


class _NotFreezable(Exception):
    """The table cannot be emptied for COPY FREEZE."""


def _drain(stream: queue.Queue[Any], stop: threading.Event) -> None:
    """Take what the conductor still sends until its end mark (or a stop), so that it never blocks."""
    while True:
        try:
            if stream.get(timeout=0.1) is None:
                return
        except queue.Empty:
            if stop.is_set():
                return


def _failed(job: Job, exc: psycopg.Error) -> ToolError:
    """A server error as one line, naming the dump entry it happened in."""
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or str(exc).strip().splitlines()[0]
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return ToolError(f"stopped while loading {job.label}")
    return ToolError(f"loading {job.label} failed: {primary}")
