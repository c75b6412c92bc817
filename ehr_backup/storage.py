"""Backup locations, backup ids, and file operations inside a location through its directory handle."""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import platformdirs

from . import paths, safedir
from .config import SUBDIR
from .errors import BackupError, InvalidInput, NotFound, StorageError

LOCATIONS = {"default": "Default", "desktop": "Desktop", "documents": "Documents",
             "downloads": "Downloads", "custom": "Custom"}
ID_RE = re.compile(r"^backup_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z(?:_[A-Za-z0-9_-]{1,100})?"
                   r"\.sql\.(?:gz|zst)\.enc$")
TEMP_PREFIX = ".ehr-backup-partial-"
SIDECAR_SUFFIX = ".verified"  # `<backup id>.verified` beside a backup: its last verification (verified_sidecar.py)
MAX_ID = 200


@dataclass(frozen=True)
class Location:
    """A place backups are written to: a key, a label and a directory."""

    key: str
    label: str
    path: Path


def standard_locations(default_dir: Path) -> list[Location]:
    """The four built-in locations; Desktop, Documents and Downloads follow the user's folders."""
    return [
        Location("default", "Default", default_dir),
        Location("desktop", "Desktop", Path(platformdirs.user_desktop_dir()) / SUBDIR),
        Location("documents", "Documents", Path(platformdirs.user_documents_dir()) / SUBDIR),
        Location("downloads", "Downloads", Path(platformdirs.user_downloads_dir()) / SUBDIR),
    ]


def validate_custom(text: str, forbidden: list[Path], roots: tuple[Path, ...]) -> Path:
    """Validate a custom location; create its last folder (0700) if missing; return it or say why not."""
    path = paths.check_custom(text, forbidden, roots)
    with safedir.opened(path, create=True, private=True) as fd:
        _probe(fd, path)
    return path


def ensure_dir(path: Path) -> None:
    """Create a standard location's directory (mode 0700) with its parents; explain failures."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise StorageError(f"{path} is not a directory")


def _probe(dir_fd: int, path: Path) -> None:
    """Prove the directory accepts a new file."""
    probe = f"{TEMP_PREFIX}probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd))
        os.unlink(probe, dir_fd=dir_fd)
    except OSError as exc:
        raise StorageError(f"{path} is not writable: {exc.strerror or exc}") from None


def is_writable(path: Path) -> bool:
    """Whether a new file could be created in path (without creating anything)."""
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def free_bytes(path: Path) -> int | None:
    """Free space at path or at its nearest existing parent."""
    probe = path
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def slugify(description: str) -> str:
    """The file-name part made from a description: lower-case letters, digits and underscores."""
    slug = re.sub(r"[^a-z0-9]+", "_", description.lower()).strip("_")[:60].strip("_")
    return slug or "backup"


def make_id(created: datetime, description: str, compression_ext: str) -> str:
    """A backup id in the product's file-name form."""
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%S-") + \
        f"{created.microsecond // 1000:03d}Z"
    return f"backup_{stamp}_{slugify(description)}.sql.{compression_ext}.enc"


def validate_id(backup_id: str) -> str:
    """Reject anything that is not a backup id (traversal, absolute paths, NUL, oversized)."""
    if not isinstance(backup_id, str) or len(backup_id) > MAX_ID or not ID_RE.fullmatch(backup_id):
        raise InvalidInput("invalid backup id")
    return backup_id


def scan(directory: Path) -> Iterator[Path]:
    """Regular backup files (not symlinks) directly inside a directory (none if it became a link)."""
    try:
        with safedir.opened(directory) as fd:
            entries = [e.name for e in os.scandir(fd)
                       if ID_RE.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except (BackupError, OSError):
        return
    for name in entries:
        yield directory / name


def temp_owner(temp_name: str) -> str:
    """The final name a temporary file was being written for."""
    return temp_name[len(TEMP_PREFIX):].rsplit(".", 1)[0]


def remove_leftovers(directory: Path, live: Callable[[str], bool] = lambda _name: False) -> int:
    """Delete temporary files a crashed backup left behind (not those of live jobs); return how many."""
    removed = 0
    try:
        with safedir.opened(directory) as fd:
            for entry in list(os.scandir(fd)):
                if (entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False)
                        and not live(temp_owner(entry.name))):
                    try:
                        os.unlink(entry.name, dir_fd=fd)
                        removed += 1
                    except OSError:
                        pass
    except (BackupError, OSError):
        pass  # a location that is gone or became a link holds nothing of ours to clean
    return removed


def _temp_name(name: str) -> str:
    # bounded in bytes: the whole name must stay within the file system's 255
    stem = name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")
    return f"{TEMP_PREFIX}{stem}.{secrets.token_hex(8)}"


def _publish(dir_fd: int, tmp: str, name: str) -> None:
    """Give the finished temporary file its final name, never replacing an existing file."""
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise StorageError(f"a file named {name} already exists") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) or safedir.exists_in(dir_fd, name):
            raise
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # file systems without hard links
        return
    os.unlink(tmp, dir_fd=dir_fd)


@contextmanager
def atomic_file(directory: Path, name: str, *, private: bool = True,
                replace: bool = False) -> Iterator[IO[bytes]]:
    """Write to a hidden temporary file; on success fsync it, link it to `name`, fsync the directory.

    The directory is opened once (no symbolic links on the way) and every step happens relative to
    that handle, so a folder swapped for a link after it was checked is refused, not written through.
    private: refuse a directory another user owns or may write to. The final name appears only when
    everything succeeded and never replaces an existing file, unless `replace` (a record rewritten in place:
    rename replaces a link in the way itself, never what it points to).
    """
    if not name or "/" in name or name in (".", ".."):
        raise InvalidInput("a file name must not be empty or contain '/'")
    if len(name.encode("utf-8", "surrogateescape")) > paths.MAX_NAME_BYTES:
        raise InvalidInput(f"a file name must be at most {paths.MAX_NAME_BYTES} bytes long")
    tmp = _temp_name(name)
    with safedir.opened(directory, private=private) as dir_fd:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)
        except OSError as exc:
            raise safedir.os_error(exc, f"cannot create a file in {directory}") from None
        os.fchmod(fd, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=1024 * 1024) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                _publish(dir_fd, tmp, name)
            os.fsync(dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            raise


def open_in(directory: Path, name: str) -> IO[bytes]:
    """Open a backup file for reading, refusing links (the file's or on the directory's path)."""
    validate_id(name)
    try:
        dir_fd = safedir.open_dir(directory)
    except NotFound:
        raise NotFound("the backup file is missing from its location (its folder is gone)") from None
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not hang the reader
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise NotFound("the backup file is missing from its location") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInput("the backup file has been replaced by a link; refusing to follow it") \
                from None
        raise StorageError(f"cannot open the backup file: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidInput("the backup file is not a regular file; refusing to read it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def unlink_in(directory: Path, name: str) -> None:
    """Delete a backup file (never a link's target, never in a folder reached through a link)."""
    validate_id(name)
    try:
        dir_fd = safedir.open_dir(directory)
    except NotFound:
        return  # the whole folder is gone: so is the file
    try:
        # unlink removes a link itself, never what it points to; the verification record goes with it
        for victim in (name, name + SIDECAR_SUFFIX):
            try:
                os.unlink(victim, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
    except OSError as exc:
        raise StorageError(f"cannot delete the backup file: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
