"""What a custom location may be: allowed characters and lengths, base folders, system directories.

Pure checks on the text of a path; opening it without following links is `safedir`'s job.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from .errors import InvalidInput

# A folder name may hold letters and digits (any script), spaces and these: nothing that quotes,
# escapes, assigns or redirects (" ' ` $ \ : = ; < > | & * ? ! # % ~ ^ { } [ ]), so a name stays plain
# text wherever it is shown or written, and no control or invisible formatting character.
ALLOWED_PUNCTUATION = " ._-+@,()"
ALLOWED_TEXT = "letters, digits, spaces and . _ - + @ , ( )"
LETTERS_AND_DIGITS = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})
MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems
MAX_PATH_BYTES = 4096  # PATH_MAX

# Whole trees that never hold backups.
SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/usr", "/boot", "/run", "/var/run", "/var/lib/postgresql", "/var/log", "/var/cache",
                "/var/spool", "/var/lib/dpkg", "/var/lib/apt", "/snap")
# Directories that may contain a backup folder but must not be one.
SYSTEM_DIRS = ("/", "/home", "/var", "/var/lib", "/tmp", "/var/tmp", "/opt", "/mnt", "/media", "/srv",
               "/root")


def _byte_length(text: str) -> int:
    # surrogateescape: names read from disk that are not UTF-8 count as the bytes they are
    return len(text.encode("utf-8", "surrogateescape"))


def _shown(chars: Iterable[str]) -> str:
    """Characters for a message: printable ones as they are, the others as U+XXXX."""
    return " ".join(c if c.isprintable() and not c.isspace() else f"U+{ord(c):04X}" for c in sorted(set(chars)))


def name_problem(name: str) -> str | None:
    """Why a folder name cannot be part of a backup location, or None when it can."""
    if name in ("", ".", ".."):
        return "a folder name must not be empty, '.' or '..'"
    if _byte_length(name) > MAX_NAME_BYTES:
        return f"a folder name must be at most {MAX_NAME_BYTES} bytes long"
    bad = [c for c in name if c not in ALLOWED_PUNCTUATION and unicodedata.category(c) not in LETTERS_AND_DIGITS]
    if bad:
        return f"a folder name may hold only {ALLOWED_TEXT}; not {_shown(bad)}"
    if name != name.strip(" "):
        return "a folder name must not begin or end with a space"
    return None


def check_name(name: str) -> str:
    """Return a folder name that may be part of a backup location, or say why not."""
    problem = name_problem(name)
    if problem:
        raise InvalidInput(problem)
    return name


def check_path_text(text: str, *, strict: bool = True) -> Path:
    """Check the text of an absolute path and return it normalised, or say why it is refused.

    strict: every folder name must pass `name_problem` (a backup location); otherwise (browsing)
    only control characters, '..' and lengths are refused.
    """
    if not isinstance(text, str) or not text:
        raise InvalidInput("the path is empty")
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        raise InvalidInput("the path contains control characters")
    if _byte_length(text) > MAX_PATH_BYTES:
        raise InvalidInput(f"the path is longer than {MAX_PATH_BYTES} bytes")
    if not text.startswith("/"):
        raise InvalidInput("the path must be absolute (start with /)")
    parts = [p for p in text.split("/") if p]
    if ".." in parts:
        raise InvalidInput("the path must not contain '..'")
    for part in parts:
        problem = name_problem(part) if strict else (
            f"a folder name must be at most {MAX_NAME_BYTES} bytes long"
            if _byte_length(part) > MAX_NAME_BYTES else None)
        if problem:
            raise InvalidInput(f"{problem} (in the path {text[:200]!r})" if strict else problem)
    return Path(os.path.normpath(text))


def within(path: Path, roots: Iterable[Path]) -> bool:
    """Whether path is one of the roots or inside one (by its text: path is normalised, roots real)."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def roots_text(roots: Iterable[Path]) -> str:
    """The base folders as a list for a message."""
    return ", ".join(str(r) for r in roots) or "none configured"


def check_custom(text: str, forbidden: list[Path], roots: tuple[Path, ...]) -> Path:
    """Check a custom location's path by its text; return it or say why it is refused."""
    path = check_path_text(text)
    if str(path) in SYSTEM_DIRS:
        raise InvalidInput(f"{path} is a system directory; choose a folder inside it")
    for tree in SYSTEM_TREES:
        if path.is_relative_to(tree):
            raise InvalidInput(f"{path} is inside the system directory {tree}")
    for other in forbidden:
        other = Path(os.path.realpath(other))
        if path.is_relative_to(other) or other.is_relative_to(path):
            raise InvalidInput(f"{path} overlaps a directory that must stay separate ({other})")
    if not within(path, roots):
        raise InvalidInput(f"{path} is outside the folders custom locations may use ({roots_text(roots)}); "
                           "choose a folder inside one of them (EHR_BACKUP_CUSTOM_ROOTS sets them)")
    return path
