"""Split a plain-SQL pg_dump stream the way psql does: statements, meta-commands, COPY data, comments.

Everything in a dump is untrusted text: a table comment, a function body or an enum label can hold a
line that looks like `COPY x FROM stdin;` or a TOC header. The scanner therefore tracks quoting exactly
as psql's lexer does (string literals with their escapes, quoted identifiers, dollar quotes, nested
block comments, parentheses, and the BEGIN ... END bodies of SQL-standard functions), so that only a
statement psql itself would send to the server is reported as one, and only a COPY that psql would feed
with data starts a data section.

Memory: a statement is kept whole until its terminating semicolon (as psql keeps it); inside COPY data
at most two bytes are kept, however long a row is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import NotAuthentic

MAX_STATEMENT = 512 * 1024 * 1024

# Where the top-level scan must look next: a terminator, a quote, a dollar, parentheses, a backslash,
# a comment, or a word (words are needed for E'' strings and for BEGIN ... END bodies).
_NEXT = re.compile(rb"""[;'"$()\\]|--|/\*|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*""")
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_E_STRING_STOP = re.compile(rb"[\\']")
_BLOCK_COMMENT = re.compile(rb"/\*|\*/")
_LINE_END = re.compile(rb"[\r\n]")  # psql ends a -- comment at either
_FUNCTION_WORDS = {b"create": b"c", b"function": b"f", b"procedure": b"p", b"or": b"o", b"replace": b"r"}


class DumpSyntaxError(NotAuthentic):
    """The dump is not what pg_dump writes (a restore refuses it rather than guess)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the dump cannot be read safely: {what}")


@dataclass(frozen=True)
class Ident:
    """A schema-qualified name as raw bytes, exactly as the server will see it (quotes removed)."""

    schema: bytes | None
    name: bytes

    def text(self) -> str:
        """A display form, `schema.name`, quoted as pg_dump quotes names (never used as SQL)."""
        parts = [p for p in (self.schema, self.name) if p is not None]
        return ".".join(quote_ident_text(p) for p in parts)


def quote_ident_text(name: bytes) -> str:
    """Show an identifier the way pg_dump writes it: bare when simple, else in double quotes."""
    text = name.decode("utf-8", "surrogateescape")
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", text):
        return text
    return '"' + text.replace('"', '""') + '"'


@dataclass(frozen=True)
class Comment:
    """A `--` comment line outside any statement (pg_dump's headers live here)."""

    line: bytes
    offset: int


@dataclass(frozen=True)
class Statement:
    """A complete statement, with its terminating semicolon, as psql would send it."""

    sql: bytes
    offset: int


@dataclass(frozen=True)
class Meta:
    """A psql backslash command line outside any statement (`\\restrict`, `\\connect`, ...)."""

    line: bytes
    offset: int


@dataclass(frozen=True)
class CopyStart:
    """A `COPY table (columns) FROM stdin;` statement: data lines follow until `\\.`."""

    sql: bytes
    target: Ident
    offset: int


@dataclass(frozen=True)
class CopyData:
    """A piece of COPY data (a view into the chunk that was fed)."""

    data: memoryview


@dataclass(frozen=True)
class CopyEnd:
    """The end of a COPY data section, with the number of rows it held."""

    rows: int
    offset: int  # of the byte after the terminator line


Event = Comment | Statement | Meta | CopyStart | CopyData | CopyEnd


class _Quote:
    NONE, STRING, ESTRING, IDENT, DOLLAR, BLOCK, LINE = range(7)


class SqlScanner:
    """Feed bytes, get events. `offset` values count bytes from the start of the stream."""

    def __init__(self, offset: int = 0, *, std_strings: bool = True) -> None:
        self.bytes = 0
        self._rest = b""  # SQL mode: the unfinished statement or line; COPY mode: at most two bytes
        self._rest_offset = offset  # where the next byte fed sits in the whole stream
        self._copy_rows: int | None = None  # not None while inside COPY data
        self._mid_line = False
        self._copy_sql: bytes = b""
        self._std_strings = std_strings  # standard_conforming_strings, as the dump sets it (carried over a jump)
        self._reset_statement()

    def _reset_statement(self) -> None:
        self._complete = False  # a COPY statement whose line end is still to come
        self._resume = 0
        self._scan = 0  # where the scan of the unfinished statement resumes (relative to its start)
        self._quote = _Quote.NONE
        self._tag = b""
        self._depth = 0
        self._paren = 0
        self._begin = 0
        self._words: list[bytes] = []
        self._word_count = 0

    @property
    def in_copy(self) -> bool:
        """Whether the stream is inside COPY data."""
        return self._copy_rows is not None

    def feed(self, chunk: bytes | memoryview) -> list[Event]:
        """Consume a chunk and return the events it completes."""
        events: list[Event] = []
        base = self._rest_offset
        buf = self._rest + bytes(chunk) if self._rest else bytes(chunk)
        self.bytes += len(chunk)
        self._rest = b""
        view = memoryview(buf)
        pos = 0
        while pos < len(buf):
            if self._copy_rows is not None:
                pos = self._copy(buf, view, pos, base, events)
                if pos < 0:
                    return events
            else:
                pos = self._sql(buf, pos, base, events)
                if pos < 0:
                    return events
        self._rest_offset = base + len(buf)
        return events

    def finish(self) -> list[Event]:
        """The end of the stream: a last line without newline is read; anything unfinished is an error."""
        if self._copy_rows is not None:
            raise DumpSyntaxError("the stream ended inside COPY data")
        rest, self._rest = self._rest, b""
        between = self._scan == 0 and self._quote == _Quote.NONE and not self._complete
        if between and rest.startswith(b"--"):
            return [Comment(rest.rstrip(b"\r"), self._rest_offset)]
        if between and rest.startswith(b"\\"):
            return [Meta(rest.rstrip(b"\r"), self._rest_offset)]
        if rest.strip():
            raise DumpSyntaxError("the stream ended inside a statement")
        return []

    # ----- COPY data ------------------------------------------------------------------------------
    def _copy(self, buf: bytes, view: memoryview, pos: int, base: int, events: list[Event]) -> int:
        assert self._copy_rows is not None
        if not self._mid_line and buf.startswith(b"\\.\n", pos):
            term = pos
        else:
            term = buf.find(b"\n\\.\n", pos)
            if term >= 0:
                term += 1
        if term >= 0:
            self._copy_rows += buf.count(b"\n", pos, term)
            if term > pos:
                events.append(CopyData(view[pos:term]))
            events.append(CopyEnd(self._copy_rows, base + term + 3))
            self._copy_rows = None
            self._mid_line = False
            return term + 3
        self._copy_rows += buf.count(b"\n", pos)
        last_nl = buf.rfind(b"\n", pos)
        tail_start = last_nl + 1 if last_nl >= 0 else pos
        tail = buf[tail_start:]
        if tail_start > pos:
            events.append(CopyData(view[pos:tail_start]))
        if len(tail) <= 2 and not (last_nl < 0 and self._mid_line):
            self._rest = tail  # may be the start of the terminator line
            self._rest_offset = base + tail_start
            self._mid_line = False
        else:
            if tail:
                events.append(CopyData(view[tail_start:]))
            self._mid_line = True
            self._rest_offset = base + len(buf)
        return -1

    # ----- SQL ------------------------------------------------------------------------------------
    def _keep(self, buf: bytes, start: int, base: int) -> int:
        """Keep buf[start:] for the next chunk; -1 tells feed() to stop."""
        self._rest = buf[start:]
        self._rest_offset = base + start
        if len(self._rest) > MAX_STATEMENT:
            raise DumpSyntaxError("a statement is larger than 512 MiB")
        return -1

    def _sql(self, buf: bytes, pos: int, base: int, events: list[Event]) -> int:
        """Scan from pos (between statements, or inside the kept one); return where to go on, or -1."""
        n = len(buf)
        if self._scan == 0 and self._quote == _Quote.NONE and not self._complete:
            # between statements: whitespace, a comment line, or a meta-command line
            while pos < n and buf[pos] in b" \t\r\n\f":
                pos += 1
            if pos == n:
                self._rest_offset = base + n
                return n
            if buf.startswith(b"--", pos) or buf[pos] == 0x5C or (buf[pos] == 0x2D and pos + 1 == n):
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    return self._keep(buf, pos, base)
                line = buf[pos:nl]
                events.append(Comment(line, base + pos) if line.startswith(b"--") else Meta(line, base + pos))
                return nl + 1
        start = pos
        if self._complete:
            end = start + self._scan - 1
        else:
            end = self._statement_end(buf, start + self._scan)
            if end < 0:
                self._scan = self._resume - start
                return self._keep(buf, start, base)
        sql = buf[start:end + 1]
        if sql[:4].upper() == b"COPY":
            if end + 1 >= n:  # the newline that ends the COPY line is still to come
                self._complete = True
                self._scan = end + 1 - start
                return self._keep(buf, start, base)
            target = parse_copy(sql)
            if buf[end + 1] != 0x0A:
                raise DumpSyntaxError("COPY data must start on the line after the COPY statement")
            self._reset_statement()
            events.append(CopyStart(sql, target, base + start))
            self._copy_rows = 0
            self._mid_line = False
            return end + 2
        self._reset_statement()
        self._track_settings(sql)
        events.append(Statement(sql, base + start))
        return end + 1

    def _statement_end(self, buf: bytes, pos: int) -> int:
        """Index of the terminating semicolon from pos, or -1 with self._resume set for the next chunk."""
        n = len(buf)
        self._resume = n
        while pos < n:
            q = self._quote
            if q == _Quote.STRING or q == _Quote.IDENT:
                mark = b"'" if q == _Quote.STRING else b'"'
                close = buf.find(mark, pos)
                if close < 0:
                    return -1
                if close + 1 >= n:
                    self._resume = close  # a doubled quote may follow
                    return -1
                if buf[close + 1] == mark[0]:
                    pos = close + 2
                    continue
                self._quote = _Quote.NONE
                pos = close + 1
                continue
            if q == _Quote.ESTRING:
                m = _E_STRING_STOP.search(buf, pos)
                if m is None:
                    return -1
                at = m.start()
                if at + 1 >= n:
                    self._resume = at
                    return -1
                if buf[at] == 0x5C or buf[at + 1] == 0x27:  # an escaped byte, or a doubled quote
                    pos = at + 2
                    continue
                self._quote = _Quote.NONE
                pos = at + 1
                continue
            if q == _Quote.DOLLAR:
                close = buf.find(self._tag, pos)
                if close < 0:
                    self._resume = max(pos, n - len(self._tag) + 1)
                    return -1
                self._quote = _Quote.NONE
                pos = close + len(self._tag)
                continue
            if q == _Quote.BLOCK:
                m = _BLOCK_COMMENT.search(buf, pos)
                if m is None:
                    self._resume = max(pos, n - 1)
                    return -1
                self._depth += 1 if m.group() == b"/*" else -1
                pos = m.end()
                if self._depth == 0:
                    self._quote = _Quote.NONE
                continue
            if q == _Quote.LINE:
                m = _LINE_END.search(buf, pos)
                if m is None:
                    return -1
                self._quote = _Quote.NONE
                pos = m.end()
                continue
            m = _NEXT.search(buf, pos)
            if m is None:
                if buf[n - 1] in b"-/":  # may begin a comment in the next chunk
                    self._resume = n - 1
                return -1
            tok = m.group()
            at = m.start()
            if tok == b";":
                if self._paren == 0 and self._begin == 0:
                    return at
                pos = at + 1
            elif tok == b"'":
                self._quote = _Quote.STRING if self._std_strings else _Quote.ESTRING
                pos = at + 1
            elif tok == b'"':
                self._quote = _Quote.IDENT
                pos = at + 1
            elif tok == b"$":
                d = _DOLLAR_TAG.match(buf, at)
                if d is None:
                    if _could_be_tag(buf, at):
                        self._resume = at  # the tag may go on in the next chunk
                        return -1
                    pos = at + 1  # a parameter ($1) or a lone dollar
                    continue
                self._quote = _Quote.DOLLAR
                self._tag = d.group()
                pos = d.end()
            elif tok == b"(":
                self._paren += 1
                pos = at + 1
            elif tok == b")":
                self._paren = max(0, self._paren - 1)
                pos = at + 1
            elif tok == b"\\":
                raise DumpSyntaxError("a psql command inside a statement")
            elif tok == b"--":
                self._quote = _Quote.LINE
                pos = at + 2
            elif tok == b"/*":
                self._quote = _Quote.BLOCK
                self._depth = 1
                pos = at + 2
            else:  # a word
                end = m.end()
                if end + 1 >= n:
                    self._resume = at  # the word, or an E'' / U&'' prefix, may go on in the next chunk
                    return -1
                nxt = buf[end]
                if nxt == 0x27 and tok in (b"E", b"e"):
                    self._quote = _Quote.ESTRING
                    pos = end + 1
                    continue
                if nxt == 0x27 and tok in (b"B", b"b", b"X", b"x"):  # bit strings: no escapes, ever
                    self._quote = _Quote.STRING
                    pos = end + 1
                    continue
                if nxt == 0x26 and tok in (b"U", b"u") and buf[end + 1] in b"'\"":
                    self._quote = _Quote.STRING if buf[end + 1] == 0x27 else _Quote.IDENT
                    pos = end + 2
                    continue
                # a qualified name's part (t.begin, begin.x) is never the keyword: unlike psql, which
                # then reads the rest of the dump as one statement, a column named "begin" is fine
                if not (at and buf[at - 1] == 0x2E) and nxt != 0x2E:
                    self._word(tok)
                pos = end
        return -1

    def _word(self, word: bytes) -> None:
        """Track CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END as psql does."""
        lower = word.lower()
        if self._word_count < 4:
            self._words.append(_FUNCTION_WORDS.get(lower, b""))
        self._word_count += 1
        w = self._words + [b""] * (4 - len(self._words))
        in_routine = w[0] == b"c" and (w[1] in (b"f", b"p") or (w[1] == b"o" and w[2] == b"r"
                                                                and w[3] in (b"f", b"p")))
        if in_routine and self._paren == 0:
            if lower == b"begin" or lower == b"case" and self._begin >= 1:
                self._begin += 1
            elif lower == b"end" and self._begin > 0:
                self._begin -= 1

    @property
    def std_strings(self) -> bool:
        """standard_conforming_strings as the dump has set it so far."""
        return self._std_strings

    def _track_settings(self, sql: bytes) -> None:
        m = re.match(rb"SET\s+standard_conforming_strings\s*(?:=|TO)\s*'?(on|off)'?\s*;", sql, re.IGNORECASE)
        if m:
            self._std_strings = m.group(1).lower() == b"on"
        m = re.match(rb"SET\s+client_encoding\s*(?:=|TO)\s*'([A-Za-z0-9_]+)'\s*;", sql, re.IGNORECASE)
        if m and m.group(1).upper().replace(b"_", b"") in _CLIENT_ONLY_ENCODINGS:
            raise DumpSyntaxError(f"it is written in the client encoding {m.group(1).decode()}, whose characters "
                                  "can hold quote and backslash bytes")


# encodings a server never stores: their second bytes overlap ASCII (PostgreSQL's "client-only" ones)
_CLIENT_ONLY_ENCODINGS = {b"BIG5", b"GB18030", b"GBK", b"JOHAB", b"SJIS", b"SHIFTJIS2004", b"UHC", b"WIN932",
                          b"WIN936", b"WIN949", b"WIN950", b"SHIFTJIS", b"MSKANJI", b"CP932", b"CP936", b"CP949",
                          b"CP950"}


def _could_be_tag(buf: bytes, at: int) -> bool:
    """Whether buf[at:] may still grow into a dollar-quote tag (all bytes so far are tag bytes)."""
    return re.fullmatch(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?", buf[at:]) is not None


# ----- strict parsing of the few statements whose meaning we need ----------------------------------
_WS = rb"[ \t\r\n]+"
_IDENT = rb'(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)'
_QUALIFIED = re.compile(_IDENT + rb"(?:\." + _IDENT + rb")?")
_COPY = re.compile(rb"COPY " + rb"(?P<name>" + _QUALIFIED.pattern + rb")"
                   rb"(?: \((?P<cols>" + _IDENT + rb"(?:, " + _IDENT + rb")*)\))? FROM stdin;")


def parse_ident(raw: bytes) -> bytes:
    """The name an identifier token stands for: quotes removed (`""` is one quote) or folded to lower case."""
    if raw.startswith(b'"'):
        return raw[1:-1].replace(b'""', b'"')
    return raw.lower()


def split_qualified(raw: bytes) -> Ident:
    """Parse `schema.name` or `name` (each part bare or in double quotes)."""
    parts = re.findall(_IDENT, raw)
    if not 1 <= len(parts) <= 2 or b".".join(parts) != raw:
        raise DumpSyntaxError("a malformed name")
    if len(parts) == 1:
        return Ident(None, parse_ident(parts[0]))
    return Ident(parse_ident(parts[0]), parse_ident(parts[1]))


def parse_copy(sql: bytes) -> Ident:
    """The table of a COPY statement exactly as pg_dump writes it; anything else is refused."""
    m = _COPY.fullmatch(sql)
    if m is None:
        raise DumpSyntaxError("a COPY statement that pg_dump does not write")
    return split_qualified(m.group("name"))
