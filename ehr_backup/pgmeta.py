"""PostgreSQL as the metadata database: the engine, the writers' lock, and columns added to older schemas."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Integer, MetaData, String, event, inspect, literal
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn
from sqlmodel import create_engine

from .errors import ConfigError

SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def advisory_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a name (one key space for the writers' lock and DatabaseLocks)."""
    return int.from_bytes(hashlib.sha256(f"ehr-backup:{name}".encode()).digest()[:8], "big", signed=True)


# Every writing() transaction takes this first: writers run one at a time, as under SQLite's BEGIN IMMEDIATE,
# across every process and instance sharing the database; released at COMMIT or ROLLBACK.
WRITER_LOCK = f"SELECT pg_advisory_xact_lock({advisory_key('metadata-writer')})"


@compiles(Integer, "postgresql")
def _bigint(_type: Integer, _compiler: Any, **_kw: Any) -> str:
    """SQLite's INTEGER holds 64 bits (sizes in bytes, free space); PostgreSQL's only 32, so models' ints are
    BIGINT there (autoincrement ids stay SERIAL: the DDL compiler picks those by the type's class)."""
    return "BIGINT"


@compiles(CreateColumn, "postgresql")
def _byte_order(element: CreateColumn, compiler: Any, **kw: Any) -> str:
    """Text columns in byte order (COLLATE "C"), as SQLite compares them: sorting by description, name or
    id, and the list's keyset cursors, give the same order whatever the database's locale."""
    ddl = str(compiler.visit_create_column(element, **kw))
    if _plain_text(element.element.type):
        name = compiler.preparer.format_column(element.element)
        ddl = _with_collation(ddl, name)
    return ddl


def _plain_text(type_: Any) -> bool:
    """A string type (SQLModel's AutoString decorates one) without a collation of its own."""
    impl = getattr(type_, "impl", type_)
    return isinstance(impl, String) and not impl.collation


def _with_collation(ddl: str, name: str) -> str:
    """`name TYPE rest` as `name TYPE COLLATE "C" rest` (string types' names hold no space)."""
    head, _, rest = ddl.partition(name + " ")
    typ, sep, tail = rest.partition(" ")
    return f'{head}{name} {typ} COLLATE "C"{sep}{tail}'


def sqlalchemy_url(url: str) -> str:
    """postgresql://… as SQLAlchemy's psycopg 3 URL; anything else is a ConfigError (never echoing the URL)."""
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise ConfigError("EHR_BACKUP_METADATA_URL must be a postgresql://user@host:port/dbname URL") from None
    if parsed.drivername not in SCHEMES or not parsed.database:
        raise ConfigError("EHR_BACKUP_METADATA_URL must be a postgresql://user@host:port/dbname URL "
                          "(with the database's name)")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def check_url(raw: str) -> str | None:
    """Validate EHR_BACKUP_METADATA_URL: None when unset (SQLite), else the URL as given."""
    value = raw.strip()
    if not value:
        return None
    sqlalchemy_url(value)
    return value


def pg_engine(url: str, *, begin: str | None = None) -> Engine:
    """An engine on the metadata database; `begin` runs first in every transaction (the writers' lock);
    without it, transactions read one snapshot (REPEATABLE READ), as a SQLite read transaction does."""
    # UTC sessions, as the stored times are; lock_timeout: a writer waits for the others at most as long
    # as SQLite's busy_timeout; at most 15 connections per engine (two engines per process, plus one per
    # lock held): several instances stay well under PostgreSQL's default max_connections of 100
    engine = create_engine(sqlalchemy_url(url), pool_pre_ping=True, pool_size=5, max_overflow=10,
                           isolation_level="READ COMMITTED" if begin else "REPEATABLE READ",
                           connect_args={"application_name": "ehr-backup",
                                         "options": "-c timezone=UTC -c lock_timeout=30000"})
    if begin is not None:
        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)
    return engine


def add_model_columns(conn: Connection, metadata: MetaData) -> list[str]:
    """Add every column a model has and its table lacks, typed from the model; returns "table.column"s."""
    insp = inspect(conn)
    quote = conn.dialect.identifier_preparer.quote
    added = []
    for table in metadata.sorted_tables:
        if not insp.has_table(table.name):
            continue
        have = {c["name"] for c in insp.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            ddl = f"{quote(column.name)} {column.type.compile(dialect=conn.dialect)}"
            if _plain_text(column.type):
                ddl += ' COLLATE "C"'  # as _byte_order gives the columns of new tables
            value = _default(column)
            if value is not None:  # existing rows get the model's default (a NOT NULL column needs one)
                ddl += " DEFAULT " + str(literal(value, column.type).compile(
                    dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            if not column.nullable and value is not None:
                ddl += " NOT NULL"
            conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN IF NOT EXISTS {ddl}")
            added.append(f"{table.name}.{column.name}")
    return added


def _default(column: Any) -> Any:
    """The model's scalar default of a column, or the zero of its type for a NOT NULL one without any."""
    if column.default is not None and getattr(column.default, "is_scalar", False):
        return column.default.arg
    if column.nullable:
        return None
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return None
    return {str: "", bool: False, int: 0, float: 0.0}.get(kind)
