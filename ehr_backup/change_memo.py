"""Results read from the backups table, reused until the catalogue's change counter moves.

A page view asks for the same sums and newest rows as the view before it (storage per folder, the size
history of each database, each database's newest good and verified backup): with 10,000 backups those
queries cost tens of milliseconds each in SQLite, and their answers change only when a backup row does.
The counter is kept by SQLite triggers (db.py), so a change by any process (the CLI, a cron job) is seen
at the next read; the counter is read before the value is computed, so a change made meanwhile is never
hidden behind an older counter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 256  # keys are few (a handful per database); this only bounds a misuse


class Counted(Protocol):
    """Something with a change counter (the Catalogue)."""

    def changes(self) -> int: ...


class ChangeMemo:
    """Values keyed by name, each valid while the counter stays where it was when the value was made."""

    def __init__(self, source: Counted) -> None:
        self._source = source
        self._values: dict[Hashable, tuple[int, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value for `key`: the stored one if nothing changed since it was made, else computed now."""
        counter = self._source.changes()
        with self._lock:
            stored = self._values.get(key)
        if stored is not None and stored[0] == counter:
            return stored[1]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            if len(self._values) >= MAX_ENTRIES:
                self._values.clear()
            self._values[key] = (counter, value)
        return value
