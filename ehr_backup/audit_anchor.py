"""Anchors of the audit log's head outside the metadata database: backup file headers and syslog.

Every new backup file records, in its authenticated header, the newest audit entry's number and MAC
(`auditHead`). Whoever rewinds or rewrites the log must then also forge every newer backup file, which
needs the backup key. The head can also be sent to syslog after every entry, for a copy on another host.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BackupError
from .fileformat import OpenedFile, read_header
from .keys import KeyRing
from .storage import open_in

log = logging.getLogger("ehr_backup")
FIELD = "auditHead"
NEWEST_FILES = 3  # authenticating a file reads all of it: only the files with the newest anchors
# Files that fail authentication are skipped, not counted, so planted files cannot push the real
# anchors out of reach; this many tries at most, and reaching it with anchors missing fails the check.
MAX_TRIES = 200
MAC_RE = re.compile(r"[0-9a-f]{64}")
SYSLOG_PRIORITY = 4 * 8 + 5  # facility auth, severity notice


@dataclass(frozen=True)
class Anchor:
    """An audit entry's number and MAC as recorded outside the log, and where."""

    seq: int
    mac: str
    source: str


@dataclass(frozen=True)
class AnchorScan:
    """The anchors found in authenticated backup files, and how many files could not be used."""

    anchors: tuple[Anchor, ...] = ()
    carrying: int = 0  # files whose header names an anchor (unauthenticated count)
    unusable: tuple[str, ...] = ()  # files tried that failed authentication or whose key is not configured
    blinded: bool = False  # gave up after MAX_TRIES files with fewer anchors than wanted

    def problem(self) -> str:
        """Why the anchors could not be checked ("" when they could)."""
        if not self.blinded:
            return ""
        shown = ", ".join(self.unusable[:5]) + (", ..." if len(self.unusable) > 5 else "")
        return (f"the audit heads recorded in backup files could not be checked: {len(self.unusable)} files "
                f"claiming the newest heads failed authentication ({shown}); verify those files and move "
                "away the ones that fail, then check again")

    def summary(self) -> str:
        """One sentence for `audit verify`."""
        if not self.carrying:
            return "anchors: no backup file records an audit head yet"
        newest = max(self.anchors, key=lambda a: a.seq) if self.anchors else None
        text = (f"anchors: authenticated the {len(self.anchors)} backup file(s) with the newest audit heads "
                f"(of {self.carrying} carrying one; older ones are not read, for speed)")
        if newest:
            text += f"; the log reaches entry {newest.seq}, recorded in {newest.source}"
        if self.unusable:
            text += f"; {len(self.unusable)} file(s) could not be authenticated: {', '.join(self.unusable)}"
        return text


def field_value(seq: int | None, mac: str) -> dict[str, Any] | None:
    """The header field for the newest entry (None while the log is empty)."""
    return {"seq": seq, "mac": mac} if seq else None


def _parse(value: Any) -> tuple[int, str] | None:
    if not isinstance(value, dict):
        return None
    seq, mac = value.get("seq"), value.get("mac")
    if type(seq) is not int or seq < 1 or not isinstance(mac, str) or not MAC_RE.fullmatch(mac):
        return None
    return seq, mac


def _peek(path: Path) -> tuple[int, str] | None:
    try:
        with open(path, "rb") as fh:
            return _parse(read_header(fh).fields.get(FIELD))
    except (BackupError, OSError):
        return None


def find_anchors(files: Iterable[Path], keyring: KeyRing, newest: int = NEWEST_FILES,
                 tries: int = MAX_TRIES) -> AnchorScan:
    """Authenticate the files whose headers claim the newest anchors; return what they record."""
    candidates = sorted(((peeked, path) for path in files if (peeked := _peek(path))),
                        key=lambda c: c[0][0], reverse=True)
    found: list[Anchor] = []
    unusable: list[str] = []
    tried = 0
    for _claimed, path in candidates:
        if len(found) >= newest:
            break
        if tried >= tries:
            return AnchorScan(tuple(found), len(candidates), tuple(unusable), blinded=bool(unusable))
        tried += 1
        try:
            with open_in(path.parent, path.name) as fh:  # never through a link swapped in since the scan
                opened = OpenedFile(fh, keyring)
                opened.authenticate()  # the header is covered by the whole-file MAC
                value = _parse(opened.header.fields.get(FIELD))
        except (BackupError, OSError):
            unusable.append(path.name)
            continue
        if value:
            found.append(Anchor(value[0], value[1], path.name))
    return AnchorScan(tuple(found), len(candidates), tuple(unusable))


class SyslogAnchor:
    """Send the audit head to syslog (a local socket path or HOST:PORT over UDP)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def send(self, seq: int, mac: str) -> None:
        """Send one line; a syslog that cannot be reached is logged, never fatal to the action."""
        message = f"<{SYSLOG_PRIORITY}>ehr-backup[{os.getpid()}]: audit head seq={seq} mac={mac}".encode()
        try:
            if self.target.startswith("/"):
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                    sock.sendto(message, self.target)
            else:
                host, _, port = self.target.rpartition(":")
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as sock:
                    sock.sendto(message, (host.strip("[]"), int(port)))
        except OSError as exc:
            log.warning("could not send the audit head to syslog %s: %s", self.target, exc.strerror or exc)
