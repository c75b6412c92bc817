"""`ehr-backup metadata migrate`: move the SQLite metadata database to PostgreSQL (several app instances)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .audit import Actor
from .config import Settings
from .errors import InvalidInput
from .pgmeta import check_url


def add_commands(cmd: Any) -> None:
    """Register `metadata` on the top-level parser's `cmd` helper."""
    m = cmd("metadata", "the metadata database (users, catalogue, audit log, schedules): move it to PostgreSQL "
                        "so that several app instances share it (docs/SCALING.md)")
    sub = m.add_subparsers(dest="metadata_command", required=True, metavar="ACTION")
    what = ("copy every table of the SQLite metadata database into an EMPTY PostgreSQL database in one "
            "transaction, then check each table's row count and the audit chain there (a non-empty target is "
            "refused, a failed copy leaves it empty); then set EHR_BACKUP_METADATA_URL to it on every instance")
    g = sub.add_parser("migrate", help=what, description=what)
    g.add_argument("--to", metavar="URL", help="postgresql://user@host:port/dbname (default: EHR_BACKUP_METADATA_URL; "
                                               "a password comes best from PGPASSWORD or ~/.pgpass, not the URL)")
    g.add_argument("--json", action="store_true")


def source_settings(settings: Settings) -> tuple[Settings, str]:
    """The settings that open the SQLite metadata (the source), and the target URL's origin in them."""
    return dataclasses.replace(settings, metadata_url=None), settings.metadata_url or ""


def dispatch(service: Any, args: argparse.Namespace, actor: Actor, default_url: str) -> Any:
    """Do one `metadata …` action."""
    from .metadata_migrate import migrate

    url = check_url(args.to or default_url)
    if not url:
        raise InvalidInput("say where to: --to postgresql://user@host:port/dbname (or set EHR_BACKUP_METADATA_URL)")
    return migrate(service, actor, url)


def print_human(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """What a person reads after a migration."""
    for table, rows in result["tables"].items():
        print(f"  {table:<24} {rows} rows")
    print(f"copied {sum(result['tables'].values())} rows in {len(result['tables'])} tables; row counts match; "
          f"audit chain verified ({result['auditEntries']} entries)")
    for name in result["notCopied"]:
        print(f"note: table {name} is not one of this version's and was not copied")
    print("now set EHR_BACKUP_METADATA_URL to that database on every instance and restart them")
