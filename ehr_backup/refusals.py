"""Bounded bookkeeping of refused requests: audit entries aggregated per minute, failure counters.

A client hammering the API anonymously used to write one audit entry per request (~150 a second, a full
disk within days, and then every action stops). `RefusalAudit` writes the first refusal of a kind
(address, actor, action, reason, outcome) at once and only counts the repeats of the next minute; when that
minute is over, one more entry says how many there were. The audit log stays append-only and its
counts stay exact: every refusal is either an entry of its own or counted in the entry that follows.
Counts still pending are written by `flush` (called periodically and at shutdown).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .audit import Actor, AuditLog
from .errors import BackupError

WINDOW_SECONDS = 60.0
MAX_KEYS = 1000  # distinct (address, actor, action, reason, outcome) windows open at once; more fold into one
REPEAT_RE = re.compile(r"repeated (\d+) more times")


def refusals_in(detail: str) -> int:
    """How many refusals a refused entry stands for: the count of a summary entry, else 1."""
    found = REPEAT_RE.search(detail)
    return int(found.group(1)) if found else 1


@dataclass
class _Window:
    actor: Actor
    action: str
    target: str
    reason: str
    outcome: str
    opened: float
    opened_wall: datetime
    repeated: int = 0


class RefusalAudit:
    """Audit refused requests with at most one entry per kind and minute, counts carried forward."""

    def __init__(self, audit: AuditLog, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._audit = audit
        self._window = window
        self._clock = clock
        self._open: OrderedDict[tuple[str, str, str, str, str], _Window] = OrderedDict()
        self._unwritten: list[_Window] = []  # closed windows whose count could not be written yet
        self._lock = threading.Lock()

    def record(self, actor: Actor, action: str, target: str, reason: str, outcome: str = "refused") -> None:
        """Audit one refusal (blocking: call off the event loop); raises AuditError like AuditLog.record."""
        now = self._clock()
        key = (actor.address, actor.name, action, reason, outcome)
        with self._lock:
            due = self._take_due(now)
            window = self._open.get(key)
            if window is not None:
                window.repeated += 1
                window.target = target
                write_first = False
            else:
                if len(self._open) >= MAX_KEYS:  # many addresses at once: one shared window per reason
                    actor, key = Actor("(many)", "", actor.is_admin), ("", "(many)", action, reason, outcome)
                    window = self._open.get(key)
                if window is not None:
                    window.repeated += 1
                    write_first = False
                else:
                    self._open[key] = _Window(actor, action, target, reason, outcome, now, datetime.now(UTC))
                    write_first = True
        self._write_summaries(due)
        if write_first:
            self._audit.record(actor, action, target, outcome, reason)

    def flush(self, *, everything: bool = False) -> None:
        """Write the counts of windows that are over (all of them when `everything`, e.g. at shutdown)."""
        with self._lock:
            if everything:
                due, self._open = list(self._open.values()), OrderedDict()
            else:
                due = self._take_due(self._clock())
        self._write_summaries(due)

    def _take_due(self, now: float) -> list[_Window]:
        due = []
        while self._open:
            key, window = next(iter(self._open.items()))
            if now - window.opened < self._window:
                break
            del self._open[key]
            due.append(window)
        return due

    def _write_summaries(self, windows: list[_Window]) -> None:
        with self._lock:
            todo = self._unwritten + [w for w in windows if w.repeated]
            self._unwritten = []
        for n, w in enumerate(todo):
            try:
                self._audit.record(w.actor, w.action, w.target, w.outcome,
                                   f"{w.reason} (repeated {w.repeated} more times in the minute after "
                                   f"{w.opened_wall:%Y-%m-%d %H:%M:%S} UTC)")
            except BackupError:
                with self._lock:  # keep the counts for the next flush
                    self._unwritten = todo[n:] + self._unwritten
                raise


class FailureCounter:
    """Failures per key within a sliding window, in memory, with bounded size."""

    def __init__(self, window: float, limit: int, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._limit = limit
        self._max_keys = max_keys
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        """Count one failure for key."""
        with self._lock:
            hits = self._hits.pop(key, None) or deque(maxlen=self._limit)
            hits.append(self._clock())
            self._hits[key] = hits
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)

    def exceeded(self, key: str) -> bool:
        """Whether key has reached the limit within the window."""
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                return False
            while hits and now - hits[0] > self._window:
                hits.popleft()
            return len(hits) >= self._limit
