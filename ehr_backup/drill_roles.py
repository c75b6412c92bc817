"""Roles a drill's backup needs that the drill server lacks: made powerless, marked, and dropped again.

A drill must leave nothing behind and must never give anyone a way in: a backup of another cluster
records its roles with their attributes and password (superuser, login, …), and recreating those on
the drill server (by default production) would hand that cluster's password a login there. So a drill
creates each missing role NOLOGIN, without password and without any privileged attribute, only to own
the scratch database's objects; the role's comment carries the drill's mark (its random scratch name),
and only a role with that mark is ever dropped, so a role that existed before is never touched.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from .errors import BackupError
from .models import Drill
from .pg import ConnInfo, connect

if TYPE_CHECKING:
    from .db import Database

POWERLESS = ("NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT "
             "CONNECTION LIMIT 0")


def mark(scratch: str) -> str:
    """The comment a drill puts on the roles it makes (the scratch name is random: one drill's own)."""
    return f"made by an EHR Backup restore drill into {scratch}; dropped when the drill ends"


def missing(conn: psycopg.Connection, recorded: dict[str, Any] | None) -> list[str]:
    """The roles the backup recorded that this server lacks, in the backup's order."""
    existing = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
    names = [r.get("name") for r in (recorded or {}).get("roles") or [] if isinstance(r, dict)]
    return [n for n in dict.fromkeys(names) if isinstance(n, str) and n and n not in existing]


def create(conn: psycopg.Connection, name: str, scratch: str) -> str | None:
    """Create one powerless marked role; None when made, else why not (it exists: someone else's)."""
    try:
        with conn.transaction():  # the mark is set in the same transaction: no unmarked role of ours
            conn.execute(sql.SQL("CREATE ROLE {} WITH " + POWERLESS).format(sql.Identifier(name)))
            conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name), sql.Literal(mark(scratch))))
    except psycopg.errors.DuplicateObject:
        return "it exists already"
    except psycopg.Error as exc:
        return _first_line(exc)
    return None


def drop(conn: psycopg.Connection, name: str, scratch: str) -> tuple[bool, str | None]:
    """Drop a role this drill made. (settled, note): settled when it is gone or was never ours."""
    row = conn.execute("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
                       (name,)).fetchone()
    if row is None:
        return True, None  # never made (a crash between recording and creating) or dropped already
    if row[0] != mark(scratch):
        return True, f"role {name} was left: it was not made by this drill"
    try:
        with conn.transaction():
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        return False, f"role {name} could not be dropped: {_first_line(exc)}"
    return True, None


def pending(db: Database, drill_id: int | None) -> list[str]:
    """The roles a drill made and has not dropped yet (recorded on its row)."""
    with db.reading() as s:
        row = s.get(Drill, drill_id)
    return list(json.loads(row.roles_pending)) if row is not None and row.roles_pending else []


def _record(db: Database, drill_id: int | None, names: list[str]) -> None:
    with db.writing() as s:
        row = s.get(Drill, drill_id)
        if row is not None:
            row.roles_pending = json.dumps(names) if names else ""
            s.add(row)


def make_all(db: Database, conn: psycopg.Connection, row: Drill, recorded: dict[str, Any]) -> list[str]:
    """Create the roles the backup's objects need and the server lacks, each recorded first; report notes."""
    notes = []
    for name in missing(conn, recorded):
        _record(db, row.id, [*pending(db, row.id), name])  # before it exists: a crash leaves a trace
        why = create(conn, name, row.scratch)
        if why is None:
            notes.append(f"role {name}, which the backup's objects belong to, was created for the drill: "
                         "NOLOGIN, without password or privileges; dropped afterwards")
        else:
            _record(db, row.id, [n for n in pending(db, row.id) if n != name])
            notes.append(f"role {name} was not created: {why}")
    return notes


def drop_all(db: Database, target: ConnInfo, row: Drill) -> list[str]:
    """Drop the roles a drill made (once its scratch database is gone); report notes."""
    names = pending(db, row.id)
    if not names:
        return []
    left: list[str] = []
    notes: list[str] = []
    try:
        with connect(target) as conn:
            for name in names:
                settled, note = drop(conn, name, row.scratch)
                notes.append(note or f"role {name} was dropped")
                if not settled:
                    left.append(name)
    except BackupError as exc:
        left, notes = names, [f"roles {', '.join(names)} were not dropped: {exc.message}"]
    _record(db, row.id, left)
    if left:
        notes.append(f"the next start-up drops roles {', '.join(left)}")
    return notes


def _first_line(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    return str(diag.message_primary) if diag is not None and diag.message_primary else exc.__class__.__name__
