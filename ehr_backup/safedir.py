"""Directories opened once, from / and without following a link, so that later work on their files
(create, link, rename, read, delete) happens in the directory that was checked, whatever its path
turns into meanwhile.

A path is checked and later used: between the two, anyone who can write to a parent could swap the
folder for a symbolic link and have a backup written (or a file deleted) elsewhere. Holding a
descriptor of the folder itself and using `dir_fd=` for every file closes that gap.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BackupError, InvalidInput, NotFound, StorageError

_PATH = getattr(os, "O_PATH", os.O_RDONLY)  # O_PATH: walk folders we may enter but not list
_DIR = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def os_error(exc: OSError, what: str) -> BackupError:
    """Turn an OSError about a user-chosen path into a typed error with a one-line message."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidInput(f"{what}: a folder or file name is longer than 255 bytes, or the path "
                            "longer than 4096")
    if exc.errno == errno.ENOENT:
        return NotFound(f"{what}: no such file or folder")
    if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EINVAL, errno.EILSEQ, errno.EISDIR, errno.EEXIST):
        return InvalidInput(f"{what}: {reason}")
    return StorageError(f"{what}: {reason}")


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def check_private(fd: int, path: Path) -> None:
    """Refuse a directory that another user owns or may write to.

    A folder others can write to, even a sticky one (/tmp), lets them plant files that look like
    backups, take the names backups are about to get, or fill it; backups of patients' records go
    only where no one but this server's user (or root) can add or remove anything.
    """
    st = os.fstat(fd)
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise InvalidInput(f"{path} belongs to {_user_name(st.st_uid)}; backups go only into folders that "
                           f"belong to {_user_name(me)} (the server's user) or root")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InvalidInput(f"{path} can be written by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                           "backups go only into folders no one else can write to: remove their write "
                           "permission (chmod go-w) or choose another folder")


def open_dir(path: Path, *, create: bool = False, private: bool = False) -> int:
    """Open a directory by walking from / one name at a time, refusing symbolic links; return its fd.

    create: make the last folder (mode 0700) when it is missing; its parents must exist already.
    private: refuse a folder another user owns or may write to (`check_private`).
    """
    if not path.is_absolute():
        raise InvalidInput(f"{path} is not an absolute path")
    parts = path.parts[1:]
    fd = os.open("/", (os.O_RDONLY if not parts else _PATH) | os.O_DIRECTORY | os.O_CLOEXEC)
    current = Path("/")
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            flags = (os.O_RDONLY if last else _PATH) | _DIR
            current = current / name
            try:
                try:
                    child = os.open(name, flags, dir_fd=fd)
                except FileNotFoundError:
                    if not last or not create:
                        raise
                    try:
                        os.mkdir(name, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass  # made meanwhile: opened (and checked) below like any other
                    child = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise InvalidInput(f"{current} does not exist: only the last folder of a location is "
                                       "created; make the folders above it first") from None
                raise NotFound(f"{current} does not exist") from None
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(fd, name):
                    raise InvalidInput(f"the path goes through a symbolic link ({current}); refusing to "
                                       "follow it: choose the real folder") from None
                if exc.errno == errno.ENOTDIR:
                    raise InvalidInput(f"{current} is not a folder") from None
                raise os_error(exc, f"cannot open {current}") from None
            os.close(fd)
            fd = child
        if private:
            check_private(fd, path)
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def opened(path: Path, *, create: bool = False, private: bool = False) -> Iterator[int]:
    """`open_dir` as a context manager that closes the descriptor."""
    fd = open_dir(path, create=create, private=private)
    try:
        yield fd
    finally:
        os.close(fd)


def exists_in(dir_fd: int, name: str) -> bool:
    """Whether a directory entry exists (a link counts, whatever it points to)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False
