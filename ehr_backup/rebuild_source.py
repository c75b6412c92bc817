"""What a catalogue rebuild reads: sources of backup files, each yielding (name, size, open_binary()).

A source is one place backups are stored: a local folder here; an S3 destination plugs in by offering
the same three things (see `Source`). The rebuild core (rebuild.py) never touches a path itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from . import safedir, storage
from .errors import BackupError
from .storage import SIDECAR_SUFFIX

MAX_SIDECAR = 64 * 1024


@dataclass(frozen=True)
class Entry:
    """One backup file in a source: its name (the backup id), its size, and how to open it.

    open_binary() returns a readable, seekable binary file (closed by the caller): the rebuild reads
    the header, seeks to the footer, then reads the whole file once, in order, to authenticate it.
    """

    name: str
    size: int
    open_binary: Callable[[], IO[bytes]]


class Source(Protocol):
    """A place backup files are stored, as the rebuild sees it.

    `location` and `directory` are what the catalogue records for the files found here
    (BackupRecord.location / .directory; for S3, say, the destination's name and `s3://bucket/prefix`).
    """

    location: str
    directory: str

    def entries(self) -> Iterator[Entry]:
        """Every backup file here (names that are backup ids; never sidecars or temporary files)."""
        ...

    def read_sidecar(self, name: str) -> bytes | None:
        """The bytes of `<name>.verified` (at most MAX_SIDECAR), or None when there is none."""
        ...


class LocalFolder:
    """A local location's folder: regular files only, never through a symbolic link."""

    def __init__(self, location: str, directory: Path) -> None:
        self.location = location
        self.directory = str(directory)
        self._path = directory

    def entries(self) -> Iterator[Entry]:
        """Backup files directly in the folder (none when it is gone or became a link)."""
        for path in storage.scan(self._path):
            try:
                size = os.lstat(path).st_size
            except OSError:
                continue  # deleted between the scan and now
            yield Entry(path.name, size, _opener(self._path, path.name))

    def read_sidecar(self, name: str) -> bytes | None:
        """The sidecar beside a backup, read without following links; None when absent or unreadable."""
        try:
            with safedir.opened(self._path) as dir_fd:
                fd = os.open(name + SIDECAR_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dir_fd)
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        return None
                    return os.read(fd, MAX_SIDECAR + 1)
                finally:
                    os.close(fd)
        except (OSError, BackupError):
            return None


def _opener(directory: Path, name: str) -> Callable[[], IO[bytes]]:
    return lambda: storage.open_in(directory, name)
