"""Restore chosen tables beside the live ones: into a schema of their own, in one transaction.

From the dump, only the chosen tables' own entries are run: the table, its data, its indexes and
constraints (foreign keys only to tables restored with it) and comments. Defaults that draw on
sequences, triggers, policies, rules and privileges are left out (listed in the report), so nothing of
the copy acts on the live data. With `into_schema`, every reference to a chosen table (or to an index of
one) is rewritten to the new schema, token by token, never inside a string. One transaction: a failure
or a row-count difference leaves the database as it was.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import Escaping

from ..dumptoc import TocEntry, TocReader
from ..errors import Cancelled, InvalidInput, NotAuthentic, ToolError
from ..pg import ConnInfo, connect
from ..sqlscan import (
    Comment,
    CopyData,
    CopyEnd,
    CopyStart,
    DumpSyntaxError,
    Ident,
    Meta,
    SqlScanner,
    Statement,
    split_qualified,
)
from .counts import TableCount
from .plan import plan_entry, session_key

_IDENT = rb'(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)'
_CREATE_TABLE = re.compile(rb"CREATE (?:UNLOGGED )?TABLE (" + _IDENT + rb"\." + _IDENT + rb") ")
_CREATE_INDEX = re.compile(rb"CREATE (?:UNIQUE )?INDEX (" + _IDENT + rb") ON ")
_ADD_INDEXED = re.compile(rb"ALTER TABLE (?:ONLY )?" + _IDENT + rb"\." + _IDENT + rb"\s+ADD CONSTRAINT (" + _IDENT +
                          rb") (?:PRIMARY KEY|UNIQUE|EXCLUDE)\b")
_TABLE_ATTACH = re.compile(rb"ALTER TABLE ONLY (" + _IDENT + rb"\." + _IDENT + rb") ATTACH PARTITION (" + _IDENT +
                           rb"\." + _IDENT + rb") ")
_INDEX_ATTACH = re.compile(rb"ALTER INDEX (" + _IDENT + rb"\." + _IDENT + rb") ATTACH PARTITION (" + _IDENT +
                           rb"\." + _IDENT + rb");")
_COMMENT_ON = re.compile(rb"COMMENT ON (TABLE|COLUMN) (" + _IDENT + rb"\." + _IDENT + rb")")
# a token: a string (standard, E'', dollar-quoted), a quoted identifier, a word, or one other byte
_TOKEN = re.compile(rb"""[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|(\$[A-Za-z_]?[A-Za-z0-9_]*\$).*?\1|"""
                    rb"""(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)"""
                    rb"""(?:\.(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*))?|.""", re.DOTALL)
KINDS = {"TABLE", "TABLE DATA", "INDEX", "CONSTRAINT", "FK CONSTRAINT", "COMMENT", "CHECK CONSTRAINT",
         "TABLE ATTACH", "INDEX ATTACH"}


@dataclass
class Selection:
    """What to bring back, and where."""

    tables: list[Ident] = field(default_factory=list)
    schemas: list[bytes] = field(default_factory=list)
    into_schema: str | None = None

    def wants(self, t: Ident) -> bool:
        """Whether a table is chosen."""
        return t in self.tables or (t.schema is not None and t.schema in self.schemas)


@dataclass
class SelectiveOutcome:
    """What a selective restore did."""

    database: str
    into_schema: str | None
    tables: list[TableCount] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # entries run, for people
    left_out: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every restored table holds its rows."""
        return all(t.ok for t in self.tables)


def parse_table(text: str) -> Ident:
    """`schema.table` as a user types it (quotes allowed); a bare name means the public schema."""
    raw = text.strip().encode()
    try:
        ident = split_qualified(raw)
    except DumpSyntaxError:
        raise InvalidInput(f"{text[:100]!r} is not a table name: give schema.table, with double quotes around "
                           "names that need them") from None
    return ident if ident.schema is not None else Ident(b"public", ident.name)


def check_schema_name(name: str) -> str:
    """A name for the schema the tables are restored into."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name or ""):
        raise InvalidInput("the schema to restore into must be 1-63 letters, digits or _ (not starting with a "
                           "digit)")
    return name


class SelectiveRestore:
    """Read the whole dump once; run the chosen entries in one transaction on one connection."""

    def __init__(self, info: ConnInfo, selection: Selection, *, cancel: threading.Event,
                 progress: Callable[[int], None] | None = None) -> None:
        self._info = info
        self._sel = selection
        self._cancel = cancel
        self._progress = progress
        self._out = SelectiveOutcome(info.dbname, selection.into_schema)
        self._toc = TocReader()
        self._entry: TocEntry | None = None
        self._take = False  # the current entry is being run
        self._pending_fk: list[tuple[TocEntry, list[bytes]]] = []
        self._buffer: list[bytes] = []
        self._indexes: set[Ident] = set()
        self._loaded: dict[Ident, list[int]] = {}
        self._copy: _Copy | None = None
        self._found: set[Ident] = set()
        self._partitioned: set[Ident] = set()  # chosen tables that are PARTITION BY roots
        self._unchosen_partitions: dict[Ident, list[Ident]] = {}  # root -> partitions not chosen

    def run(self, source: Iterator[bytes]) -> SelectiveOutcome:
        """Run the restore; commit only when every table's rows are there."""
        started = time.monotonic()
        with connect(self._info, autocommit=False) as conn:
            self._conn = conn
            self._esc = Escaping(conn.pgconn)
            try:
                if self._sel.into_schema:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self._sel.into_schema)))
                scanner = SqlScanner()
                read = 0
                for piece in source:
                    if self._cancel.is_set():
                        raise Cancelled()
                    read += len(piece)
                    if self._progress:
                        self._progress(read)
                    for ev in scanner.feed(piece):
                        self._event(ev)
                for ev in scanner.finish():
                    self._event(ev)
                self._end_entry()
                if not self._toc.complete:
                    raise NotAuthentic()
                for entry, statements in self._pending_fk:  # foreign keys last, among chosen tables only
                    self._run_statements(entry, statements)
                missing = [t.text() for t in self._sel.tables if t not in self._found]
                if missing:
                    raise InvalidInput(f"the backup holds no table {', '.join(missing)}")
                self._check_partitions()
                if not self._found:
                    raise InvalidInput("the backup holds no table in the chosen schemas")
                self._out.phases["load"] = time.monotonic() - started
                self._count()
                if self._out.ok:
                    conn.commit()
                else:
                    conn.rollback()
            except psycopg.Error as exc:
                conn.rollback()
                diag = getattr(exc, "diag", None)
                raise ToolError(f"restoring the chosen tables failed: "
                                f"{diag.message_primary if diag and diag.message_primary else exc}; nothing was "
                                "changed") from None
            except BaseException:
                conn.rollback()
                raise
        return self._out

    # ----- the dump ---------------------------------------------------------------------------------
    def _event(self, ev: object) -> None:
        if isinstance(ev, Comment):
            was = self._toc.complete
            entry = self._toc.comment(ev)
            if entry is not None or (self._toc.complete and not was):
                self._end_entry()
                self._entry = entry
                self._buffer = []
            return
        if isinstance(ev, Meta):
            if not ev.line.startswith((b"\\restrict ", b"\\unrestrict ")):
                raise DumpSyntaxError("a psql command other than \\restrict")
            return
        if isinstance(ev, Statement):
            self._toc.statement_seen()
            if session_key(ev.sql) is not None:
                self._conn.execute(ev.sql)  # the dump's session settings apply to what follows
            else:
                self._buffer.append(ev.sql)
        elif isinstance(ev, CopyStart):
            self._toc.statement_seen()
            if self._entry is not None and self._entry.type == "TABLE DATA" and self._sel.wants(ev.target):
                cursor = self._conn.cursor()
                manager = cursor.copy(self._rewrite(ev.sql))  # kept: dropping it would end the COPY
                self._copy = _Copy(manager, manager.__enter__(), ev.target, cursor)
                self._out.restored.append(f"data of {ev.target.text()}")
        elif isinstance(ev, CopyData):
            if self._copy is not None:
                self._copy.copy.write(ev.data)
        elif isinstance(ev, CopyEnd):
            if self._copy is not None:
                current, self._copy = self._copy, None
                current.manager.__exit__(None, None, None)
                counts = self._loaded.setdefault(current.target, [0, 0])
                counts[0] += ev.rows
                counts[1] += current.cursor.rowcount

    def _end_entry(self) -> None:
        entry, statements = self._entry, self._buffer
        self._entry, self._buffer = None, []
        if entry is None or not statements or entry.type not in KINDS:
            if entry is not None and statements and self._touches(statements):
                self._out.left_out.append(f"{entry.type or 'entry'} {entry.label[:100]}")
            return
        plain = [s for s in statements if session_key(s) is None]
        if entry.type == "TABLE":
            m = _CREATE_TABLE.match(plain[0]) if plain else None
            table = split_qualified(m.group(1)) if m else None
            if table is None or not self._sel.wants(table):
                return
            if re.search(rb"\)\s*INHERITS \(", plain[0]):
                raise InvalidInput(f"{table.text()} inherits from another table: restore it into another database "
                                   "instead (--target-url)")
            if re.search(rb"\)\s*PARTITION BY ", plain[0]):
                self._partitioned.add(table)
            self._found.add(table)
        elif entry.type == "TABLE ATTACH":
            m = _TABLE_ATTACH.match(plain[0]) if plain else None
            if m is None:
                return
            root, part = split_qualified(m.group(1)), split_qualified(m.group(2))
            if self._sel.wants(root) and not self._sel.wants(part):
                self._unchosen_partitions.setdefault(root, []).append(part)
            if not (self._sel.wants(root) and self._sel.wants(part)):
                if self._sel.wants(part):
                    self._out.notes.append(f"{part.text()} is a partition of {root.text()}, which was not chosen: "
                                           "it was restored as a table of its own")
                return
        elif entry.type == "INDEX ATTACH":
            m = _INDEX_ATTACH.match(plain[0]) if plain else None
            if m is None or not all(split_qualified(m.group(i)) in self._indexes for i in (1, 2)):
                return
        elif entry.type in ("INDEX", "CONSTRAINT", "FK CONSTRAINT"):
            plan = plan_entry(entry.type, plain, None, entry.deps)
            if not plan.locks or not all(self._sel.wants(t) for t in plan.locks):
                if plan.locks and any(self._sel.wants(t) for t in plan.locks):
                    self._out.left_out.append(f"{entry.type} {entry.label[:100]} (it names a table not restored)")
                return
            m = _CREATE_INDEX.match(plain[0]) or _ADD_INDEXED.match(plain[0])
            if m:  # its index may be named later (ALTER INDEX ... ATTACH PARTITION, a rewrite)
                table = next(iter(plan.locks))
                self._indexes.add(Ident(table.schema, split_qualified(m.group(1)).name))
            if entry.type == "FK CONSTRAINT":
                self._pending_fk.append((entry, statements))
                return
        elif entry.type == "COMMENT":
            m = _COMMENT_ON.match(plain[0]) if plain else None
            if m is None:
                return
            parts = re.findall(_IDENT, m.group(2))
            table = split_qualified(b".".join(parts[:2]))
            if not self._sel.wants(table):
                return
        elif entry.type == "CHECK CONSTRAINT":
            plan = plan_entry("CONSTRAINT", plain, None, entry.deps)
            if not plan.locks or not all(self._sel.wants(t) for t in plan.locks):
                return
        else:
            return
        self._run_statements(entry, statements)

    def _check_partitions(self) -> None:
        """A partitioned table comes back with all its partitions, or not at all (it would be empty)."""
        gaps = {root: parts for root, parts in self._unchosen_partitions.items() if root in self._partitioned}
        if gaps:
            text = "; ".join(f"{root.text()} keeps its rows in {', '.join(p.text() for p in parts[:20])}"
                             + (f" and {len(parts) - 20} more" if len(parts) > 20 else "")
                             for root, parts in sorted(gaps.items(), key=lambda g: g[0].text()))
            raise InvalidInput(f"a partitioned table needs its partitions: {text}; choose them too (or the whole "
                               "schema)")

    def _run_statements(self, entry: TocEntry, statements: list[bytes]) -> None:
        for s in statements:
            if self._cancel.is_set():
                raise Cancelled()
            if session_key(s) == "search_path":
                continue
            self._conn.execute(self._rewrite(s))
        self._out.restored.append(f"{entry.type} {entry.label[:100]}")

    def _touches(self, statements: list[bytes]) -> bool:
        """Whether left-out statements name a chosen table (to list them as not restored)."""
        for s in statements:
            for m in _TOKEN.finditer(s):
                tok = m.group()
                if _is_name(tok):
                    try:
                        if self._sel.wants(split_qualified(tok)):
                            return True
                    except DumpSyntaxError:
                        continue
        return False

    # ----- rewriting --------------------------------------------------------------------------------
    def _rewrite(self, stmt: bytes) -> bytes:
        """Point references to chosen tables (and their indexes) at the new schema; strings untouched."""
        into = self._sel.into_schema
        if not into:
            return stmt
        out = []
        for m in _TOKEN.finditer(stmt):
            tok = m.group()
            if _is_name(tok):
                try:
                    ident = split_qualified(tok)
                except DumpSyntaxError:
                    out.append(tok)
                    continue
                if self._sel.wants(ident) or ident in self._indexes:
                    out.append(self._esc.escape_identifier(into.encode()) + b"." +
                               self._esc.escape_identifier(ident.name))
                    continue
            out.append(tok)
        return b"".join(out)

    def _qualified(self, t: Ident) -> bytes:
        schema = self._sel.into_schema.encode() if self._sel.into_schema else (t.schema or b"public")
        return self._esc.escape_identifier(schema) + b"." + self._esc.escape_identifier(t.name)

    def _count(self) -> None:
        for target in sorted(self._found, key=lambda t: t.text()):
            dumped, loaded = self._loaded.get(target, [0, 0])
            row = self._conn.execute(b"SELECT count(*) FROM ONLY " + self._qualified(target)).fetchone()
            name = (Ident(self._sel.into_schema.encode(), target.name) if self._sel.into_schema else target).text()
            self._out.tables.append(TableCount(name, dumped, loaded, int(row[0]) if row else None))


@dataclass
class _Copy:
    manager: Any
    copy: Any
    target: Ident
    cursor: Any


def _is_name(tok: bytes) -> bool:
    """Whether a token is a qualified name (not a string, whose text is never rewritten)."""
    return b"." in tok and tok[:1] not in (b"'", b"$") and re.match(rb"[Ee]'", tok) is None
