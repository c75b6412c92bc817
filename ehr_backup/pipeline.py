"""The streams: pg_dump → compress → encrypt → file, and file → authenticate → decrypt → psql."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import compression, storage
from .background import lower_process
from .dumpstream import DumpScanner
from .dumptoc import DumpAnalyzer, index_to_json
from .errors import Cancelled, NotAuthentic, ToolError
from .fileformat import EncryptedWriter, OpenedFile
from .keys import MasterKey
from .pg import ConnInfo, ProcessOutput
from .sqlscan import DumpSyntaxError

CHUNK = 1024 * 1024
F_SETPIPE_SZ = 1031
_TABLE_RE = re.compile(r'pg_dump: (?:dumping contents of table|processing data for table) "?([^"]+)"?')

@dataclass
class Progress:
    """Live state of a job, read by the UI and the CLI while the job thread updates it."""

    phase: str = "starting"
    table: str = ""
    bytes_read: int = 0
    bytes_written: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None  # set once when the job ends: its duration is fixed from then on
    steps: list[str] = field(default_factory=list)  # a job of several steps (a restore): the phases, in order

    def enter(self, phase: str) -> None:
        """Start a new phase: the previous phase's table and byte counts do not belong to it."""
        self.phase, self.table, self.bytes_read, self.bytes_written, self.total = phase, "", 0, 0, None

    def finish(self, now: float | None = None) -> None:
        """Stop the clock (once) and forget the last table, which no longer describes the job."""
        if self.finished is None:
            self.finished = time.monotonic() if now is None else now
        self.table = ""

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """A JSON-ready snapshot; `elapsed` stops growing once the job has finished."""
        end = self.finished if self.finished is not None else (time.monotonic() if now is None else now)
        return {"phase": self.phase, "table": self.table, "bytesRead": self.bytes_read,
                "bytesWritten": self.bytes_written, "total": self.total,
                "elapsed": round(max(0.0, end - self.started), 1), "finished": self.finished is not None,
                **({"steps": step_states(self.steps, self.phase, self.finished is not None)} if self.steps else {})}


def step_states(steps: list[str], phase: str, finished: bool) -> list[dict[str, str]]:
    """Each planned step as done, current or waiting: those before the current phase are done; a step the
    job skipped (not needed) counts as done once a later one starts. A finished job's current step stays
    current (the caller says whether it failed there); after "done" every step is done."""
    current = steps.index(phase) if phase in steps else (len(steps) if phase == "done" else -1)
    return [{"name": name, "state": "done" if i < current else "current" if i == current else "waiting"}
            for i, name in enumerate(steps)]


@dataclass(frozen=True)
class DumpResult:
    """What a finished backup file holds."""

    rows: dict[str, int]
    dump_bytes: int
    size: int
    sha256: str
    header: dict[str, Any]
    seconds: float


class _Discard:
    """A file that keeps nothing (no local copy: the sinks hold the backup)."""

    def write(self, data: bytes | memoryview) -> int:
        return len(data)


class _HashingFile:
    """Count and hash what is written to the file beneath."""

    def __init__(self, fh: IO[bytes], sinks: Sequence[Any] = ()) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()
        self.size = 0
        self._sinks = sinks  # extra copies (destinations/fanout.py): each takes the same bytes, queued

    def write(self, data: bytes | memoryview) -> int:
        self.sha.update(data)
        self.size += len(data)
        for sink in self._sinks:
            sink.write(data)
        return self._fh.write(data)


def _widen_pipe(stream: IO[bytes]) -> None:
    try:
        fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # a smaller pipe only means more, smaller reads


def _kill_on_cancel(proc: subprocess.Popen[bytes], cancel: threading.Event, done: threading.Event) -> None:
    """Stop a child as soon as the job is cancelled, even while it produces nothing (waits on a lock)."""
    while not done.wait(0.2):
        if cancel.is_set():
            _kill(proc)
            return


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill a child started in its own session, with everything in its process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill a child (before its input is closed, so psql cannot commit) and reap it."""
    _kill(proc)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def run_backup(*, conn: ConnInfo, pg_dump: str, directory: Path | None, backup_id: str, key: MasterKey,
               fields: dict[str, Any], algorithm: str, level: int, threads: int, progress: Progress,
               cancel: threading.Event, recorded: dict[str, Any] | None = None,
               sinks: Sequence[Any] = ()) -> DumpResult:
    """Stream pg_dump into an authenticated, compressed file; nothing remains unless all succeeded.

    sinks: extra destinations that receive the same encrypted bytes (the caller finishes or aborts them)."""
    start = time.monotonic()
    progress.phase = "dumping"

    def on_line(line: str) -> None:
        m = _TABLE_RE.search(line)
        if m:
            progress.table = m.group(1)

    argv = [pg_dump, "--format=plain", "--verbose", "--no-password", "--lock-wait-timeout=60000"]
    encoding = ((recorded or {}).get("database") or {}).get("encoding")
    if encoding:  # the database's own (always ASCII-safe), whatever client_encoding a role or setting asks for
        argv.append(f"--encoding={encoding}")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=conn.child_env(), bufsize=0,  # raw pipe: read1 returns what is there
                            start_new_session=True)  # its own group: stopping it stops any helper too
    assert proc.stdout is not None and proc.stderr is not None
    lower_process(proc.pid)  # pg_dump yields the CPU to the web server (background.py)
    _widen_pipe(proc.stdout)
    errors = ProcessOutput(proc.stderr, conn.redact, on_line)
    scanner = DumpAnalyzer()
    reader = io.BufferedReader(proc.stdout, CHUNK)  # type: ignore[arg-type]
    done = threading.Event()
    threading.Thread(target=_kill_on_cancel, args=(proc, cancel, done), daemon=True).start()
    try:
        # no directory: the S3 sinks are the only copies (a backup written to S3 only), nothing local is kept
        with (storage.atomic_file(directory, backup_id) if directory is not None else nullcontext(_Discard())) as fh:
            out = _HashingFile(fh, sinks)
            writer = EncryptedWriter(out, key, fields)
            comp = compression.open_compressor(algorithm, writer, level, threads)
            try:
                while chunk := reader.read1(CHUNK):  # what the pipe holds: progress stays live
                    _read_dump(scanner, chunk)
                    comp.write(chunk)
                    progress.bytes_read = scanner.scanner.bytes
                    progress.bytes_written = out.size
                    if cancel.is_set():
                        raise Cancelled()
                if cancel.is_set():  # pg_dump was stopped while we waited for its output
                    raise Cancelled()
                comp.close()
            except BaseException:
                compression.discard(comp)  # stop the workers; what they made is thrown away with the file
                raise
            rc = proc.wait()
            errors.join()
            if rc != 0:
                raise ToolError(f"pg_dump failed (exit {rc}): {errors.errors()}")
            index = _read_dump(scanner, None)
            if not index.complete:
                raise ToolError("pg_dump's output ended without its completion marker; not a backup")
            progress.phase = "finishing"
            rows = scanner.rows_by_table()
            writer.finish({**(recorded or {}), "tableRowCounts": rows, "dumpBytes": index.dump_bytes,
                           "completedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "frames": {"size": compression.FRAME, "sizes": frame_sizes(comp.sizes)},
                           "index": index_to_json(index)})
            progress.bytes_written = out.size
    finally:
        done.set()
        _stop(proc)
        errors.join()
    return DumpResult(rows=rows, dump_bytes=index.dump_bytes, size=out.size,
                      sha256=out.sha.hexdigest(), header=writer.header, seconds=time.monotonic() - start)


def _read_dump(scanner: DumpAnalyzer, chunk: bytes | None) -> Any:
    """Feed the analyzer (None: the end); a dump it cannot read is not a backup the restore could use."""
    try:
        if chunk is None:
            return scanner.finish()
        scanner.feed(chunk)
        return None
    except DumpSyntaxError as exc:
        if "ended inside" in exc.message:
            raise ToolError("pg_dump's output ended without its completion marker; not a backup") from None
        raise ToolError(f"pg_dump's output could not be read as a dump ({exc.message}); no backup was "
                        "written") from None


def frame_sizes(sizes: array[int]) -> str:
    """Compressed frame sizes as the trailer stores them: little-endian uint32, base64."""
    data = array("I", sizes)
    if sys.byteorder == "big":
        data.byteswap()
    return base64.b64encode(data.tobytes()).decode()


def plaintext(opened: OpenedFile) -> Iterator[bytes]:
    """The decrypted, decompressed dump of an authenticated file."""
    return compression.decompress(str(opened.header.fields.get("compression")), opened.decrypt())


@dataclass(frozen=True)
class ScanResult:
    """What a full read of a backup's dump found."""

    rows: dict[str, int]
    dump_bytes: int
    complete: bool


def scan_dump(opened: OpenedFile, trailer: dict[str, Any], progress: Progress,
              cancel: threading.Event, out: IO[bytes] | None = None) -> ScanResult:
    """Decrypt and decompress the whole dump (optionally writing it out) and check it against its record.

    A version-2 file is read as a restore reads it (quote-aware, with its table of contents, which must
    match the trailer's index); a version-1 file as it was written, and its counts are names for people.
    """
    legacy = opened.header.version < 2 or "frames" not in trailer
    scanner: DumpScanner | DumpAnalyzer = DumpScanner(collect=False) if legacy else DumpAnalyzer()
    progress.phase = "decompressing"
    read = 0
    if legacy:
        pieces: Iterator[bytes] = plaintext(opened)
    else:  # frames decompressed side by side; every segment checked against the authenticated list
        from .randomread import RandomReader
        pieces = RandomReader(opened, trailer).frames_in_parallel(max(1, os.cpu_count() or 1))
    for piece in pieces:
        if legacy:
            scanner.feed(piece)
        else:
            _read_dump_checked(scanner, piece)  # type: ignore[arg-type]
        if out is not None:
            out.write(piece)
        read += len(piece)
        progress.bytes_read = read
        if cancel.is_set():
            raise Cancelled()
    if isinstance(scanner, DumpScanner):
        scanner.finish()
        rows, complete = dict(scanner.rows), scanner.complete
    else:
        index = _read_dump_checked(scanner, None)
        rows, complete = scanner.rows_by_table(), index.complete
        if "index" in trailer and index_to_json(index) != trailer["index"]:
            raise NotAuthentic()
    if not complete or read != trailer.get("dumpBytes") or rows != trailer.get("tableRowCounts"):
        raise NotAuthentic()
    return ScanResult(rows, read, complete)


def _read_dump_checked(scanner: DumpAnalyzer, chunk: bytes | None) -> Any:
    """Feed the analyzer while verifying: a dump it cannot read is not the one that was written."""
    try:
        return scanner.finish() if chunk is None else scanner.feed(chunk)
    except DumpSyntaxError:
        raise NotAuthentic() from None
