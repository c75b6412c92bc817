"""Roles for a bare server: create the ones a backup recorded and the server lacks; never alter others."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

_FLAGS = (("superuser", "SUPERUSER"), ("inherit", "INHERIT"), ("createRole", "CREATEROLE"),
          ("createDb", "CREATEDB"), ("login", "LOGIN"), ("replication", "REPLICATION"),
          ("bypassRls", "BYPASSRLS"))
_NEEDS_SUPERUSER = ("superuser", "replication", "bypassRls")


def ensure_roles(conn: psycopg.Connection, recorded: dict[str, Any]) -> dict[str, list[str]]:
    """Create missing roles with their attributes, password, settings, comment and memberships."""
    from .database import setting_clause

    report: dict[str, list[str]] = {"created": [], "existing": [], "notes": []}
    existing = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
    superuser = bool(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0])  # type: ignore[index]
    created: set[str] = set()
    for role in recorded.get("roles") or []:
        name = role["name"]
        if name in existing:
            report["existing"].append(name)
            continue
        options: list[sql.Composable] = []
        for key, word in _FLAGS:
            on = bool(role.get(key))
            if on and key in _NEEDS_SUPERUSER and not superuser:
                report["notes"].append(f"role {name} was created without {word}: only a superuser may grant it")
                on = False
            options.append(sql.SQL(word if on else "NO" + word))
        if role.get("connectionLimit") not in (None, -1):
            options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(role["connectionLimit"]))))
        if role.get("validUntil"):
            options.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role["validUntil"])))
        if role.get("password"):
            options.append(sql.SQL("PASSWORD {}").format(sql.Literal(role["password"])))
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE ROLE {} WITH ").format(sql.Identifier(name))
                             + sql.SQL(" ").join(options))
                for item in (recorded.get("roleSettings") or {}).get(name, []):
                    conn.execute(sql.SQL("ALTER ROLE {} SET ").format(sql.Identifier(name)) + setting_clause(item))
                if role.get("comment") is not None:
                    conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name),
                                                                            sql.Literal(role["comment"])))
        except psycopg.Error as exc:
            report["notes"].append(f"role {name} could not be created: {_first_line(exc)}")
            continue
        created.add(name)
        report["created"].append(name)
    if not recorded.get("rolePasswords") and created:
        report["notes"].append("the backup was made without role passwords (the backing-up role could not "
                               "read them): set passwords for the created roles before they log in")
    for m in recorded.get("memberships") or []:
        if m["member"] not in created:
            if m["role"] in created:
                report["notes"].append(f"{m['member']} was not made a member of the new role {m['role']}: "
                                       "existing roles are never changed")
            continue
        grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(m["role"]), sql.Identifier(m["member"]))
        if m.get("admin"):
            grant += sql.SQL(" WITH ADMIN OPTION")
        try:
            with conn.transaction():
                conn.execute(grant)
        except psycopg.Error as exc:
            report["notes"].append(f"{m['member']} was not made a member of {m['role']}: {_first_line(exc)}")
    return report


def _first_line(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    return str(diag.message_primary) if diag is not None and diag.message_primary else exc.__class__.__name__
