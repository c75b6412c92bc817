"""`ehr-backup database …`: add, list, test and remove database profiles (ehr_backup/profiles.py)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from .audit import Actor
from .errors import InvalidInput
from .text import printable

DATABASE_HELP = ("the database profile (see `ehr-backup database list`; default: DATABASE_URL's, or the demo "
                 "cluster)")


def add_commands(cmd: Any) -> None:
    """Register `database` on the top-level parser's `cmd` helper."""
    d = cmd("database", "database profiles: more databases to back up besides DATABASE_URL (the implicit profile "
                        "named default); --database NAME on create, list, restore, status, prune and schedule")
    sub = d.add_subparsers(dest="database_command", required=True, metavar="ACTION")
    a = sub.add_parser("add", help="add a profile: a connection URL WITHOUT a password (one holding a password is "
                                   "refused), the password from an environment variable, from stdin (stored "
                                   "encrypted with BACKUP_ENCRYPTION_KEY), or else libpq's ~/.pgpass / service file")
    a.add_argument("name", metavar="NAME", help="1-40 characters: a-z, 0-9, '_' and '-'")
    a.add_argument("--url", required=True, help="postgresql://user@host:port/dbname (or key=value conninfo)")
    pw = a.add_mutually_exclusive_group()
    pw.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable "
                                                          "whenever the profile connects (it is not stored)")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin (a prompt on a "
                                                                  "terminal) and store it encrypted; never shown again")
    a.add_argument("--json", action="store_true")
    sub.add_parser("list", help="the profiles, default first: server, database, where the password comes from, "
                                "backups").add_argument("--json", action="store_true")
    r = sub.add_parser("remove", help="forget a profile (refused while a schedule uses it); its backups stay")
    r.add_argument("name", metavar="NAME")
    r.add_argument("--json", action="store_true")
    t = sub.add_parser("test", help="connect with a profile: the server's version and the database's size")
    t.add_argument("name", metavar="NAME")
    t.add_argument("--json", action="store_true")


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Database password: ")
    return sys.stdin.readline()


def dispatch(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    """Run a `database …` command; return its JSON result."""
    action = args.database_command
    if action == "add":
        password = _read_password() if args.password_stdin else None
        if args.password_stdin and not (password or "").strip("\r\n"):
            raise InvalidInput("no password on stdin")
        return service.database_add(actor, args.name, args.url, password_env=args.password_env, password=password)
    if action == "list":
        return {"databases": service.database_list()}
    if action == "remove":
        service.database_remove(actor, args.name)
        return {"removed": args.name}
    return service.database_test(actor, args.name)


def print_human(args: argparse.Namespace, result: Any) -> None:
    """Print a `database …` result for people."""
    action = args.database_command
    if action == "remove":
        print(f"removed database profile {result['removed']} (its backups stay)")
    elif action == "test":
        print(f"{result['name']}: connected to {printable(result['server'])}, {result['serverVersion']}, "
              f"database size {result['databaseSize']} bytes")
    else:
        for p in result["databases"] if action == "list" else [result]:
            server = printable(p["server"] or "")
            print(f"{p['name']:<20} {server:<40} password: {p['passwordSource']}; {p['backups']} backups"
                  + ("  (DATABASE_URL)" if p["implicit"] else ""))
