"""The streams: pg_dump → compress → encrypt → file, and file → authenticate → decrypt → psql."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import compression, storage
from .dumpstream import DumpScanner
from .errors import Cancelled, NotAuthentic, ToolError
from .fileformat import EncryptedWriter, OpenedFile
from .keys import MasterKey
from .pg import ConnInfo, ProcessOutput

CHUNK = 1024 * 1024
F_SETPIPE_SZ = 1031
_TABLE_RE = re.compile(r'pg_dump: (?:dumping contents of table|processing data for table) "?([^"]+)"?')

# Run first in the restore transaction: remove everything the dump does not bring back, so that the
# database ends up holding exactly the backup (objects made after it do not survive).
# The transaction is opened here and committed only by COMMIT_SQL, written after the whole stream has
# been checked. Not `psql --single-transaction`: that commits whenever its input ends, so a restore
# whose feeder died half-way (killed, crashed) would commit half a database.
RESET_SQL = r"""
BEGIN;
DO $ehr_backup_reset$
DECLARE r record;
BEGIN
  FOR r IN SELECT evtname FROM pg_event_trigger LOOP
    EXECUTE format('DROP EVENT TRIGGER %I', r.evtname);
  END LOOP;
  FOR r IN SELECT pubname FROM pg_publication LOOP
    EXECUTE format('DROP PUBLICATION %I', r.pubname);
  END LOOP;
  FOR r IN SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' LOOP
    EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
  END LOOP;
  FOR r IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
             AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT srvname FROM pg_foreign_server LOOP
    EXECUTE format('DROP SERVER IF EXISTS %I CASCADE', r.srvname);
  END LOOP;
  FOR r IN SELECT fdwname FROM pg_foreign_data_wrapper LOOP
    EXECUTE format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', r.fdwname);
  END LOOP;
  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;
END
$ehr_backup_reset$;
CREATE SCHEMA public;
ALTER SCHEMA public OWNER TO pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'standard public schema';
"""
COMMIT_SQL = b"\nCOMMIT;\n"


@dataclass
class Progress:
    """Live state of a job, read by the UI and the CLI while the job thread updates it."""

    phase: str = "starting"
    table: str = ""
    bytes_read: int = 0
    bytes_written: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {"phase": self.phase, "table": self.table, "bytesRead": self.bytes_read,
                "bytesWritten": self.bytes_written, "total": self.total,
                "elapsed": round(time.monotonic() - self.started, 1)}


@dataclass(frozen=True)
class DumpResult:
    """What a finished backup file holds."""

    rows: dict[str, int]
    dump_bytes: int
    size: int
    sha256: str
    header: dict[str, Any]
    seconds: float


class _HashingFile:
    """Count and hash what is written to the file beneath."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._fh.write(data)


def _widen_pipe(stream: IO[bytes]) -> None:
    try:
        fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # a smaller pipe only means more, smaller reads


class _Feeder:
    """Write to a child's stdin on a thread of its own, so that decrypting and decompressing go on
    while psql is busy; a few chunks are queued at most."""

    def __init__(self, stream: IO[bytes], depth: int = 8) -> None:
        self._stream = stream
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="psql-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._stream.write(item)
                except BaseException as exc:  # noqa: BLE001 - handed to the producer; keep draining
                    self.error = exc

    def put(self, data: bytes | memoryview) -> None:
        """Queue data for the child; raise the writer's error if it failed."""
        if self.error is not None:
            raise self.error
        self._queue.put(data)

    def finish(self) -> None:
        """Wait until everything queued was written; raise the writer's error if it failed."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


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


def run_backup(*, conn: ConnInfo, pg_dump: str, directory: Path, backup_id: str, key: MasterKey,
               fields: dict[str, Any], algorithm: str, level: int, threads: int, progress: Progress,
               cancel: threading.Event) -> DumpResult:
    """Stream pg_dump into an authenticated, compressed file; nothing remains unless all succeeded."""
    start = time.monotonic()
    progress.phase = "dumping"

    def on_line(line: str) -> None:
        m = _TABLE_RE.search(line)
        if m:
            progress.table = m.group(1)

    argv = [pg_dump, "--format=plain", "--verbose", "--no-password", "--lock-wait-timeout=60000"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=conn.child_env(), bufsize=0,  # raw pipe: read1 returns what is there
                            start_new_session=True)  # its own group: stopping it stops any helper too
    assert proc.stdout is not None and proc.stderr is not None
    _widen_pipe(proc.stdout)
    errors = ProcessOutput(proc.stderr, conn.redact, on_line)
    scanner = DumpScanner(collect=False)
    reader = io.BufferedReader(proc.stdout, CHUNK)  # type: ignore[arg-type]
    done = threading.Event()
    threading.Thread(target=_kill_on_cancel, args=(proc, cancel, done), daemon=True).start()
    try:
        with storage.atomic_file(directory, backup_id) as fh:
            out = _HashingFile(fh)
            writer = EncryptedWriter(out, key, fields)
            comp = compression.open_compressor(algorithm, writer, level, threads)
            try:
                while chunk := reader.read1(CHUNK):  # what the pipe holds: progress stays live
                    scanner.feed(chunk)
                    comp.write(chunk)
                    progress.bytes_read = scanner.bytes
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
            scanner.finish()
            if not scanner.complete:
                raise ToolError("pg_dump's output ended without its completion marker; not a backup")
            progress.phase = "finishing"
            writer.finish({"tableRowCounts": scanner.rows, "dumpBytes": scanner.bytes,
                           "completedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            progress.bytes_written = out.size
    finally:
        done.set()
        _stop(proc)
        errors.join()
    return DumpResult(rows=dict(scanner.rows), dump_bytes=scanner.bytes, size=out.size,
                      sha256=out.sha.hexdigest(), header=writer.header, seconds=time.monotonic() - start)


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
    """Decrypt and decompress the whole dump (optionally writing it out) and check it against its record."""
    scanner = DumpScanner(collect=False)
    progress.phase = "decompressing"
    for piece in plaintext(opened):
        scanner.feed(piece)
        if out is not None:
            out.write(piece)
        progress.bytes_read = scanner.bytes
        if cancel.is_set():
            raise Cancelled()
    scanner.finish()
    _check_against_trailer(scanner, trailer)
    return ScanResult(dict(scanner.rows), scanner.bytes, scanner.complete)


def _check_against_trailer(scanner: DumpScanner, trailer: dict[str, Any]) -> None:
    if (not scanner.complete or scanner.bytes != trailer.get("dumpBytes")
            or scanner.rows != trailer.get("tableRowCounts")):
        raise NotAuthentic()


def run_restore(*, opened: OpenedFile, trailer: dict[str, Any], conn: ConnInfo, psql: str,
                progress: Progress, cancel: threading.Event) -> dict[str, int]:
    """Feed an authenticated file to psql in one transaction; on any failure nothing is committed.

    The transaction is opened by the first statement and committed only when everything has been sent
    and checked: if this process dies half-way, psql reads end-of-input without COMMIT and the server
    rolls back.

    Returns the row counts the dump carried.
    """
    progress.phase = "restoring"
    progress.total = int(trailer.get("dumpBytes") or 0) or None
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-f", "-"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=conn.child_env(), start_new_session=True)
    assert proc.stdin is not None and proc.stderr is not None
    _widen_pipe(proc.stdin)
    errors = ProcessOutput(proc.stderr, conn.redact)
    scanner = DumpScanner(strip_blob_transaction=True)
    feeder = _Feeder(proc.stdin)
    committed = False
    try:
        try:
            feeder.put(RESET_SQL.encode())
            for piece in plaintext(opened):
                for part in scanner.feed(piece):
                    feeder.put(part)
                progress.bytes_read = scanner.bytes
                if cancel.is_set():
                    raise Cancelled()
            for part in scanner.finish():
                feeder.put(part)
            _check_against_trailer(scanner, trailer)
            progress.phase = "committing"
            feeder.put(COMMIT_SQL)  # only now: everything was sent and checked
            feeder.finish()
            proc.stdin.close()
        except BrokenPipeError:
            _stop(proc)
            errors.join()
            raise ToolError(f"psql stopped: {errors.errors()}; nothing was committed") from None
        committed = True
        rc = proc.wait()
        errors.join()
        if rc != 0:
            raise ToolError(f"psql failed (exit {rc}): {errors.errors()}; nothing was committed")
    finally:
        if not committed:
            _stop(proc)  # killed before COMMIT was sent: the transaction is rolled back
            try:
                feeder.finish()
            except BaseException:  # noqa: BLE001 - the child is gone; its write error is expected
                pass
            try:
                proc.stdin.close()
            except OSError:
                pass
        errors.join()
    return dict(scanner.rows)
