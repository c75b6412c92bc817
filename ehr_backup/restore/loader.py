"""Load a plain dump into a database over several connections, in an order that respects dependencies.

The conductor (this module) reads the dump once, in order, and hands each entry to a worker connection
(`workers.py`) as `plan.py` allows: the schema one entry at a time, then table data side by side, then
indexes and constraints side by side, the rest in dump order. A version-2 file carries an index of its
pure data entries: those are read straight from the file by the workers (largest first), while the
conductor skips over them; older files stream their data through the conductor.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..dumpstream import DumpScanner
from ..dumptoc import DATA_TYPES, DataEntry, DumpIndex, TocEntry, TocReader
from ..errors import Cancelled, NotAuthentic
from ..pg import ConnInfo
from ..sqlscan import Comment, CopyData, CopyEnd, CopyStart, DumpSyntaxError, Meta, SqlScanner, Statement
from .plan import BARRIER, Kind, Ledger, Plan, plan_entry, session_key, split_foreign_key
from .workers import STREAM_DEPTH, Job, Loaded, State, Worker

STREAMED = {"TABLE DATA", "BLOBS", "LARGE OBJECTS"}  # entries that may be large: run as they are read
BUFFER_LIMIT = 8 * 1024 * 1024  # any other entry is read whole first, up to this size
RUN_BYTES = 8 * 1024 * 1024
BATCH_BYTES = 1024 * 1024  # small entries in dump order are run together, up to this size
BATCH_STATEMENTS = 2000
PENDING_BYTES = 64 * 1024 * 1024  # the SQL of entries read ahead and waiting: reading pauses beyond this  # small data entries next to each other are read by one worker in one go
JUMP_MIN = 4 * 1024 * 1024  # skip by re-reading the file from a later frame only when it saves this much


@dataclass
class LoadResult:
    """What a load did: every COPY with its counts, whether the dump was complete, its size."""

    loaded: list[Loaded] = field(default_factory=list)
    complete: bool = False
    dump_bytes: int = 0
    legacy_rows: dict[str, int] | None = None  # version-1 files: counts as their trailer recorded them
    seconds: float = 0.0


@dataclass
class _Entry:
    toc: TocEntry | None
    type: str | None
    job: Job | None = None
    buffered: list[bytes] | None = None
    decided: bool = False
    size: int = 0
    state: State | None = None  # the session settings in force at its first statement


class Loader:
    """Run one load; `load()` returns when every entry has been run, or raises the first failure."""

    def __init__(self, info: ConnInfo, *, jobs: int, cancel: threading.Event,
                 source: Callable[[int], Iterator[bytes]], index: DumpIndex | None = None,
                 legacy: bool = False, frame: int = 0, progress: Callable[[int], None] | None = None,
                 selected: Callable[[TocEntry | None, str | None], bool] | None = None) -> None:
        self._info = info
        self._n = max(1, jobs)
        self._user_cancel = cancel
        self._stop = threading.Event()
        self._source = source
        self._index = index
        self._frame = frame
        self._progress = progress
        self._legacy = DumpScanner(collect=False) if legacy else None
        self._done: queue.Queue[tuple[Job, BaseException | None]] = queue.Queue()
        self._workers: list[Worker] = []
        self._idle: list[Worker] = []
        self._busy: dict[int, tuple[Job, Worker]] = {}
        self._pending: list[tuple[Job, set[int]]] = []
        self._ledger = Ledger()
        self._state: dict[str, bytes] = {}
        self._numbers = 0
        self._entry: _Entry | None = None
        self._toc = TocReader()
        self._result = LoadResult()
        self._runs_started = False
        self._runs: dict[int, list[DataEntry]] = {}  # first TOC id of a run -> the run
        self._skip_until: int | None = None
        self._read = 0
        self._random_jobs: list[Job] = []
        self._selected = selected
        self._table_bytes: dict[Any, int] = {}
        self._checks: list[tuple[str, Plan, list[bytes]]] = []
        self._buffered = 0  # bytes of SQL held by pending jobs
        self._std_strings = True  # standard_conforming_strings as the dump set it, kept across jumps

    # ----- the whole load ---------------------------------------------------------------------------
    def load(self) -> LoadResult:
        """Read the dump and run it; on any failure stop every worker and raise."""
        started = time.monotonic()
        try:
            self._start_workers()
            offset: int | None = 0
            while offset is not None:
                offset = self._read_from(offset)
            self._finish_entry()
            self._flush_checks()
            while self._busy or self._pending:
                self._pump(block=True)
            self._result.complete = self._toc.complete
            if self._legacy is not None:
                self._legacy.finish()
                self._result.legacy_rows = dict(self._legacy.rows)
                self._result.complete = self._result.complete and self._legacy.complete
        except BaseException:
            self._abort()
            raise
        finally:
            self._shutdown()
        self._result.seconds = time.monotonic() - started
        return self._result

    def _read_from(self, offset: int) -> int | None:
        """Read the dump from offset; return where to continue after a jump, or None at its end."""
        scanner = SqlScanner(offset, std_strings=self._std_strings)
        for piece in self._source(offset):
            if self._user_cancel.is_set():
                raise Cancelled()
            self._read += len(piece)
            if self._legacy is not None:
                self._legacy.feed(piece)
            if self._progress:
                self._progress(self._read + sum(j.bytes_read for j in self._random_jobs))
            for ev in scanner.feed(piece):
                jump = self._event(ev)
                if jump is not None:
                    self._std_strings = scanner.std_strings  # the dump's SET, made before the jump, still holds
                    return jump
            self._pump(block=False)
        for ev in scanner.finish():
            self._event(ev)
        self._result.dump_bytes = scanner.bytes + offset
        return None

    # ----- events from the dump ---------------------------------------------------------------------
    def _event(self, ev: Any) -> int | None:
        if self._skip_until is not None:
            if not (isinstance(ev, Comment) and ev.offset >= self._skip_until):
                return None
            self._skip_until = None
        if isinstance(ev, Comment):
            was_complete = self._toc.complete
            entry = self._toc.comment(ev)
            if entry is not None:
                self._finish_entry()
                return self._start_entry(entry)
            if self._toc.complete and not was_complete:
                self._finish_entry()
            return None
        if isinstance(ev, Meta):
            if ev.line.startswith((b"\\restrict ", b"\\unrestrict ")):
                return None  # psql's guard against commands planted in a dump; we run none anyway
            raise DumpSyntaxError("a psql command other than \\restrict")
        if self._toc.complete:
            raise DumpSyntaxError("statements after the end of the dump")
        if isinstance(ev, Statement):
            self._toc.statement_seen()
            self._statement(ev.sql)
        elif isinstance(ev, CopyStart):
            self._toc.statement_seen()
            self._op(("copy", ev.sql, ev.target), copy_target=True)
        elif isinstance(ev, CopyData):
            self._op(("data", ev.data))
        elif isinstance(ev, CopyEnd):
            self._op(("end", ev.rows))
        return None

    def _statement(self, sql: bytes) -> None:
        key = session_key(sql)
        if self._entry is None and key is not None:
            self._state[key] = sql  # the preamble's settings: every worker applies them before its entries
            return
        if self._entry is None:
            self._entry = _Entry(None, None)
        self._decide(self._entry)
        if key is None and self._entry.state is None:
            # pg_dump writes the settings an entry needs before its header: what is in force at its
            # first statement is its state (settings after that are for the entries that follow)
            self._entry.state = self._snapshot()
        if self._entry.buffered is not None:
            self._entry.buffered.append(sql)
            self._entry.size += len(sql)
            if self._entry.size > BUFFER_LIMIT:  # a big entry (a large function, say): in dump order
                earlier, self._entry.buffered = self._entry.buffered, None
                self._stream_job(self._entry, BARRIER)
                assert self._entry.job is not None
                for stmt in earlier:
                    self._send(self._entry.job, ("stmt", stmt))
        else:
            self._op(("stmt", sql))
        if key is not None:
            self._state[key] = sql

    def _op(self, op: tuple[Any, ...], copy_target: bool = False) -> None:
        entry = self._entry
        if entry is None:
            entry = self._entry = _Entry(None, None)
        self._decide(entry)
        if entry.buffered is not None:  # a COPY in an entry of a parallel kind: run it in dump order
            earlier, entry.buffered = entry.buffered, None
            self._stream_job(entry, BARRIER)
            assert entry.job is not None
            for sql in earlier:
                self._send(entry.job, ("stmt", sql))
        if entry.job is None:
            self._stream_job(entry, Plan(Kind.DATA) if entry.type in DATA_TYPES else BARRIER)
        assert entry.job is not None and entry.job.stream is not None
        self._send(entry.job, op)

    def _start_entry(self, toc: TocEntry) -> int | None:
        run = self._runs_for(toc)
        if run is not None:
            if not self._runs_started:
                self._start_runs()
            self._skip_until = run[-1].end
            self._entry = None
            if run[-1].end - toc.offset >= JUMP_MIN:
                return run[-1].end
            return None
        self._entry = _Entry(toc, None)
        return None

    def _decide(self, entry: _Entry) -> None:
        """At an entry's first statement (its header has been read by then): buffer it to run beside
        others, or stream it in dump order."""
        if entry.decided:
            return
        entry.decided = True
        toc = entry.toc
        entry.type = toc.type if toc else None
        if toc is not None and toc.type not in STREAMED:
            entry.buffered = []  # small: read it whole, so that the dump can be read on while it waits

    def _finish_entry(self) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        if entry.job is not None:
            self._send(entry.job, None)
            return
        if entry.buffered is None or not entry.buffered:
            return
        plain = [s for s in entry.buffered if session_key(s) is None]
        toc = entry.toc
        plan = plan_entry(entry.type, plain, None, toc.deps if toc else ())
        split = split_foreign_key(plain[0]) if entry.type == "FK CONSTRAINT" and len(plain) == 1 else None
        statements = entry.buffered if split is None else [s if s is not plain[0] else split[0]
                                                          for s in entry.buffered]
        self._queue(_label(toc), plan, toc, statements, keep_checks=split is not None, state=entry.state)
        if split is not None:
            # the check itself, beside the checks of other foreign keys; queued after the run of foreign
            # keys, since adding the next one must not wait for this check's lock on their common table
            check = Plan(Kind.POST, _referencing(plan, plain[0]), after_data=True)
            self._checks.append((_label(toc) + " (validation)", check, [split[1]]))
        self._pump(block=False)

    def _queue(self, label: str, plan: Plan, toc: TocEntry | None, statements: list[bytes],
               keep_checks: bool = False, state: State | None = None) -> None:
        if not keep_checks:
            self._flush_checks()
        size = sum(len(x) for x in statements)
        last = self._pending[-1][0] if self._pending else None
        if (plan.kind in (Kind.BARRIER, Kind.DEPENDENT) and last is not None and last.plan.kind == Kind.BARRIER
                and last.number == self._numbers and last.size + size <= BATCH_BYTES
                and len(last.statements) + len(statements) <= BATCH_STATEMENTS):
            # the next in a run of small entries that go in dump order anyway (a million large objects,
            # say): onto the end of the waiting batch, run in one session as psql would run them
            last.statements.extend(statements)
            last.size += size
            self._buffered += size
            if toc is not None:
                self._ledger.by_toc[toc.toc_id] = last.number
            return
        job = self._new_job(label, plan, toc, state)
        job.statements = statements
        job.size = size
        self._buffered += size
        self._pending.append((job, self._ledger.waits_for(plan)))
        self._register(job, plan)
        while self._buffered > PENDING_BYTES and self._pending:  # memory: let the waiting work run first
            self._pump(block=True)

    # ----- version-2 files: data entries read by the workers themselves -----------------------------
    def _runs_for(self, toc: TocEntry) -> list[DataEntry] | None:
        if self._index is None:
            return None
        if not self._runs:
            self._runs = _group_runs(self._index.data)
        run = self._runs.get(toc.toc_id)
        if run is not None and run[0].start != toc.offset:
            raise NotAuthentic()
        return run

    def _start_runs(self) -> None:
        self._runs_started = True
        for run in sorted(self._runs.values(), key=lambda r: -sum(d.bytes for d in r)):
            plan = Plan(Kind.DATA, frozenset(d.target for d in run))
            job = self._new_job(", ".join(f"data of {d.target.text()}" for d in run[:3])
                                + (" …" if len(run) > 3 else ""), plan, None)
            job.ranges = run
            self._random_jobs.append(job)
            self._pending.append((job, self._ledger.waits_for(plan)))
            self._register(job, plan)
            for d in run:
                self._ledger.by_toc[d.toc_id] = job.number
        self._pump(block=False)

    # ----- jobs -------------------------------------------------------------------------------------
    def _flush_checks(self) -> None:
        """Queue the foreign-key checks held back (before any entry that is not a foreign key)."""
        checks, self._checks = self._checks, []
        for label, plan, statements in checks:
            self._queue(label, plan, None, statements, keep_checks=True)

    def _new_job(self, label: str, plan: Plan, toc: TocEntry | None, state: State | None = None) -> Job:
        self._numbers += 1
        return Job(self._numbers, label, plan, state if state is not None else self._snapshot(),
                   toc.toc_id if toc else None)

    def _snapshot(self) -> State:
        return tuple(self._state.items())

    def _register(self, job: Job, plan: Plan) -> None:
        self._ledger.running[job.number] = plan
        if job.toc_id is not None:
            self._ledger.by_toc[job.toc_id] = job.number

    def _stream_job(self, entry: _Entry, plan: Plan) -> None:
        """Start a streamed entry now (it needs a worker at once: its text is still arriving)."""
        self._flush_checks()
        job = self._new_job(_label(entry.toc), plan, entry.toc, entry.state)
        job.stream = queue.Queue(STREAM_DEPTH)
        waits = self._ledger.waits_for(plan)
        self._register(job, plan)
        entry.job = job
        while (waits & self._ledger.running.keys()) or not self._idle or self._blocked_by_pending():
            self._pump(block=True)
        self._assign(job)

    def _blocked_by_pending(self) -> bool:
        """Earlier entries still waiting go first (dump order among entries that are ready)."""
        return any(not (w & self._ledger.running.keys()) for _, w in self._pending)

    def _send(self, job: Job, op: Any) -> None:
        assert job.stream is not None
        while True:
            try:
                job.stream.put(op, timeout=0.2)
                return
            except queue.Full:
                self._check_done()

    def _check_done(self) -> None:
        """Take finished jobs without waiting (a failure elsewhere must not leave us blocked)."""
        while True:
            try:
                job, exc = self._done.get_nowait()
            except queue.Empty:
                return
            self._finished(job, exc)
            if self._user_cancel.is_set():
                raise Cancelled()

    def _pump(self, *, block: bool) -> None:
        """Collect finished jobs, then start every pending job that may run on an idle worker."""
        if block:
            try:
                job, exc = self._done.get(timeout=0.2)
                self._finished(job, exc)
            except queue.Empty:
                pass
        self._check_done()
        if self._user_cancel.is_set():
            raise Cancelled()
        ready = [item for item in self._pending if not (item[1] & self._ledger.running.keys())]
        # the work on the biggest tables first: it is the longest chain (load, key, indexes, foreign keys)
        ready.sort(key=lambda item: -self._weight(item[0]))
        for item in ready:
            if not self._idle:
                break
            self._pending.remove(item)
            self._assign(item[0])

    def _weight(self, job: Job) -> int:
        """How much data the tables a job works on hold (from a version-2 file's index; 0 otherwise)."""
        if self._index is None:
            return 0
        if not self._table_bytes:
            for d in self._index.data:
                self._table_bytes[d.target] = self._table_bytes.get(d.target, 0) + d.bytes
        return sum(self._table_bytes.get(t, 0) for t in job.plan.locks)

    def _assign(self, job: Job) -> None:
        self._buffered -= job.size
        worker = self._idle.pop()
        self._busy[job.number] = (job, worker)
        worker.inbox.put(job)

    def _finished(self, job: Job, exc: BaseException | None) -> None:
        _, worker = self._busy.pop(job.number)
        self._ledger.running.pop(job.number, None)
        if exc is not None:
            raise exc
        self._idle.append(worker)
        self._result.loaded.extend(job.loaded)

    # ----- workers ----------------------------------------------------------------------------------
    def _start_workers(self) -> None:
        reader = self._source if self._index is not None else None
        for i in range(self._n):
            w = Worker(i, self._info, self._done, self._stop, reader)
            w.start()
            self._workers.append(w)
        for w in self._workers:
            w.ready.wait()
        failed = next((w.error for w in self._workers if w.error is not None), None)
        if failed is not None:
            raise failed
        self._idle = list(reversed(self._workers))

    def _abort(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.interrupt()
        for job, _ in self._busy.values():
            if job.stream is not None:
                try:
                    job.stream.put_nowait(None)
                except queue.Full:
                    pass

    def _shutdown(self) -> None:
        for w in self._workers:
            w.inbox.put(None)
        deadline = time.monotonic() + 30
        for w in self._workers:
            w.join(timeout=max(0.1, deadline - time.monotonic()))


def _referencing(plan: Plan, sql: bytes) -> frozenset[Any]:
    """The table a foreign key is on (the one its validation locks)."""
    from .plan import _ALTER, _unqualified

    m = _ALTER.match(sql)
    return frozenset([_unqualified(m.group(1))]) if m else plan.locks


def _label(toc: TocEntry | None) -> str:
    if toc is None:
        return "the statements before the first entry"
    return f"entry {toc.toc_id} ({toc.type or 'unknown'}: {toc.label[:120]})"


def _group_runs(data: list[DataEntry]) -> dict[int, list[DataEntry]]:
    """Group consecutive small data entries so that one worker reads them in one pass."""
    runs: list[list[DataEntry]] = []
    for d in sorted(data, key=lambda d: d.start):
        last = runs[-1] if runs else None
        if (last is not None and last[-1].end == d.start and d.bytes < RUN_BYTES
                and sum(x.bytes for x in last) + d.bytes <= RUN_BYTES):
            last.append(d)
        else:
            runs.append([d])
    return {run[0].toc_id: run for run in runs}
