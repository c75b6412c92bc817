"""One backup or restore at a time per database, across threads and processes (flock)."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import Busy

if TYPE_CHECKING:
    from .config import Settings


class DatabaseLock:
    """An exclusive, non-blocking lock on one database; acquire() raises Busy when it is taken.

    A lock may be acquired on one thread and released on another (a web request reserves the
    database, the job thread releases it when done).
    """

    def __init__(self, lock_dir: Path, database_key: str, *, remove_on_release: bool = False,
                 shared: bool = False, noun: str = "database") -> None:
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = lock_dir / (hashlib.sha256(database_key.encode()).hexdigest()[:24] + ".lock")
        self._fd: int | None = None
        self._remove = remove_on_release
        self._shared = shared  # shared holders (readers of a backup) exclude only an exclusive one
        self._noun = noun

    def acquire(self, what: str) -> DatabaseLock:
        """Take the lock or raise Busy naming what holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self._shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another operation"
            os.close(fd)
            raise Busy(f"{self._noun} is busy: {holder} is running; try again when it has finished") from None
        if not self._shared:
            os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()})".encode().ljust(200), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if not self._shared:
                os.ftruncate(fd, 0)
            if self._remove:
                self.path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def held_elsewhere(self) -> bool:
        """Whether another thread or process holds this lock now (probes without keeping it)."""
        try:
            self.acquire("a start-up check")
        except Busy:
            return True
        self.release()
        return False


def lock_for(settings: Settings, lock_dir: Path, key: str, *, remove_on_release: bool = False,
             shared: bool = False, noun: str = "database") -> DatabaseLock:
    """A flock file under lock_dir, or with PostgreSQL metadata an advisory lock every instance sees."""
    if settings.metadata_url:
        from .pglocks import AdvisoryLock  # only with PostgreSQL metadata

        try:
            where = lock_dir.relative_to(settings.data_dir).as_posix()  # the same name on every instance
        except ValueError:
            where = lock_dir.as_posix()
        return AdvisoryLock(settings.metadata_url, f"{where}/{key}", shared=shared, noun=noun)
    return DatabaseLock(lock_dir, key, remove_on_release=remove_on_release, shared=shared, noun=noun)
