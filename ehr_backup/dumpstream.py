"""Read a plain-SQL pg_dump stream as it passes: row counts per table, completion, transaction control.

The scanner keeps only the current partial line, so memory stays constant: inside a COPY section it
never keeps more than two bytes, however long a row is.
"""

from __future__ import annotations

import re

COMPLETE_MARKER = b"-- PostgreSQL database dump complete"
BLOBS_COMMENT = b"-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -"
_COPY = re.compile(rb"^COPY (.+?) (?:\(.*\) )?FROM stdin;$")


class DumpScanner:
    """Count COPY rows per table and detect the completion marker while the dump streams through.

    With `strip_blob_transaction`, the `BEGIN;`/`COMMIT;` that pg_dump wraps around large-object data
    are removed from the output, so that the restore's own BEGIN ... COMMIT keeps everything in one
    transaction (a `COMMIT;` there would commit everything restored so far).
    """

    def __init__(self, *, strip_blob_transaction: bool = False, collect: bool = True) -> None:
        self._collect = collect  # False: only observe (feed returns nothing; no copies are made)
        self.rows: dict[str, int] = {}
        self.complete = False
        self.bytes = 0
        self._strip = strip_blob_transaction
        self._partial = b""  # SQL mode: the unfinished line; COPY mode: at most two bytes
        self._copy_table: str | None = None
        self._mid_line = False  # COPY mode: the current line is longer than what is kept
        self._prev_line = b""
        self._in_blobs = False
        self._view = memoryview(b"")

    @property
    def in_copy(self) -> bool:
        """Whether the stream is inside a COPY data section."""
        return self._copy_table is not None

    def feed(self, chunk: bytes) -> list[bytes | memoryview]:
        """Consume a chunk; return what should be passed on (views of the chunk, without copies)."""
        self.bytes += len(chunk)
        out: list[bytes | memoryview] = []
        buf = self._partial + chunk if self._partial else chunk
        self._view = memoryview(buf)
        pos = 0
        end = len(buf)
        self._partial = b""
        while pos < end:
            if self._copy_table is not None:
                pos = self._scan_copy(buf, pos, out)
                if pos < 0:
                    return out
            else:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    self._partial = buf[pos:]
                    return out
                line = buf[pos:nl]
                if self._keep_line(line) and self._collect:
                    out.append(self._view[pos:nl + 1])
                pos = nl + 1
        return out

    def _scan_copy(self, buf: bytes, pos: int, out: list[bytes | memoryview]) -> int:
        """Advance through COPY data from pos; return the next position or -1 when the chunk is used."""
        assert self._copy_table is not None
        if not self._mid_line and buf.startswith(b"\\.\n", pos):
            term = pos
        else:
            term = buf.find(b"\n\\.\n", pos)
            if term >= 0:
                term += 1
        if term >= 0:
            self.rows[self._copy_table] += buf.count(b"\n", pos, term)
            if self._collect:
                out.append(self._view[pos:term + 3])
            self._copy_table = None
            self._mid_line = False
            self._prev_line = b"\\."
            return term + 3
        self.rows[self._copy_table] += buf.count(b"\n", pos)
        last_nl = buf.rfind(b"\n", pos)
        tail_start = last_nl + 1 if last_nl >= 0 else pos
        tail = buf[tail_start:]
        if self._collect:
            out.append(self._view[pos:tail_start])
        if len(tail) <= 2 and not (last_nl < 0 and self._mid_line):
            self._partial = tail  # may be the start of the terminator line
            self._mid_line = False
        else:
            if self._collect:
                out.append(self._view[tail_start:])
            self._mid_line = True
        return -1

    def _keep_line(self, line: bytes) -> bool:
        """Track state for one SQL line; return False when it must be dropped from the output."""
        keep = True
        if line.startswith(b"COPY "):
            m = _COPY.match(line)
            if m:
                self._copy_table = m.group(1).decode("utf-8", "replace").strip()
                self.rows.setdefault(self._copy_table, 0)
        elif line == BLOBS_COMMENT:
            self._in_blobs = True
        elif self._strip and self._in_blobs and line == b"BEGIN;" and self._prev_line == b"--":
            keep = False
        elif (self._strip and self._in_blobs and line == b"COMMIT;"
              and self._prev_line == b"SELECT pg_catalog.lo_close(0);"):
            keep = False
            self._in_blobs = False
        elif line.startswith(COMPLETE_MARKER):
            self.complete = True
        elif self.complete and line and not line.startswith((b"--", b"\\unrestrict ")):
            self.complete = False  # something after the marker: not pg_dump's ending
        if line:
            self._prev_line = line
        return keep

    def finish(self) -> list[bytes | memoryview]:
        """Flush what is left at the end of the stream."""
        rest, self._partial = self._partial, b""
        if rest and self._copy_table is None:
            self._keep_line(rest)
        return [rest] if rest else []
