"""pg_dump's table of contents in a plain dump: entry headers, what each entry is, where it starts.

With `--verbose`, pg_dump starts every entry with a comment block:

    -- TOC entry 3359 (class 0 OID 18108)
    -- Dependencies: 214
    -- Data for Name: notes; Type: TABLE DATA; Schema: public; Owner: ehr

Only comment lines outside every statement are read here (the scanner tracks quoting), and pg_dump
replaces newlines in names with spaces, so a header cannot be forged by data. A name may still
contain `; Type: `: a header whose type cannot be told for certain is "unknown", and unknown entries
are restored one at a time in dump order, which is always correct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .sqlscan import Comment, Ident

COMPLETE_MARKER = b"-- PostgreSQL database dump complete"
_TOC_LINE = re.compile(rb"-- TOC entry (\d+) \(class \d+ OID \d+\)")
_DEPS_LINE = re.compile(rb"-- Dependencies: ((?:\d+ ?)+)")
_NAME_LINE = re.compile(rb"-- (Data for )?Name: (.*)")

# The entry types pg_dump writes (pg_dump.c ArchiveEntry .description), longest first so that
# "TABLE DATA" is not read as "TABLE".
KNOWN_TYPES = sorted((
    "ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOBS", "BLOB METADATA", "LARGE OBJECT",
    "LARGE OBJECTS", "CAST", "CHECK CONSTRAINT", "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION",
    "DATABASE", "DATABASE PROPERTIES", "DEFAULT", "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER",
    "EXTENSION", "FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN TABLE", "FUNCTION", "INDEX",
    "INDEX ATTACH", "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "OPERATOR", "OPERATOR CLASS",
    "OPERATOR FAMILY", "POLICY", "PROCEDURAL LANGUAGE", "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA", "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH", "SECURITY LABEL",
    "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS",
    "STATISTICS DATA", "STDSTRINGS", "SUBSCRIPTION", "SUBSCRIPTION TABLE", "TABLE", "TABLE ATTACH",
    "TABLE DATA", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING", "VIEW", "FOREIGN SERVER",
), key=len, reverse=True)
_TYPE_AT = re.compile(rb"; Type: (" + b"|".join(re.escape(t.encode()) for t in KNOWN_TYPES) + rb"); Schema: ")

DATA_TYPES = {"TABLE DATA", "SEQUENCE SET", "BLOBS", "LARGE OBJECTS"}
# Entries listed one by one in a backup's index; beyond this only their number per type is kept, so that
# memory and the trailer stay bounded whatever the database holds (a million large objects, say).
MAX_LISTED = 10_000


@dataclass
class TocEntry:
    """One entry of the dump: its header and where its text starts."""

    toc_id: int
    offset: int  # of the "-- TOC entry" line
    deps: tuple[int, ...] = ()
    type: str | None = None  # None: no readable header, or its type cannot be told for certain
    label: str = ""  # the header's "Name: ..." text: untrusted, for display only
    data_for: bool = False  # a "Data for Name" header


def entry_type(name_line: bytes) -> str | None:
    """The entry type of a `-- Name: ...` line, or None when it cannot be told for certain."""
    found = {m.group(1).decode() for m in _TYPE_AT.finditer(name_line)}
    return found.pop() if len(found) == 1 else None


class TocReader:
    """Follow the comment lines of a dump and report entry headers as they complete."""

    def __init__(self) -> None:
        self.current: TocEntry | None = None
        self.complete = False
        self._header_open = False

    def comment(self, c: Comment) -> TocEntry | None:
        """Read one top-level comment line; return a new entry when its TOC line starts one."""
        line = c.line.rstrip(b"\r")
        m = _TOC_LINE.fullmatch(line)
        if m:
            self.current = TocEntry(int(m.group(1)), c.offset)
            self._header_open = True
            return self.current
        if line.startswith(COMPLETE_MARKER):
            self.complete = True
            self._header_open = False
            self.current = None
            return None
        if not self._header_open or self.current is None:
            return None
        if line == b"--":
            self._header_open = False
            return None
        d = _DEPS_LINE.fullmatch(line)
        if d:
            self.current.deps = tuple(int(x) for x in d.group(1).split())
            return None
        n = _NAME_LINE.fullmatch(line)
        if n:
            self.current.data_for = bool(n.group(1))
            self.current.type = entry_type(line)
            self.current.label = n.group(2).decode("utf-8", "replace")[:500]
        return None

    def statement_seen(self) -> None:
        """A statement closes any header still open (an unusual header is not read further)."""
        self._header_open = False


@dataclass
class DataEntry:
    """A TABLE DATA entry that holds exactly one COPY and nothing else: it can be loaded on its own."""

    toc_id: int
    start: int  # offset of its "-- TOC entry" line
    end: int  # offset of the next entry's line (or of the end marker)
    target: Ident
    rows: int
    bytes: int  # size of its COPY data


@dataclass
class DumpIndex:
    """What a full read of a dump learns: entries, pure data entries, row counts, completion."""

    entries: list[TocEntry] = field(default_factory=list)  # the first MAX_LISTED only
    data: list[DataEntry] = field(default_factory=list)
    complete: bool = False
    dump_bytes: int = 0
    type_counts: dict[str, int] = field(default_factory=dict)  # every entry, by type
    entry_count: int = 0


class DumpAnalyzer:
    """Read a whole dump as it streams past (no copies kept): entries, pure data entries, row counts."""

    def __init__(self) -> None:
        from .sqlscan import SqlScanner

        self.scanner = SqlScanner()
        self.toc = TocReader()
        self.index = DumpIndex()
        self._entry: TocEntry | None = None
        self._pure = False  # the current entry so far holds nothing but one COPY
        self._copy: tuple[Ident, int] | None = None  # target and data bytes of the current COPY
        self._copies = 0
        self._pending: DataEntry | None = None  # a finished pure COPY waiting for its entry's end
        self._all_copies: list[tuple[Ident, int]] = []
        self._complete_tail = True  # nothing but \\unrestrict followed the completion marker

    def feed(self, chunk: bytes | memoryview) -> None:
        """Read a piece of the dump."""
        self._events(self.scanner.feed(chunk))

    def finish(self) -> DumpIndex:
        """Read the end of the stream and return what was learnt."""
        self._events(self.scanner.finish())
        self._close_entry(self.scanner.bytes)
        self.index.complete = self.toc.complete and self._complete_tail
        self.index.dump_bytes = self.scanner.bytes
        return self.index

    def rows_by_table(self) -> dict[str, int]:
        """Rows per COPY target, named as pg_dump quotes them (for people, never for SQL)."""
        out: dict[str, int] = {}
        for d in self._all_copies:
            out[d[0].text()] = out.get(d[0].text(), 0) + d[1]
        return out

    def _events(self, events: list) -> None:
        from .sqlscan import Comment, CopyData, CopyEnd, CopyStart, Meta, Statement

        for e in events:
            if isinstance(e, CopyData):
                if self._copy is not None:
                    self._copy = (self._copy[0], self._copy[1] + len(e.data))
                continue
            if isinstance(e, Comment):
                was_complete = self.toc.complete
                started = self.toc.comment(e)
                if started is not None:
                    self._close_entry(e.offset)
                    self._entry = started
                    self._pure = True
                    self._copies = 0
                    if len(self.index.entries) < MAX_LISTED:
                        self.index.entries.append(started)
                elif self.toc.complete and not was_complete:
                    self._close_entry(e.offset)
                    self._entry = None
                continue
            if self.toc.complete and not (isinstance(e, Meta) and e.line.startswith(b"\\unrestrict ")):
                self._complete_tail = False  # something after pg_dump's ending: not its dump
            if isinstance(e, CopyStart):
                self.toc.statement_seen()
                self._copy = (e.target, 0)
                self._copies += 1
            elif isinstance(e, CopyEnd):
                assert self._copy is not None
                target, size = self._copy
                self._all_copies.append((target, e.rows))
                entry = self._entry
                if (entry is not None and self._pure and self._copies == 1 and entry.type == "TABLE DATA"):
                    self._pending = DataEntry(entry.toc_id, entry.offset, -1, target, e.rows, size)
                else:
                    self._pure = False
                self._copy = None
            elif isinstance(e, (Statement, Meta)):
                if isinstance(e, Statement):
                    self.toc.statement_seen()
                self._pure = False
                self._pending = None

    def _count_type(self) -> None:
        """Count the finished entry by its type (its header has been read by now)."""
        if self._entry is not None:
            kind = self._entry.type or "unknown"
            self.index.type_counts[kind] = self.index.type_counts.get(kind, 0) + 1
            self.index.entry_count += 1

    def _close_entry(self, end: int) -> None:
        self._count_type()
        self._entry = None
        if self._pending is not None and self._pure:
            self._pending.end = end
            self.index.data.append(self._pending)
        self._pending = None
        self._pure = False


def _name(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


def _raw(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def index_to_json(index: DumpIndex) -> dict[str, object]:
    """The index as the trailer stores it (names keep every byte: not-UTF-8 names round-trip)."""
    return {
        "entryCount": index.entry_count, "typeCounts": dict(sorted(index.type_counts.items())),
        "entries": [[e.toc_id, e.offset, e.type or "", e.label, list(e.deps)] for e in index.entries],
        "data": [[d.toc_id, d.start, d.end, _name(d.target.schema), _name(d.target.name), d.rows, d.bytes]
                 for d in index.data],
    }


def index_from_json(data: object) -> DumpIndex:
    """Read a trailer's index back (it was authenticated with the file)."""
    from .errors import NotAuthentic

    try:
        assert isinstance(data, dict)
        index = DumpIndex(complete=True, entry_count=int(data.get("entryCount", 0)),
                          type_counts={str(k): int(v) for k, v in data.get("typeCounts", {}).items()})
        for toc_id, offset, typ, label, deps in data["entries"]:
            index.entries.append(TocEntry(int(toc_id), int(offset), tuple(int(d) for d in deps),
                                          str(typ) or None, str(label)))
        for toc_id, start, end, schema, name, rows, size in data["data"]:
            index.data.append(DataEntry(int(toc_id), int(start), int(end), Ident(_raw(schema), _raw(name) or b""),
                                        int(rows), int(size)))
        return index
    except (AssertionError, KeyError, TypeError, ValueError):
        raise NotAuthentic() from None
