"""DatabaseLock on PostgreSQL advisory locks, for app instances sharing the metadata database."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url
from sqlmodel import Field, SQLModel

from .errors import Busy, StorageError
from .locks import DatabaseLock
from .pgmeta import advisory_key


class LockHolder(SQLModel, table=True):
    """Who holds an advisory lock (the lock itself lives in PostgreSQL, tied to the holder's connection)."""

    __tablename__ = "lock_holders"

    key: int = Field(primary_key=True)
    pid: int = Field(primary_key=True)  # the holding connection's backend: a row of a dead one is ignored
    holder: str = ""


def psycopg_url(url: str) -> str:
    """The metadata URL as libpq takes it (without SQLAlchemy's driver suffix)."""
    return make_url(url.strip()).set(drivername="postgresql").render_as_string(hide_password=False)


# the live holders of a key: rows whose backend holds that advisory lock now (a crashed instance's
# connection is gone, and its locks and rows with it)
_HOLDERS = """
SELECT h.holder FROM lock_holders h
JOIN pg_locks l ON l.pid = h.pid AND l.locktype = 'advisory' AND l.granted
 AND l.classid = ((%(k)s >> 32) & 4294967295)::bigint::oid AND l.objid = (%(k)s & 4294967295)::bigint::oid
 AND l.objsubid = 1
WHERE h.key = %(k)s ORDER BY h.holder LIMIT 3
"""


class AdvisoryLock(DatabaseLock):
    """An advisory lock held on a connection of its own for the lock's life; released with it.

    The same interface as the flock one: acquire() raises Busy naming the holder, release() is idempotent,
    and the lock may be released on another thread than the one that took it.
    """

    def __init__(self, url: str, name: str, *, shared: bool = False, noun: str = "database") -> None:
        self._url = psycopg_url(url)
        self.name = name
        self.key = advisory_key(f"lock:{name}")
        self._shared = shared
        self._noun = noun
        self._conn: psycopg.Connection | None = None
        self.path = Path(name)  # for messages and callers that name the lock

    def acquire(self, what: str) -> AdvisoryLock:
        """Take the lock or raise Busy naming what holds it."""
        try:
            conn = psycopg.connect(self._url, autocommit=True, application_name="ehr-backup lock",
                                   connect_timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"cannot reach the metadata database for a lock: {exc.__class__.__name__}") from None
        try:
            fn = "pg_try_advisory_lock_shared" if self._shared else "pg_try_advisory_lock"
            row = conn.execute(f"SELECT {fn}(%s)", (self.key,)).fetchone()
            if not (row and row[0]):
                holders = [r[0] for r in conn.execute(_HOLDERS, {"k": self.key}).fetchall() if r[0]]
                conn.close()
                holder = ", ".join(holders) or "another operation"
                raise Busy(f"{self._noun} is busy: {holder} is running; try again when it has finished")
            conn.execute("INSERT INTO lock_holders (key, pid, holder) VALUES (%s, pg_backend_pid(), %s) "
                         "ON CONFLICT (key, pid) DO UPDATE SET holder = excluded.holder",
                         (self.key, f"{what} (pid {os.getpid()} on {socket.gethostname()})"[:300]))
        except psycopg.Error as exc:
            conn.close()
            raise StorageError(f"cannot take a lock in the metadata database: {exc.__class__.__name__}") from None
        self._conn = conn
        return self

    def release(self) -> None:
        """Give the lock back (idempotent); closing the connection would release it too."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("DELETE FROM lock_holders WHERE key = %s AND pid = pg_backend_pid()", (self.key,))
            fn = "pg_advisory_unlock_shared" if self._shared else "pg_advisory_unlock"
            conn.execute(f"SELECT {fn}(%s)", (self.key,))
        except psycopg.Error:
            pass  # the connection is gone: so is the lock
        finally:
            conn.close()
