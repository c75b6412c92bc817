"""The database as a whole: create one with a backup's properties, apply its settings, swap it in.

Every statement is composed from names and values with libpq's quoting; nothing from a backup is
ever run as SQL text here.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from ..errors import Busy, DatabaseUnavailable, InvalidInput
from ..pg import ConnInfo, connect

# the locale providers a backup may name, as constant SQL (the name in a header is never put into SQL)
PROVIDERS = {"libc": sql.SQL("libc"), "icu": sql.SQL("icu"), "builtin": sql.SQL("builtin")}

MAX_NAME = 63
# Settings whose value is a list that pg_dump quotes element by element (dumputils.c).
LIST_SETTINGS = {"search_path", "session_preload_libraries", "shared_preload_libraries",
                 "local_preload_libraries", "temp_tablespaces", "unix_socket_directories"}


def stamp(now: datetime | None = None) -> str:
    """A UTC time for database names: 20261129T204500."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")


def derived_name(live: str, suffix: str) -> str:
    """`<live><suffix>` cut to PostgreSQL's 63 bytes (the live name is shortened, never the suffix)."""
    room = MAX_NAME - len(suffix.encode())
    base = live.encode()[:room].decode("utf-8", "ignore")
    return base + suffix


def free_name(conn: psycopg.Connection, live: str, kind: str, when: str) -> str:
    """`<live>__<kind>_<when>`, with a counter when a database of that name exists already."""
    for n in range(100):
        name = derived_name(live, f"__{kind}_{when}" + (f"_{n}" if n else ""))
        if not exists(conn, name):
            return name
    raise Busy(f"too many databases named {live}__{kind}_{when}_…; drop some of them")


def maintenance(info: ConnInfo) -> ConnInfo:
    """The server's maintenance database, from which databases are created, renamed and dropped."""
    return info.with_dbname("postgres")


def exists(conn: psycopg.Connection, name: str) -> bool:
    """Whether a database of this name exists."""
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def server_major(conn: psycopg.Connection) -> int:
    """The server's major version."""
    row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    return int(row[0]) // 10000 if row else 0


def live_properties(info: ConnInfo) -> dict[str, Any] | None:
    """The properties of an existing database (used for backups that did not record their own)."""
    from ..clusterinfo import database_properties

    with connect(maintenance(info)) as conn:
        if not exists(conn, info.dbname):
            return None
    return database_properties(info)


def create(conn: psycopg.Connection, name: str, props: dict[str, Any] | None) -> None:
    """CREATE DATABASE from template0 with the recorded encoding, locale, provider, owner and tablespace."""
    parts = [sql.SQL("CREATE DATABASE {} WITH TEMPLATE template0").format(sql.Identifier(name))]
    if props:
        parts.append(sql.SQL("ENCODING {}").format(sql.Literal(props["encoding"])))
        parts.append(sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(props["collate"]),
                                                                  sql.Literal(props["ctype"])))
        provider = props.get("localeProvider") or "libc"
        if provider not in PROVIDERS:
            raise InvalidInput("the backup names an unknown locale provider")
        major = server_major(conn)
        if provider != "libc" or major >= 15:
            if major < 15:
                raise InvalidInput(f"the backup's database uses the {provider} locale provider, which this "
                                   f"server (PostgreSQL {major}) does not have")
            parts.append(sql.SQL("LOCALE_PROVIDER {}").format(PROVIDERS[provider]))
            if props.get("icuLocale") and provider == "icu":
                parts.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(props["icuLocale"])))
            if props.get("icuLocale") and provider == "builtin":
                parts.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(props["icuLocale"])))
            if props.get("icuRules") and major >= 16:
                parts.append(sql.SQL("ICU_RULES {}").format(sql.Literal(props["icuRules"])))
        if props.get("owner") and _role_exists(conn, props["owner"]):
            parts.append(sql.SQL("OWNER {}").format(sql.Identifier(props["owner"])))
        space = props.get("tablespace")
        if space and space != "pg_default" and _tablespace_exists(conn, space):
            parts.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(space)))
    try:
        conn.execute(sql.SQL(" ").join(parts))
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot create database {name}: {_first_line(exc)}") from None


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _tablespace_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_tablespace WHERE spcname = %s", (name,)).fetchone() is not None


def split_list_setting(value: str) -> list[str]:
    """Split a list-valued setting as PostgreSQL's SplitGUCList does (double quotes group, "" escapes)."""
    out: list[str] = []
    for m in re.finditer(r'\s*(?:"((?:[^"]|"")*)"|([^,]*?))\s*(?:,|$)', value):
        if m.end() == m.start():
            break
        out.append(m.group(1).replace('""', '"') if m.group(1) is not None else (m.group(2) or "").strip())
        if m.end() >= len(value):
            break
    return out


def setting_clause(item: str) -> sql.Composed:
    """`name TO value` for ALTER ... SET, from a pg_db_role_setting entry `name=value`."""
    name, _, value = item.partition("=")
    if name.lower() in LIST_SETTINGS:
        values = sql.SQL(", ").join(sql.Literal(v) for v in split_list_setting(value))
        return sql.SQL("{} TO {}").format(sql.Identifier(name), values)
    return sql.SQL("{} TO {}").format(sql.Identifier(name), sql.Literal(value))


def apply_properties(conn: psycopg.Connection, name: str, props: dict[str, Any]) -> list[str]:
    """Give database `name` the recorded settings, role settings, ACL, comment and connection limit.

    Returns notes on what could not be applied exactly (e.g. a role that does not exist here).
    """
    notes: list[str] = []
    db = sql.Identifier(name)
    for item in props.get("settings") or []:
        _try(conn, sql.SQL("ALTER DATABASE {} SET ").format(db) + setting_clause(item), notes,
             f"database setting {item.partition('=')[0]}")
    for role, items in (props.get("roleSettings") or {}).items():
        if not _role_exists(conn, role):
            notes.append(f"settings of role {role} in the database were not applied: the role does not exist")
            continue
        for item in items:
            _try(conn, sql.SQL("ALTER ROLE {} IN DATABASE {} SET ").format(sql.Identifier(role), db)
                 + setting_clause(item), notes, f"setting {item.partition('=')[0]} of role {role}")
    if props.get("comment") is not None:
        _try(conn, sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(props["comment"])), notes,
             "the database comment")
    limit = props.get("connectionLimit")
    if limit is not None and int(limit) != -1:
        _try(conn, sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(db, sql.Literal(int(limit))), notes,
             "the connection limit")
    if props.get("acl") is not None:
        _apply_acl(conn, name, props, notes)
    if props.get("allowConnections") is False:
        _try(conn, sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(db), notes,
             "ALLOW_CONNECTIONS false")
    return notes


def _apply_acl(conn: psycopg.Connection, name: str, props: dict[str, Any], notes: list[str]) -> None:
    """Replace the database's privileges with the recorded ones, granted by their recorded grantors."""
    db = sql.Identifier(name)
    owner = props.get("owner")
    revoke = sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db)
    _try(conn, revoke, notes, "default privileges")
    if owner and _role_exists(conn, owner):
        _try(conn, sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, sql.Identifier(owner)), notes,
             "the owner's default privileges")
    me = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
    for item in props["acl"]:
        grantee, grantor = item.get("grantee"), item.get("grantor")
        if grantee is not None and not _role_exists(conn, grantee):
            notes.append(f"{item['privilege']} on the database for {grantee} was not granted: no such role")
            continue
        to = sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)
        stmt = sql.SQL("GRANT {} ON DATABASE {} TO {}").format(sql.SQL(_privilege(item["privilege"])), db, to)
        if item.get("grantable"):
            stmt += sql.SQL(" WITH GRANT OPTION")
        as_grantor = grantor and grantor != me and _role_exists(conn, grantor)
        try:
            with conn.transaction():
                if as_grantor:
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(grantor)))
                conn.execute(stmt)
        except psycopg.Error as exc:
            notes.append(f"{item['privilege']} on the database for {grantee or 'PUBLIC'} was not granted: "
                         f"{_first_line(exc)}")


def _privilege(text: str) -> str:
    if text not in ("CONNECT", "CREATE", "TEMPORARY", "TEMP"):
        raise InvalidInput("an unknown database privilege in the backup")
    return text


def _try(conn: psycopg.Connection, stmt: sql.Composed, notes: list[str], what: str) -> None:
    try:
        with conn.transaction():
            conn.execute(stmt)
    except psycopg.Error as exc:
        notes.append(f"{what} was not applied: {_first_line(exc)}")


def acl_text(conn: psycopg.Connection, name: str) -> str | None:
    """The database's ACL as text (for comparing with what the backup recorded)."""
    row = conn.execute("SELECT datacl::text FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row[0] if row else None


def terminate(conn: psycopg.Connection, name: str) -> int:
    """End every other session connected to a database; return how many were ended."""
    rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    return sum(1 for (ok,) in rows if ok)


def drop(conn: psycopg.Connection, name: str, info: ConnInfo | None = None) -> None:
    """Drop a database, ending its sessions first (and detaching its subscriptions, which would refuse it)."""
    stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    try:
        conn.execute(stmt)
        return
    except psycopg.errors.ObjectInUse as exc:
        if info is None or "subscription" not in str(exc):
            raise DatabaseUnavailable(f"cannot drop database {name}: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot drop database {name}: {_first_line(exc)}") from None
    try:
        detach_subscriptions(info.with_dbname(name))
        conn.execute(stmt)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot drop database {name}: {_first_line(exc)}") from None


def _writable(info: ConnInfo) -> psycopg.Connection:
    """A connection to a database that writes even when the database defaults to read-only sessions."""
    conn = connect(info)
    conn.execute("SET default_transaction_read_only = off")
    return conn


def subscriptions(info: ConnInfo, *, enabled_only: bool = False) -> list[str]:
    """The logical replication subscriptions of a database."""
    with _writable(info) as conn:
        rows = conn.execute("SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database "
                            "WHERE datname = current_database())" + (" AND subenabled" if enabled_only else "")
                            + " ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def set_subscriptions(info: ConnInfo, names: list[str], *, enabled: bool) -> None:
    """Enable or disable subscriptions of a database (a kept copy must not compete for their slots)."""
    if not names:
        return
    with _writable(info) as conn:
        for name in names:
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} {}").format(sql.Identifier(name),
                                                                    sql.SQL("ENABLE" if enabled else "DISABLE")))


def detach_subscriptions(info: ConnInfo) -> None:
    """Drop a database's subscriptions without touching their replication slots on the publisher."""
    names = subscriptions(info)
    with _writable(info) as conn:
        for name in names:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


def swap(conn: psycopg.Connection, live: str, new: str, previous: str | None, attempts: int = 5) -> None:
    """In one transaction, rename `live` to `previous` (when it exists) and `new` to `live`.

    Other sessions of `live` are ended first; an application that reconnects at once can make the
    rename fail, so it is tried a few times before giving up (nothing has changed then).
    """
    for attempt in range(attempts):
        if previous is not None:
            terminate(conn, live)
        terminate(conn, new)
        try:
            with conn.transaction():
                if previous is not None:
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(live),
                                                                                  sql.Identifier(previous)))
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(new),
                                                                              sql.Identifier(live)))
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.2 * (attempt + 1))
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot swap in the restored database: {_first_line(exc)}") from None
    raise Busy(f"other sessions keep connecting to {live}; stop the applications that use it and try again "
               "(the restored copy was not swapped in)")


def check_privileges(conn: psycopg.Connection, live: str, replacing: bool) -> list[str]:
    """What this role lacks for a restore by swap: an empty list when it may go ahead."""
    row = conn.execute("SELECT rolsuper, rolcreatedb, pg_has_role(current_user, 'pg_signal_backend', "
                       "'MEMBER') FROM pg_roles WHERE rolname = current_user").fetchone()
    assert row is not None
    superuser, createdb, signal = row
    missing = []
    if not (superuser or createdb):
        missing.append("the CREATEDB privilege (to build the restored copy)")
    if replacing:
        owner = conn.execute("SELECT pg_has_role(current_user, datdba, 'MEMBER') FROM pg_database "
                             "WHERE datname = %s", (live,)).fetchone()
        if not superuser and not (owner and owner[0]):
            missing.append(f"ownership of {live} (to rename it)")
        if not (superuser or signal):
            missing.append("membership in pg_signal_backend (to end other sessions of the database)")
    return missing


def free_space_shortfall(conn: psycopg.Connection, needed: int) -> tuple[int, int] | None:
    """(needed, free) when the server's data directory is on this machine and lacks room, else None."""
    row = conn.execute("SELECT current_setting('data_directory', true)").fetchone()
    path = row[0] if row else None
    if not path or not os.path.isdir(path):
        return None  # a remote server, or not allowed to know: the load itself will tell
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    return (needed, free) if free < needed else None


def _first_line(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    if diag is not None and diag.message_primary:
        return str(diag.message_primary)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
