"""The catalogue rebuild as a job: progress in files and bytes read of the total, and Cancel between reads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

from .errors import Cancelled
from .pipeline import Progress
from .rebuild_source import Entry

STOPPED = "cancelled while reading the backup files: nothing was changed"


@dataclass
class RebuildProgress(Progress):
    """A job's progress plus the files: how many were read of how many found."""

    files: int = 0
    files_total: int | None = None

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """The snapshot of Progress with `files` and `filesTotal`."""
        return {**super().as_dict(now), "files": self.files, "filesTotal": self.files_total}


class _Watched:
    """A file that counts what is read from it and stops (Cancelled) at the next read once cancelled."""

    def __init__(self, fh: IO[bytes], on_read: Callable[[int], None], cancel: threading.Event) -> None:
        self._fh = fh
        self._on_read = on_read
        self._cancel = cancel

    def read(self, n: int = -1) -> bytes:
        """Read from the file unless cancelled (a 1 MiB piece at a time while authenticating)."""
        if self._cancel.is_set():
            raise Cancelled(STOPPED)
        data = self._fh.read(n)
        self._on_read(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        """As the file's seek."""
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        """As the file's tell."""
        return self._fh.tell()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


class Reading:
    """Follows the reading of the files found: bytes of finished files plus the share read of the current one."""

    def __init__(self, progress: RebuildProgress, cancel: threading.Event) -> None:
        self.progress = progress
        self.cancel = cancel
        self._done = 0  # bytes of the files already read

    def watched(self, entry: Entry) -> Entry:
        """The entry whose file counts its reads into the progress and stops when cancelled."""
        current = [0]

        def on_read(n: int) -> None:
            # the header and footer are read before the one sequential pass: never count past the file's size
            current[0] = min(entry.size, current[0] + n)
            self.progress.bytes_read = self._done + current[0]

        def open_binary() -> IO[bytes]:
            if self.cancel.is_set():
                raise Cancelled(STOPPED)
            return cast(IO[bytes], _Watched(entry.open_binary(), on_read, self.cancel))

        return Entry(entry.name, entry.size, open_binary)

    def finished(self, entry: Entry) -> None:
        """One more file read (or refused, or skipped): the counts move to its end."""
        self._done += entry.size
        self.progress.files += 1
        self.progress.bytes_read = self._done
        if self.cancel.is_set():  # a read cut short is no finding: nothing of this run is applied
            raise Cancelled(STOPPED)
