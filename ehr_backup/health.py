"""Liveness and readiness: what a load balancer or systemd asks before sending work.

`/healthz` only says the process answers. `/readyz` checks what a backup needs: the metadata
database reads, an encryption key is configured, the backed-up database accepts a connection (short
timeout), and every location a backup may be written to is writable. Answers name each check and
carry no secrets (the database is shown as user@host:port/db, errors are redacted). Both are
unauthenticated, so a readiness report is cached for a few seconds: hammering /readyz opens at most
one database connection per interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from . import demo, storage
from .errors import BackupError
from .pg import ConnInfo

if TYPE_CHECKING:
    from .service import BackupService

CONNECT_TIMEOUT = 3  # seconds; libpq's minimum that means anything is 2
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Check:
    """One readiness check: its name, whether it passed, and a short, secret-free detail."""

    name: str
    ok: bool
    detail: str


def report(checks: list[Check]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for a list of checks: 200 when all pass, else 503 naming the failures."""
    failing = [c.name for c in checks if not c.ok]
    body = {"status": "not ready" if failing else "ready", "failing": failing,
            **({"error": f"not ready: {', '.join(failing)} failing (see checks)"} if failing else {}),
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
    return (503 if failing else 200), body


def check_metadata(service: BackupService) -> Check:
    """The catalogue (SQLite) answers a query."""
    try:
        with service.db.reading() as s:
            s.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except SQLAlchemyError as exc:
        return Check("metadata", False, f"the metadata database cannot be read ({exc.__class__.__name__})")
    return Check("metadata", True, "the metadata database answers")


def check_key(service: BackupService) -> Check:
    """A key for new backups is configured and well-formed (its value is never shown)."""
    try:
        service.keyring().encryption_key()
    except BackupError as exc:
        return Check("encryptionKey", False, exc.message)
    return Check("encryptionKey", True, "configured")


def check_database(service: BackupService) -> Check:
    """The backed-up database accepts a connection within CONNECT_TIMEOUT (the demo cluster is never started)."""
    url = service.settings.database_url or demo.database_url(service.settings.data_dir)
    if not url:
        return Check("database", False, "DATABASE_URL is not set and no demo database exists")
    try:
        info = ConnInfo.parse(url)
    except BackupError as exc:
        return Check("database", False, exc.message)
    try:
        with psycopg.connect(info.conninfo(), autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        return Check("database", False, f"cannot connect to {info.display}: {info.redact(first)}")
    return Check("database", True, f"{info.display} accepts connections")


def location_checks(service: BackupService) -> list[Check]:
    """Each standard location, and each enabled schedule's custom folder, is a writable directory.

    A standard location not made yet counts when the folder it would be made in is writable.
    """
    out = []
    for loc in service.locations():
        state = "writable" if loc["writable"] else ("not writable" if loc["exists"] or
                                                    not Path(loc["path"]).exists() else "not a directory")
        out.append(Check(f"location:{loc['key']}", bool(loc["writable"]), f"{loc['path']} is {state}"))
    for sched in service.schedules.all():
        if sched.enabled and sched.location == "custom" and sched.custom_path:
            path = Path(sched.custom_path)
            ok = storage.is_writable(path)
            out.append(Check(f"location:custom:{path}", ok, f"{path} (schedule {sched.name}) is "
                                                             f"{'writable' if ok else 'not a writable directory'}"))
    return out


def readiness_checks(service: BackupService) -> list[Check]:
    """Every readiness check, in a stable order."""
    checks = [check_metadata(service), check_key(service), check_database(service)]
    try:
        checks += location_checks(service)
    except (BackupError, SQLAlchemyError, OSError) as exc:
        checks.append(Check("locations", False, f"cannot list the locations ({exc.__class__.__name__})"))
    return checks


class Readiness:
    """The readiness report, computed at most once per CACHE_SECONDS (clock injectable for tests)."""

    def __init__(self, service: BackupService, *, clock: Callable[[], float] = time.monotonic,
                 ttl: float = CACHE_SECONDS) -> None:
        self.service = service
        self.clock = clock
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple[int, dict[str, Any]]] | None = None

    def report(self) -> tuple[int, dict[str, Any]]:
        """(status, body); callers at the same moment share one computation."""
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= self.ttl:
                self._cached = (now, report(readiness_checks(self.service)))
            return self._cached[1]
