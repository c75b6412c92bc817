"""What a backup records beside the dump: the database's own properties and the cluster's globals.

pg_dump without --create leaves out the database itself (encoding, locale, owner, ACL, comment,
settings) and the roles it needs; a restore onto a bare server, or into a database created anew, needs
both. They are read from the catalogs as data (names and values, never SQL text), so that a restore
composes its statements with quoted identifiers and literals. `pg_dumpall --globals-only` output is
kept too, for the emergency recipe that has only psql.
"""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import psycopg

from .errors import BackupError, ToolError
from .pg import ConnInfo, ProcessOutput, connect, find_tool


def record(info: ConnInfo, pg_bin: str | None, major: int) -> dict[str, Any]:
    """What a backup's trailer records beside the dump: the database's properties and the globals."""
    try:
        return {"database": database_properties(info), "globals": cluster_globals(info, pg_bin, major)}
    except psycopg.Error as exc:
        raise ToolError(f"cannot read the database's properties: {info.redact(str(exc).strip().splitlines()[0])}") \
            from None


def _rows(conn: psycopg.Connection, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [tuple(_text(v) for v in row) for row in conn.execute(query, params).fetchall()]


def _text(value: Any) -> Any:
    """Text of a SQL_ASCII database comes as bytes: keep every byte (surrogate escapes), as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def database_properties(info: ConnInfo) -> dict[str, Any]:
    """The configured database's properties, as a restore recreates them."""
    with connect(info) as conn:
        version = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])  # type: ignore[index]
        locale = ("datlocale" if version >= 170000 else "daticulocale" if version >= 150000 else "NULL")
        provider = "datlocprovider::text" if version >= 150000 else "'c'"
        rules = "daticurules" if version >= 160000 else "NULL"
        row = _rows(
            conn, f"SELECT d.oid, d.datname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, {provider}, "
            f"{locale}, {rules}, pg_get_userbyid(d.datdba), d.datconnlimit, d.datacl::text, t.spcname, "
            "shobj_description(d.oid, 'pg_database'), pg_database_size(d.oid), d.datallowconn "
            "FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace "
            "WHERE d.datname = current_database()")[0]
        oid = row[0]
        acl = [{"grantor": g, "grantee": e, "privilege": p, "grantable": bool(o)} for g, e, p, o in _rows(
            conn, "SELECT pg_get_userbyid(a.grantor), CASE WHEN a.grantee = 0 THEN NULL "
                  "ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable "
                  "FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = %s ORDER BY 1, 2, 3", (oid,))]
        settings: list[str] = []
        role_settings: dict[str, list[str]] = {}
        for role, config in _rows(conn, "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) "
                                        "END, s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = %s",
                                  (oid,)):
            if role is None:
                settings.extend(config or [])
            else:
                role_settings[role] = list(config or [])
    return {"name": row[1], "encoding": row[2], "collate": row[3], "ctype": row[4],
            "localeProvider": {"c": "libc", "i": "icu", "b": "builtin"}.get(str(row[5]), "libc"),
            "icuLocale": row[6], "icuRules": row[7], "owner": row[8], "connectionLimit": row[9],
            "aclText": row[10], "acl": acl if row[10] is not None else None, "tablespace": row[11],
            "comment": row[12], "sizeBytes": int(row[13]), "allowConnections": bool(row[14]),
            "settings": settings, "roleSettings": role_settings, "serverVersionNum": version}


# The roles this database needs: those owning or granted anything in it (pg_shdepend), its owner, the
# grantees of its privileges, roles with settings in it, the bootstrap superuser (whose ownerships are not
# recorded), and every role linked to those through memberships (groups they belong to, and the members
# of those groups, who log in with them). Roles of other databases are not recorded.
NEEDED_ROLES = """
WITH RECURSIVE me AS (SELECT oid FROM pg_database WHERE datname = current_database()),
seed(oid) AS (
    SELECT refobjid FROM pg_shdepend, me
     WHERE refclassid = 'pg_authid'::regclass
       AND (dbid = me.oid OR (dbid = 0 AND classid = 'pg_database'::regclass AND objid = me.oid))
    UNION SELECT datdba FROM pg_database, me WHERE pg_database.oid = me.oid
    UNION SELECT setrole FROM pg_db_role_setting, me WHERE setdatabase = me.oid AND setrole <> 0
    UNION SELECT 10::oid),
linked(oid) AS (
    SELECT oid FROM seed
    UNION SELECT CASE WHEN m.member = l.oid THEN m.roleid ELSE m.member END
      FROM pg_auth_members m JOIN linked l ON l.oid IN (m.member, m.roleid)
      JOIN pg_roles r ON r.oid = l.oid WHERE r.rolname !~ '^pg_')
SELECT oid FROM linked"""


def _identity(conn: psycopg.Connection) -> str | None:
    """The cluster's system identifier, when this role may read it (tells a restore which server this is)."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        return f"system:{row[0]}" if row and row[0] else None
    except psycopg.Error:
        return None


def cluster_globals(info: ConnInfo, pg_bin: str | None, major: int) -> dict[str, Any]:
    """The roles the database needs (with memberships and settings), the tablespaces, as data; and
    pg_dumpall's globals of the whole cluster as SQL, for the emergency recipe."""
    out: dict[str, Any] = {"roles": [], "memberships": [], "roleSettings": {}, "tablespaces": [],
                           "rolePasswords": False, "sqlBase64": None, "error": None}
    with connect(info) as conn:
        version = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])  # type: ignore[index]
        passwords: dict[str, str | None] = {}
        try:
            with conn.transaction():
                passwords = dict(_rows(conn, "SELECT rolname, rolpassword FROM pg_authid"))  # type: ignore[arg-type]
            out["rolePasswords"] = True
        except psycopg.Error:
            pass  # not a superuser: roles are recorded without their passwords
        out["server"] = _identity(conn)
        for r in _rows(conn, "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
                             "rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil::text, "
                             "shobj_description(oid, 'pg_authid') FROM pg_roles "
                             f"WHERE oid IN ({NEEDED_ROLES}) AND rolname !~ '^pg_' ORDER BY rolname"):
            out["roles"].append({"name": r[0], "superuser": r[1], "inherit": r[2], "createRole": r[3],
                                 "createDb": r[4], "login": r[5], "replication": r[6], "bypassRls": r[7],
                                 "connectionLimit": r[8], "validUntil": r[9], "comment": r[10],
                                 "password": passwords.get(r[0])})
        extra = ", m.inherit_option, m.set_option" if version >= 160000 else ", NULL, NULL"
        for role, member, admin, grantor, inherit, set_ in _rows(
                conn, "SELECT pg_get_userbyid(m.roleid), pg_get_userbyid(m.member), m.admin_option, "
                      f"pg_get_userbyid(m.grantor){extra} FROM pg_auth_members m "
                      f"WHERE m.roleid IN ({NEEDED_ROLES}) AND m.member IN ({NEEDED_ROLES}) ORDER BY 1, 2"):
            out["memberships"].append({"role": role, "member": member, "admin": admin, "grantor": grantor,
                                       "inherit": inherit, "set": set_})
        for role, config in _rows(conn, "SELECT pg_get_userbyid(setrole), setconfig FROM pg_db_role_setting "
                                        f"WHERE setdatabase = 0 AND setrole IN ({NEEDED_ROLES})"):
            out["roleSettings"][role] = list(config or [])
        for name, owner, location in _rows(conn, "SELECT spcname, pg_get_userbyid(spcowner), "
                                                 "pg_tablespace_location(oid) FROM pg_tablespace "
                                                 "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1"):
            out["tablespaces"].append({"name": name, "owner": owner, "location": location})
    try:  # base64: the emergency recipe cuts it out of the trailer with grep and decodes it
        sql_text = dumpall_globals(info, pg_bin, major, passwords=bool(out["rolePasswords"]))
        out["sqlBase64"] = base64.b64encode(sql_text).decode()
    except BackupError as exc:
        out["error"] = exc.message
    return out


def dumpall_globals(info: ConnInfo, pg_bin: str | None, major: int, *, passwords: bool) -> bytes:
    """`pg_dumpall --globals-only` of the server, for loading with psql alone."""
    tool = find_tool("pg_dumpall", major, pg_bin)
    argv = [tool, "--globals-only", "--no-password", f"--database={info.dbname}"]
    if not passwords:
        argv.append("--no-role-passwords")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=info.child_env())
    assert proc.stdout is not None and proc.stderr is not None
    errors = ProcessOutput(proc.stderr, info.redact)
    data = proc.stdout.read()
    rc = proc.wait()
    errors.join()
    if rc != 0:
        raise BackupError(f"pg_dumpall --globals-only failed (exit {rc}): {errors.errors()}")
    return data
