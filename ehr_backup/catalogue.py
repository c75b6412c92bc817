"""Queries on the backup catalogue; keyword-only, one transaction each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import text
from sqlmodel import col, func, select

from .change_memo import ChangeMemo
from .db import Database
from .models import BackupRecord, BackupTally, Status

TALLIED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)  # the outcomes a run of ours ends with


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite forgets time zones: treat stored naive datetimes as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Catalogue:
    """The record of every backup this installation knows."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.generation = 0  # bumped by every change made through this object (cached list plans compare it)
        self.memo = ChangeMemo(self)  # results of queries over the backups table, until the next change

    def changes(self) -> int:
        """How many times the backups table has changed, by any process (a counter SQLite keeps, see db.py)."""
        with self._db.reading() as s:
            return int(s.execute(text("SELECT n FROM catalogue_changes WHERE id = 1")).scalar_one())

    def add(self, record: BackupRecord) -> BackupRecord:
        """Insert a new record."""
        with self._db.writing() as s:
            s.add(record)
        self.generation += 1
        return record

    def update(self, backup_id: str, **fields: Any) -> BackupRecord | None:
        """Change fields of a record; return it, or None when it is gone."""
        self.generation += 1
        with self._db.writing() as s:
            row = s.get(BackupRecord, backup_id)
            if row is None:
                return None
            for name, value in fields.items():
                setattr(row, name, value)
            s.add(row)
        return row

    def get(self, backup_id: str) -> BackupRecord | None:
        """The record with this id."""
        with self._db.reading() as s:
            return s.get(BackupRecord, backup_id)

    def all(self, *, location: str | None = None, database: str | None = None) -> Sequence[BackupRecord]:
        """Records, newest first, optionally of one location or one database."""
        with self._db.reading() as s:
            q = select(BackupRecord).order_by(col(BackupRecord.created_at).desc())
            if location:
                q = q.where(BackupRecord.location == location)
            if database is not None:
                q = q.where(BackupRecord.database == database)
            return s.exec(q).all()

    def columns(self, names: Sequence[str], *, database: str | None = None,
                where: Sequence[Any] = ()) -> Sequence[Any]:
        """These columns of every record (rows with those attributes, lighter than records), newest first;
        `where`: further conditions on BackupRecord's columns."""
        with self._db.reading() as s:
            q = sa_select(*(getattr(BackupRecord, n) for n in names)).order_by(col(BackupRecord.created_at).desc())
            if database is not None:
                q = q.where(BackupRecord.database == database)  # type: ignore[arg-type]
            if where:
                q = q.where(*where)
            return s.execute(q).all()  # type: ignore[no-any-return]

    def directories(self, location: str) -> list[str]:
        """The distinct folders that backups of one location are in."""
        with self._db.reading() as s:
            q = select(BackupRecord.directory).where(BackupRecord.location == location).distinct()
            return list(s.exec(q).all())

    def ids(self) -> set[str]:
        """Every id in the catalogue."""
        with self._db.reading() as s:
            return set(s.exec(select(BackupRecord.id)).all())

    def delete(self, backup_id: str) -> None:
        """Remove a record; a finished run of ours is added to its database's tally (see BackupTally)."""
        self.generation += 1
        with self._db.writing() as s:
            row = s.get(BackupRecord, backup_id)
            if row is not None:
                if row.origin == "catalogue" and row.status in TALLIED:
                    from .profiles import db_key  # here: profiles imports this module

                    database = db_key(row.database, row.profile)  # a database profile's runs count apart
                    tally = s.exec(select(BackupTally).where(BackupTally.database == database,
                                                             BackupTally.outcome == row.status)).first()
                    tally = tally or BackupTally(database=database, outcome=row.status)
                    tally.count += 1
                    s.add(tally)
                s.delete(row)

    def outcome_counts(self) -> dict[tuple[str, str], int]:
        """Runs of ours by (database, outcome) ever finished: the rows held plus the tallies of deleted ones."""
        counts: dict[tuple[str, str], int] = {}
        with self._db.reading() as s:
            rows = s.execute(sa_select(BackupRecord.database, BackupRecord.profile, BackupRecord.status,  # type: ignore[call-overload]
                                       func.count())
                             .where(BackupRecord.origin == "catalogue", col(BackupRecord.status).in_(TALLIED))
                             .group_by(BackupRecord.database, BackupRecord.profile, BackupRecord.status)).all()
            tallies = s.exec(select(BackupTally)).all()
        from .profiles import db_key  # here: profiles imports this module

        for name, profile, status, n in rows:
            database = db_key(name, profile)
            counts[(database, status)] = counts.get((database, status), 0) + int(n)
        for tally in tallies:
            key = (tally.database, tally.outcome)
            counts[key] = counts.get(key, 0) + tally.count
        return counts

    def fail_interrupted(self, *, reason: str, alive: Callable[[str], bool]) -> list[str]:
        """Mark rows left RUNNING by a crash (whose job is not alive) as FAILED; return their ids."""
        self.generation += 1
        with self._db.writing() as s:
            rows = [r for r in s.exec(select(BackupRecord).where(BackupRecord.status == Status.RUNNING)).all()
                    if not alive(r.id)]
            for row in rows:
                row.status = Status.FAILED
                row.error = reason
                row.finished_at = utcnow()
                s.add(row)
            return [r.id for r in rows]

    def descriptions(self, ids: Sequence[str]) -> dict[str, str]:
        """The description of each of these backups (one query; for a page's worth of ids, not all of them)."""
        if not ids:
            return {}
        with self._db.reading() as s:
            q = select(BackupRecord.id, BackupRecord.description).where(col(BackupRecord.id).in_(list(ids)))
            return {bid: text for bid, text in s.exec(q).all()}
