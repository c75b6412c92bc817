"""PostgreSQL access: connection settings, server facts, version-matched tools, child processes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
from psycopg import conninfo as pg_conninfo

from .errors import DatabaseUnavailable, InvalidInput, ToolError

_ENV = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER",
        "password": "PGPASSWORD", "dbname": "PGDATABASE", "passfile": "PGPASSFILE",
        "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
        "sslkey": "PGSSLKEY", "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT",
        "options": "PGOPTIONS", "application_name": "PGAPPNAME", "service": "PGSERVICE",
        "target_session_attrs": "PGTARGETSESSIONATTRS", "gssencmode": "PGGSSENCMODE",
        "channel_binding": "PGCHANNELBINDING", "krbsrvname": "PGKRBSRVNAME"}


# What children inherit from our environment: how to find programs and files, locale and time zone, and
# libpq's own configuration files. Nothing else: our keys and settings stay in this process.
# Not PGCLIENTENCODING: a dump in a client-only encoding (SJIS, BIG5, ...) can hide quote and backslash
# bytes inside characters, which no reader of the dump but the server could then split safely.
_CHILD_KEEP = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PGPASSFILE",
               "PGSERVICEFILE", "PGSYSCONFDIR", "PGLOCALEDIR", "PGTZ"}


def base_child_env() -> dict[str, str]:
    """The allow-listed part of our environment that any child process (pg_dump, psql, pg_ctl) gets."""
    return {k: v for k, v in os.environ.items() if (k in _CHILD_KEEP or k.startswith("LC_"))
            and not k.startswith("PG")}


@dataclass(frozen=True)
class ConnInfo:
    """A parsed DATABASE_URL; the password never appears in repr, argv or messages."""

    params: dict[str, str] = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> ConnInfo:
        """Parse a postgresql:// URL or a key=value conninfo string."""
        try:
            params = pg_conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise InvalidInput("DATABASE_URL is not a valid PostgreSQL connection URL") from None
        unknown = set(params) - set(_ENV)
        if unknown:
            raise InvalidInput(f"DATABASE_URL has unsupported parameters: {', '.join(sorted(unknown))}")
        params = {k: str(v) for k, v in params.items() if v is not None}
        if not params.get("dbname"):
            raise InvalidInput("DATABASE_URL must name a database")
        return cls(params)

    @property
    def dbname(self) -> str:
        """The database name."""
        return self.params["dbname"]

    @property
    def display(self) -> str:
        """user@host:port/dbname, without the password."""
        host = self.params.get("host", "localhost")
        port = self.params.get("port", "5432")
        user = self.params.get("user", "")
        return f"{user + '@' if user else ''}{host}:{port}/{self.dbname}"

    def with_dbname(self, dbname: str) -> ConnInfo:
        """The same server with another database."""
        return ConnInfo({**self.params, "dbname": dbname})

    def conninfo(self) -> str:
        """A conninfo string for psycopg."""
        return pg_conninfo.make_conninfo(**self.params)

    def child_env(self) -> dict[str, str]:
        """Environment for pg_dump/psql: an allow-list of the caller's (never BACKUP_ENCRYPTION_KEY or
        other secrets of ours), plus this connection's settings."""
        env = base_child_env()
        env.update({k: v for k, v in os.environ.items() if k in _CHILD_KEEP and k.startswith("PG")})
        env.update({_ENV[k]: v for k, v in self.params.items()})
        env["PGCONNECT_TIMEOUT"] = self.params.get("connect_timeout", "10")
        return env

    def redact(self, text: str) -> str:
        """Remove the password (and anything shaped like one) from a message."""
        pw = self.params.get("password")
        if pw:
            text = text.replace(pw, "****")
        return re.sub(r"(?i)(password[=:]\s*|://[^:/@\s]*:)[^@\s]+", r"\1****", text)


@dataclass(frozen=True)
class ServerFacts:
    """What a backup needs to know about the server before it starts."""

    major: int
    version: str
    database_size: int


def connect(info: ConnInfo, *, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection, translating failures into DatabaseUnavailable with a redacted reason."""
    try:
        return psycopg.connect(info.conninfo(), autocommit=autocommit, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to {info.display}: "
                                  f"{info.redact(str(exc).strip().splitlines()[0] if str(exc) else 'error')}") \
            from None


def server_facts(info: ConnInfo) -> ServerFacts:
    """Ask the server its version and the database's size."""
    with connect(info) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int, version(), "
                           "pg_database_size(current_database())").fetchone()
    assert row is not None
    return ServerFacts(major=row[0] // 10000, version=str(row[1]).split(" on ")[0], database_size=int(row[2]))


def server_identity(info: ConnInfo) -> str:
    """What identifies the server behind a URL, whichever address names it.

    The cluster's system identifier when the role may read it, else the address and port the server
    reports, else (unreachable) the URL's own host and port.
    """
    raw = f"{info.params.get('host') or info.params.get('hostaddr') or 'localhost'}:{info.params.get('port', '5432')}"
    try:
        with psycopg.connect(info.with_dbname("postgres").conninfo(), autocommit=True, connect_timeout=5) as conn:
            try:
                row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
                if row and row[0]:
                    return f"system:{row[0]}"
            except psycopg.Error:
                pass
            row = conn.execute("SELECT inet_server_addr()::text, current_setting('port')").fetchone()
            if row and row[0]:
                return f"addr:{row[0]}:{row[1]}"
    except psycopg.Error:
        pass
    return f"url:{raw}"


def data_directory(info: ConnInfo) -> str | None:
    """The server's data directory, if this role may read it (superusers, pg_read_all_settings)."""
    try:
        with psycopg.connect(info.conninfo(), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT current_setting('data_directory', true)").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row and row[0] else None


def tool_version(path: str) -> tuple[int, str]:
    """Return (major, full text) of a PostgreSQL client tool's --version."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    m = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", out)
    if not m:
        raise ToolError(f"cannot read the version of {path}")
    return int(m.group(1)), out


def find_tool(name: str, major: int, extra_dir: str | None = None) -> str:
    """Find `name` (pg_dump/psql) whose major version matches the server's."""
    candidates = []
    if extra_dir:
        candidates.append(str(Path(extra_dir) / name))
    candidates.append(f"/usr/lib/postgresql/{major}/bin/{name}")
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    seen: list[str] = []
    for path in candidates:
        if os.access(path, os.X_OK) and path not in seen:
            seen.append(path)
            found, _ = tool_version(path)
            if found == major:
                return path
    raise ToolError(f"{name} for PostgreSQL {major} is needed (the server is version {major}); install "
                    f"postgresql-client-{major} or set EHR_BACKUP_PG_BIN to its bin directory")


class ProcessOutput:
    """Read a child's stderr on a thread: call a handler per line, keep a redacted head and tail."""

    def __init__(self, stream: IO[bytes], redact: Callable[[str], str],
                 on_line: Callable[[str], None] | None = None, keep: int = 20) -> None:
        self._stream = stream
        self._redact = redact
        self._on_line = on_line
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=keep)
        self._keep = keep
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for raw in iter(self._stream.readline, b""):
            line = self._redact(raw.decode("utf-8", "replace").rstrip())
            if len(self.head) < self._keep:
                self.head.append(line)
            self.tail.append(line)
            if self._on_line:
                self._on_line(line)

    def join(self) -> None:
        """Wait until the stream has closed."""
        self._thread.join(timeout=30)

    def errors(self) -> str:
        """The first error-looking lines, else the last lines, as one line for a message."""
        bad = [ln for ln in [*self.head, *self.tail]
               if re.search(r"error|fatal|could not|failed|refused|denied|abort|terminat", ln, re.IGNORECASE)]
        lines = list(dict.fromkeys(bad))[:3] or list(self.tail)[-2:]
        return " | ".join(lines)[:500] or "no message"
