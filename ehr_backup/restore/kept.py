"""The registry of databases a restore keeps beside the live one (only these are ever dropped by us)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import col, select

from ..catalogue import utcnow
from ..db import Database
from ..models import KeptDatabase

# building: a copy being loaded; swapping: the name the live database gets if the swap commits
BUILDING, SWAPPING, PREVIOUS, UNDONE = "building", "swapping", "previous", "undone"
TRANSIENT = (BUILDING, SWAPPING)  # never shown or dropped by hand: a restore is (or was) in the middle


def lock_key(server: str, name: str) -> str:
    """The job lock held while a restore or rollback works on a kept database of this name."""
    return f"restore-copy:{server}/{name}"


class KeptDatabases:
    """Record, find and retire kept databases."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, *, server: str, display: str, name: str, original: str, kind: str,
            backup_id: str = "", note: str = "") -> KeptDatabase:
        """Record a database before it is made (so a crash leaves a trace to clean up)."""
        row = KeptDatabase(server=server, server_display=display, name=name, original=original, kind=kind,
                           backup_id=backup_id, note=note, created_at=utcnow())
        with self._db.writing() as s:
            s.add(row)
        return row

    def update(self, row_id: int, **fields: object) -> None:
        """Change a row (a rename, a new kind, dropped)."""
        with self._db.writing() as s:
            row = s.get(KeptDatabase, row_id)
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)
                s.add(row)

    def live(self, *, server: str | None = None, kind: str | None = None,
             original: str | None = None) -> Sequence[KeptDatabase]:
        """Kept databases not dropped yet, newest first."""
        with self._db.reading() as s:
            q = select(KeptDatabase).where(col(KeptDatabase.dropped_at).is_(None))
            if server is not None:
                q = q.where(KeptDatabase.server == server)
            if kind is not None:
                q = q.where(KeptDatabase.kind == kind)
            if original is not None:
                q = q.where(KeptDatabase.original == original)
            return s.exec(q.order_by(col(KeptDatabase.created_at).desc(), col(KeptDatabase.id).desc())).all()

    def dropped(self, row_id: int, when: datetime | None = None) -> None:
        """Mark a kept database dropped."""
        self.update(row_id, dropped_at=when or utcnow())
