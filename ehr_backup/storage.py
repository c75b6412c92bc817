"""Backup locations, backup ids, and safe file operations inside a location."""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import platformdirs

from .errors import InvalidInput, NotFound, StorageError

LOCATIONS = {"default": "Default", "desktop": "Desktop", "documents": "Documents",
             "downloads": "Downloads", "custom": "Custom"}
SUBDIR = "EHR-Backups"
ID_RE = re.compile(r"^backup_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z(?:_[A-Za-z0-9_-]{1,100})?"
                   r"\.sql\.(?:gz|zst)\.enc$")
TEMP_PREFIX = ".ehr-backup-partial-"
MAX_ID = 200
# Whole trees that never hold backups.
SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/usr", "/boot", "/run", "/var/run", "/var/lib/postgresql", "/var/log", "/var/cache",
                "/var/spool", "/var/lib/dpkg", "/var/lib/apt", "/snap")
# Directories that may contain a backup folder but must not be one.
SYSTEM_DIRS = ("/", "/home", "/var", "/var/lib", "/tmp", "/var/tmp", "/opt", "/mnt", "/media", "/srv",
               "/root")


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


def check_path_text(text: str) -> Path:
    """Reject paths that are not plain absolute paths (relative, `..`, NUL, control characters)."""
    if not text or len(text) > 4096:
        raise InvalidInput("the path is empty or too long")
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        raise InvalidInput("the path contains control characters")
    if not text.startswith("/"):
        raise InvalidInput("the path must be absolute (start with /)")
    if ".." in text.split("/"):
        raise InvalidInput("the path must not contain '..'")
    return Path(os.path.normpath(text))


def _symlink_in(path: Path) -> Path | None:
    """The first existing component of path that is a symbolic link, if any."""
    current = Path("/")
    for part in path.parts[1:]:
        current = current / part
        if current.is_symlink():
            return current
        if not current.exists():
            return None
    return None


def check_custom(text: str, forbidden: list[Path]) -> Path:
    """Check a custom location without touching the disk; return its path or say why not."""
    path = check_path_text(text)
    link = _symlink_in(path)
    if link is not None:
        raise InvalidInput(f"the path goes through a symbolic link ({link}); choose the real folder")
    if str(path) in SYSTEM_DIRS:
        raise InvalidInput(f"{path} is a system directory; choose a folder inside it")
    for tree in SYSTEM_TREES:
        if path.is_relative_to(tree):
            raise InvalidInput(f"{path} is inside the system directory {tree}")
    for other in forbidden:
        other = Path(os.path.realpath(other))
        if path.is_relative_to(other) or other.is_relative_to(path):
            raise InvalidInput(f"{path} overlaps a directory that must stay separate ({other})")
    return path


def validate_custom(text: str, forbidden: list[Path]) -> Path:
    """Validate a custom location; create it (0700) if missing; return its path or say why not."""
    path = check_custom(text, forbidden)
    ensure_dir(path)
    check_writable(path)
    return path


def ensure_dir(path: Path) -> None:
    """Create a backup directory (mode 0700) with its parents; explain failures."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise StorageError(f"{path} is not a directory")


def check_writable(path: Path) -> None:
    """Prove the directory accepts a new file."""
    probe = path / f"{TEMP_PREFIX}probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StorageError(f"{path} is not writable: {exc.strerror or exc}") from None


def is_writable(path: Path) -> bool:
    """Whether a new file could be created in path (without creating anything)."""
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def free_bytes(path: Path) -> int | None:
    """Free space at path or at its nearest existing parent."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def slugify(description: str) -> str:
    """The file-name part made from a description: lower-case letters, digits and underscores."""
    slug = re.sub(r"[^a-z0-9]+", "_", description.lower()).strip("_")[:60].strip("_")
    return slug or "backup"


def make_id(created: datetime, description: str, compression_ext: str) -> str:
    """A backup id in the product's file-name form."""
    stamp = created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S-") + \
        f"{created.microsecond // 1000:03d}Z"
    return f"backup_{stamp}_{slugify(description)}.sql.{compression_ext}.enc"


def validate_id(backup_id: str) -> str:
    """Reject anything that is not a backup id (traversal, absolute paths, NUL, oversized)."""
    if not isinstance(backup_id, str) or len(backup_id) > MAX_ID or not ID_RE.fullmatch(backup_id):
        raise InvalidInput("invalid backup id")
    return backup_id


def scan(directory: Path) -> Iterator[Path]:
    """Regular backup files (not symlinks) directly inside a directory."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if ID_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def temp_owner(temp_name: str) -> str:
    """The final name a temporary file was being written for."""
    return temp_name[len(TEMP_PREFIX):].rsplit(".", 1)[0]


def remove_leftovers(directory: Path, live: Callable[[str], bool] = lambda _name: False) -> int:
    """Delete temporary files a crashed backup left behind (not those of live jobs); return how many."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if (entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False)
                and not live(temp_owner(entry.name))):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(directory: Path, name: str) -> Iterator[IO[bytes]]:
    """Write to a hidden temporary file; on success fsync it, link it to `name`, fsync the directory.

    The final name appears only when everything succeeded and never replaces an existing file.
    """
    tmp = directory / f"{TEMP_PREFIX}{name[:200]}.{secrets.token_hex(8)}"
    final = directory / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise StorageError(f"a file named {name} already exists") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) or final.exists():
                raise
            os.rename(tmp, final)  # file systems without hard links
        if tmp.exists():
            os.unlink(tmp)
        _fsync_dir(directory)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def open_in(directory: Path, name: str) -> IO[bytes]:
    """Open a backup file for reading, refusing symlinks and directories that moved elsewhere."""
    validate_id(name)
    if Path(os.path.realpath(directory)) != directory:
        raise InvalidInput("the backup's directory has been replaced by a link; refusing to follow it")
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise NotFound("the backup file is missing from its location") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInput("the backup file has been replaced by a link; refusing to follow it") \
                from None
        raise StorageError(f"cannot open the backup file: {exc.strerror}") from None
    return os.fdopen(fd, "rb")


def unlink_in(directory: Path, name: str) -> None:
    """Delete a backup file (never a link's target)."""
    validate_id(name)
    if Path(os.path.realpath(directory)) != directory:
        raise InvalidInput("the backup's directory has been replaced by a link; refusing to follow it")
    try:
        os.unlink(directory / name)  # unlink removes a link itself, never what it points to
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot delete the backup file: {exc.strerror}") from None
