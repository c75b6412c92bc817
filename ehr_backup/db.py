"""The metadata database: embedded SQLite (WAL) by default, or PostgreSQL (EHR_BACKUP_METADATA_URL) shared by
several app instances; one engine for reads, one whose transactions write one at a time."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from . import drill_blobs as _drill_blobs  # noqa: F401 - registers drill_report_blobs (reports any instance serves)
from . import jobstore as _jobstore  # noqa: F401 - registers job_states (jobs every instance sees)
from . import models  # noqa: F401 - registers the tables
from . import pglocks as _pglocks  # noqa: F401 - registers lock_holders (PostgreSQL metadata's lock holders)
from .alerts import tables as _alert_tables  # noqa: F401 - registers the alert tables
from .destinations import tables as _destination_tables  # noqa: F401 - registers destinations and copies
from .errors import StorageError
from .pgmeta import WRITER_LOCK, add_model_columns, pg_engine

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
    ("backups", "profile", "VARCHAR"),
    ("schedules", "database", "VARCHAR"),
    ("schedules", "destinations", "VARCHAR NOT NULL DEFAULT ''"),
    ("api_tokens", "expires_at", "DATETIME"),
]

# Indexes added after a table was first created (create_all makes them only with a new table): the
# backup list filters and sorts by these in SQLite (ehr_backup/listing.py); names as SQLModel gives them.
ADDED_INDEXES = [
    ("backups", "database"),
    ("backups", "kind"),
    ("backups", "size"),
    ("backups", "profile"),
]


# A counter of changes to the backups table, kept by SQLite itself (triggers), so that every process (the
# server, the CLI, a cron job) moves it: the list's rotation plan is reused until it moves (listing.py).
CHANGE_COUNTER = [
    "CREATE TABLE IF NOT EXISTS catalogue_changes (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO catalogue_changes (id, n) VALUES (1, 0)",
    *(f"CREATE TRIGGER IF NOT EXISTS backups_changed_{event.lower()} AFTER {event} ON backups "
      "BEGIN UPDATE catalogue_changes SET n = n + 1 WHERE id = 1; END" for event in ("INSERT", "UPDATE", "DELETE")),
]
# The same counter on PostgreSQL metadata (one trigger per statement; writers hold the writer lock anyway).
PG_CHANGE_COUNTER = [
    "CREATE TABLE IF NOT EXISTS catalogue_changes (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL)",
    "INSERT INTO catalogue_changes (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    ("CREATE OR REPLACE FUNCTION catalogue_changed() RETURNS trigger LANGUAGE plpgsql AS "
     "$$ BEGIN UPDATE catalogue_changes SET n = n + 1 WHERE id = 1; RETURN NULL; END $$"),
    ("CREATE OR REPLACE TRIGGER backups_changed AFTER INSERT OR UPDATE OR DELETE ON backups "
     "FOR EACH STATEMENT EXECUTE FUNCTION catalogue_changed()"),
]


def _add_missing_columns(engine: Engine) -> None:
    """Bring tables made by an older version up to the current models."""
    with engine.begin() as conn:
        if conn.dialect.name != "sqlite":
            _upgrade_generic(conn)
            return
        insp = inspect(conn)
        for table, column, ddl in ADDED_COLUMNS:
            if column not in {c["name"] for c in insp.get_columns(table)}:
                conn.exec_driver_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {ddl}')
        for table, column in ADDED_INDEXES:
            conn.exec_driver_sql(f'CREATE INDEX IF NOT EXISTS "ix_{table}_{column}" ON "{table}" ("{column}")')
        for statement in CHANGE_COUNTER:
            conn.exec_driver_sql(statement)


# Connections kept open per engine: one for each thread that may read at once (the web server's worker
# threads), so that concurrent requests reuse connections instead of opening one each (a new SQLite
# connection also re-runs the PRAGMAs below); beyond that, extra ones are opened and closed as needed.
POOL_SIZE = 20
POOL_OVERFLOW = 40


def _upgrade_generic(conn: Connection) -> None:
    """Other dialects: every model column a table lacks, its DDL from the column's type (ADDED_COLUMNS are
    written for SQLite), then the added indexes."""
    add_model_columns(conn, SQLModel.metadata)
    for table, column in ADDED_INDEXES:
        conn.exec_driver_sql(f'CREATE INDEX IF NOT EXISTS "ix_{table}_{column}" ON "{table}" ("{column}")')
    if conn.dialect.name == "postgresql":  # the backup list's change counter (catalogue.changes) exists there too
        for statement in PG_CHANGE_COUNTER:
            conn.exec_driver_sql(statement)


def _engine(path: Path, begin: str) -> Engine:
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30},
                           pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)

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
    """Sessions over the metadata database; a writing session is the only writer from its start (SQLite's
    write lock at BEGIN IMMEDIATE, or on PostgreSQL a transaction-level advisory lock taken at BEGIN), so
    every "read, then write" in one writing() session (audit chain, schedule claims, sign-in counting,
    first-user setup, …) holds across processes and instances."""

    def __init__(self, path: Path, url: str | None = None) -> None:
        self.path = path
        self.url = url  # None: the SQLite file at path
        if url:
            self._read = pg_engine(url)
            self._write = pg_engine(url, begin=WRITER_LOCK)
            where = "the PostgreSQL metadata database"
        else:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._read = _engine(path, "BEGIN")
            self._write = _engine(path, "BEGIN IMMEDIATE")
            where = f"the catalogue {path}"
        try:
            SQLModel.metadata.create_all(self._write)
            _add_missing_columns(self._write)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open {where}: {exc.__class__.__name__}") from None

    @property
    def dialect(self) -> str:
        """sqlite or postgresql."""
        return self._write.dialect.name

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
