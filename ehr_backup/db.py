"""The embedded SQLite metadata database (WAL): one engine for reads, one that writes immediately."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from . import models  # noqa: F401 - registers the tables
from .alerts import tables as _alert_tables  # noqa: F401 - registers the alert tables
from .errors import StorageError

# Columns added after a table was first created: create_all makes new tables, never new columns,
# so databases made by an older version get them here (table, column, SQLite column definition).
ADDED_COLUMNS = [
    ("audit", "key_id", "VARCHAR NOT NULL DEFAULT ''"),
    ("backups", "verify_duration_s", "FLOAT"),
    ("backups", "pinned", "BOOLEAN NOT NULL DEFAULT 0"),
    ("backups", "pin_reason", "VARCHAR"),
    ("backups", "schedule", "VARCHAR"),
    ("backups", "protects", "VARCHAR"),
    ("api_tokens", "scope", "VARCHAR NOT NULL DEFAULT 'admin'"),
    ("drills", "roles_pending", "VARCHAR NOT NULL DEFAULT ''"),
    ("api_tokens", "expires_at", "DATETIME"),
]

# Indexes added after a table was first created (create_all makes them only with a new table): the
# backup list filters and sorts by these in SQLite (ehr_backup/listing.py); names as SQLModel gives them.
ADDED_INDEXES = [
    ("backups", "database"),
    ("backups", "kind"),
    ("backups", "size"),
]


def _add_missing_columns(engine: Engine) -> None:
    """Bring tables made by an older version up to the current models."""
    with engine.begin() as conn:
        insp = inspect(conn)
        for table, column, ddl in ADDED_COLUMNS:
            if column not in {c["name"] for c in insp.get_columns(table)}:
                conn.exec_driver_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {ddl}')
        for table, column in ADDED_INDEXES:
            conn.exec_driver_sql(f'CREATE INDEX IF NOT EXISTS "ix_{table}_{column}" ON "{table}" ("{column}")')


def _engine(path: Path, begin: str) -> Engine:
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi: sqlite3.Connection, _record: Any) -> None:
        dbapi.isolation_level = None  # we issue BEGIN ourselves, below
        dbapi.execute("PRAGMA journal_mode=WAL")
        dbapi.execute("PRAGMA busy_timeout=30000")
        dbapi.execute("PRAGMA synchronous=FULL")
        dbapi.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


class Database:
    """Sessions over the metadata database; writes take SQLite's write lock at BEGIN."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._read = _engine(path, "BEGIN")
        self._write = _engine(path, "BEGIN IMMEDIATE")
        try:
            SQLModel.metadata.create_all(self._write)
            _add_missing_columns(self._write)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open the catalogue {path}: {exc.__class__.__name__}") from None

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for queries."""
        with Session(self._read, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session that holds the write lock from its start and commits at the end."""
        with Session(self._write, expire_on_commit=False) as session:
            yield session
            session.commit()

    def dispose(self) -> None:
        """Close pooled connections."""
        self._read.dispose()
        self._write.dispose()
