"""Fill a catalogue with many backup rows quickly (rows only; files optional), for list tests and benchmarks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from ehr_backup.models import BackupRecord

KINDS = ("manual", "scheduled", "safety")
STATUSES = ("completed", "completed", "completed", "failed", "cancelled")


def backup_id(when: datetime, slug: str) -> str:
    """An id in the form the app gives (storage.make_id)."""
    return f"backup_{when:%Y-%m-%dT%H-%M-%S}-{when.microsecond // 1000:03d}Z_{slug}.sql.gz.enc"


def fill(service: Any, count: int, *, directory: Path, databases: tuple[str, ...] = ("ehr", "rh"),
         start: datetime | None = None, files: int = 0, location: str = "default") -> list[str]:
    """Insert `count` backups, one every 6 hours back from `start`; the newest `files` get a tiny file."""
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        when = start - timedelta(hours=6 * i, milliseconds=i % 1000)
        bid = backup_id(when, f"n{i}")
        status = STATUSES[i % len(STATUSES)]
        rows.append({"id": bid, "location": location, "directory": str(directory),
                     "description": f"nightly {i} of {databases[i % len(databases)]}"
                                    + (" urgent" if i % 7 == 0 else ""),
                     "kind": KINDS[i % len(KINDS)], "status": status, "compression": "gzip",
                     "size": None if status != "completed" else 1000 + (i * 7919) % 100_000,
                     "database": databases[i % len(databases)], "created_at": when,
                     "created_by": "bench", "origin": "catalogue", "verify_ok": True if i % 3 == 0 else None,
                     "pinned": False, "schedule": "nightly" if i % 3 == 1 else None})
        if i < files and status == "completed":
            path = directory / bid
            path.write_bytes(b"x")
            path.chmod(0o600)
    with service.db.writing() as s:
        s.execute(insert(BackupRecord), rows)
    service.catalogue.generation += 1
    return [r["id"] for r in rows]
