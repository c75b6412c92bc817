"""A page of the backup list costs a fixed number of SQL statements, whatever its size (no query per backup)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from ehr_backup.destinations.tables import BackupCopy
from ehr_backup.service import BackupService

from .catalogue_fill import fill


@contextmanager
def counted() -> Iterator[list[str]]:
    """The SQL statements every engine of this process runs meanwhile."""
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)


def test_a_list_page_reads_copies_drills_and_rotation_once_for_the_page(service: BackupService,
                                                                          tmp_path: Path) -> None:
    ids = fill(service, 300, directory=tmp_path / "backups", files=20)
    with service.db.writing() as s:  # an S3 copy of every tenth backup
        for backup_id in ids[::10]:
            s.add(BackupCopy(backup_id=backup_id, destination="offsite", uri=f"s3://b/{backup_id}", size=1,
                             sha256="0" * 64, status="ok", created_at=datetime.now(UTC)))
    service.list_page(limit=100)  # the first read after a change plans rotation and scans the folders
    with counted() as small:
        few = service.list_page(limit=10)
    with counted() as large:
        many = service.list_page(limit=200)
    assert len(few["backups"]) == 10 and len(many["backups"]) == 200
    # one query per backup (the old copies lookup) would add 190 statements here
    assert len(large) == len(small), (len(small), len(large))
    shown = {b["id"]: b for b in many["backups"]}
    with_copy = [shown[i] for i in ids[::10] if i in shown]
    assert with_copy and all(any(c["destination"] == "offsite" for c in b["copies"]) for b in with_copy)
