"""The `ehr-backup` command line: parse, call one service method, print the result or a one-line error."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import (__version__, cli_alerts, cli_catalogue, cli_databases, cli_destinations, cli_drills, cli_metadata,
               cli_schedules, demo)
from .audit import Actor
from .catalogue import utcnow
from .config import VARIABLES, Settings
from .drills import DrillFailed
from .errors import BackupError, InvalidInput, RowCountsDiffer
from .keys import generate_key
from .pipeline import Progress
from .retention import RetentionPolicy
from .safedir import os_error
from .text import printable as _printable
from .token_expiry import MAX_DAYS, expires_after, is_expired, stamp

EPILOG = "environment:\n" + "\n".join(f"  {k:<28} {v}" for k, v in VARIABLES.items())


class VerifyFailed(BackupError):
    """Some backups of a verification run failed (the run's results go with it)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ehr-backup", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Encrypted, authenticated backups of an EHR PostgreSQL database.",
                                epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"ehr-backup {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_)

    c = cmd("create", "make a backup of DATABASE_URL (or of --database NAME) now")
    c.add_argument("--description", required=True, help="what this backup is for (names the file)")
    c.add_argument("--location", default="default",
                   choices=["default", "desktop", "documents", "downloads", "custom"])
    c.add_argument("--path", help="directory for --location custom: absolute, inside EHR_BACKUP_CUSTOM_ROOTS; "
                                  "its last folder is created if missing")
    c.add_argument("--compression", choices=["gzip", "zstd"], help="default: EHR_BACKUP_COMPRESSION or gzip")
    c.add_argument("--destination", action="append", default=[], metavar="NAME",
                   help="also copy to this S3 destination (repeatable; a local location key picks the local "
                        "file's location); one pg_dump, every copy with its own SHA-256 and status")
    c.add_argument("--json", action="store_true", help="print the backup as one JSON object")
    c.add_argument("--database", metavar="NAME", help=cli_databases.DATABASE_HELP)
    c.add_argument("--no-local", action="store_true", help="write no local file: only the S3 --destination copies "
                   "(the first good one is the primary; no local free-space check)")

    c = cmd("list", "list backups in every location (newest first); --limit shows one page")
    c.add_argument("--location", choices=["default", "desktop", "documents", "downloads", "custom"])
    c.add_argument("--limit", type=int, metavar="N", help="one page of at most N backups (1-500), with the total "
                   "and the cursor of the next page")
    c.add_argument("--cursor", metavar="C", help="continue after the page that printed this cursor")
    c.add_argument("--database", metavar="NAME", help="only backups of this database profile (default: "
                   "DATABASE_URL's); a name that is no profile: of the databases of that name")
    c.add_argument("--kind", choices=["manual", "scheduled", "safety", "discovered"],
                   help="only this kind (with --limit)")
    c.add_argument("--status", help="only this state: completed, running, failed, cancelled, discovered, verified, "
                   "verify-failed, unverified (with --limit)")
    c.add_argument("--search", help="only backups whose description or id contains this text (with --limit)")
    c.add_argument("--sort", default="createdAt", choices=["createdAt", "description", "size", "status", "location",
                                                          "database", "kind", "createdBy"], help="(with --limit)")
    c.add_argument("--oldest-first", action="store_true", help="ascending order (with --limit)")
    c.add_argument("--json", action="store_true", help='print {"backups": [...]} (with --limit also total and '
                   'nextCursor)')

    c = cmd("verify", "authenticate every byte, decompress, and check the dump is complete and its row counts")
    c.add_argument("backup_id", metavar="BACKUP_ID", nargs="?")
    c.add_argument("--all", action="store_true", help="verify every stored backup (oldest first) and read each "
                   "S3 copy back; failures are recorded and counted, and make the exit status non-zero")
    c.add_argument("--since", metavar="YYYY-MM-DD", help="with --all: only backups made on or after this day (UTC)")
    c.add_argument("--due", action="store_true", help="re-read tonight's share of the stored backups, so that each "
                   "is re-read within EHR_BACKUP_REVERIFY_DAYS days (for a nightly timer)")
    c.add_argument("--destination", metavar="NAME", help="with BACKUP_ID: read back its copy at this S3 destination "
                   "(every byte authenticated, SHA-256 compared with the backup's)")
    c.add_argument("--json", action="store_true")

    c = cmd("status", "storage per location (used, free, growth, forecast fill date, warnings) and backup sizes "
                      "per database")
    c.add_argument("--json", action="store_true")
    c.add_argument("--database", metavar="NAME", help="only this database profile's backup sizes")

    c = cmd("restore", "replace a database with a backup: built into a fresh database, checked, then swapped in "
                       "(the previous one is kept for --rollback); or restore chosen tables beside the live ones")
    c.add_argument("backup_id", metavar="BACKUP_ID", nargs="?")
    c.add_argument("--target-url", help="restore into this database instead (created if absent)")
    c.add_argument("--database", metavar="NAME", help="restore into this database profile's database (default: "
                   "the profile the backup was made from)")
    c.add_argument("--mode", choices=["swap", "recreate"], default="swap",
                   help="swap (default): build a fresh copy and swap it in atomically, keeping the previous "
                        "database; recreate: for servers without room for a second copy: a safety backup, then "
                        "the database is dropped and created anew (not atomic; a failure loads the safety backup)")
    c.add_argument("--jobs", type=int, metavar="N", help="connections that load in parallel (default: this "
                   "host's CPUs, at most 8)")
    c.add_argument("--table", action="append", metavar="SCHEMA.TABLE", help="restore only this table (repeat "
                   "for more), with its indexes, constraints and comments")
    c.add_argument("--schema", action="append", metavar="NAME", help="restore only the tables of this schema")
    c.add_argument("--into-schema", metavar="NAME", help="with --table/--schema: create this schema and restore "
                   "the tables into it, beside the live ones")
    roles = c.add_mutually_exclusive_group()
    roles.add_argument("--with-roles", dest="roles", action="store_const", const=True, help="create the roles "
                       "the database needs that the server lacks (the default on a server other than the backup's "
                       "own); existing roles are never changed")
    roles.add_argument("--no-roles", dest="roles", action="store_const", const=False, help="create no roles")
    c.add_argument("--no-safety-backup", action="store_true",
                   help="with --mode recreate: do not back up the database before replacing it")
    c.add_argument("--rollback", nargs="?", const="", metavar="DATABASE",
                   help="put back the database the last restore replaced (default: DATABASE_URL's)")
    c.add_argument("--yes", action="store_true", help="confirm that the target database is replaced")
    c.add_argument("--json", action="store_true")

    c = cmd("contents", "list what a backup holds (schemas, tables with rows and sizes, other objects), "
                        "like pg_restore -l, without touching any database")
    c.add_argument("backup_id", metavar="BACKUP_ID")
    c.add_argument("--json", action="store_true")

    c = cmd("previous", "databases a restore replaced and keeps for rollback (dropped after "
                        "EHR_BACKUP_KEEP_PREVIOUS_HOURS)")
    kept = c.add_subparsers(dest="previous_command", required=True, metavar="ACTION")
    kept.add_parser("list", help="list them").add_argument("--json", action="store_true")
    d = kept.add_parser("drop", help="drop one now")
    d.add_argument("name", metavar="NAME")
    d.add_argument("--yes", action="store_true", help="confirm")
    d.add_argument("--json", action="store_true")
    d.add_argument("--database", metavar="NAME", help="on this database profile's server (default: DATABASE_URL's)")

    c = cmd("delete", "delete a backup file and its catalogue entry")
    c.add_argument("backup_id", metavar="BACKUP_ID")
    c.add_argument("--yes", action="store_true", help="confirm the deletion")
    c.add_argument("--json", action="store_true")

    _rotation_commands(cmd)
    cli_schedules.add_commands(cmd)
    cli_drills.add_commands(cmd)
    cli_alerts.add_commands(cmd)
    cli_catalogue.add_commands(cmd)
    cli_databases.add_commands(cmd)
    cli_destinations.add_commands(cmd)
    cli_metadata.add_commands(cmd)

    c = cmd("decrypt", "decrypt a backup file to plain SQL with only the file and the key")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--output", required=True, metavar="OUT.sql")
    c.add_argument("--json", action="store_true")

    cmd("keygen", "print a new random key for BACKUP_ENCRYPTION_KEY")

    c = cmd("locations", "show the backup locations, their free space and whether they are writable")
    c.add_argument("--json", action="store_true")

    c = cmd("demo", "start (or reuse) a demo PostgreSQL cluster with synthetic EHR data")
    c.add_argument("--stop", action="store_true", help="stop the demo server")
    c.add_argument("--json", action="store_true")

    c = cmd("user", "manage the people who may sign in to the web app")
    u = c.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    x = u.add_parser("add", help="add a user (password from a prompt, or from stdin when it is not a terminal)")
    x.add_argument("name", metavar="NAME")
    x.add_argument("--admin", action="store_true", help="give the administrator role")
    u.add_parser("list", help="list users").add_argument("--json", action="store_true")
    for action, text in (("disable", "stop a user from signing in (ends their sessions)"),
                         ("enable", "let a disabled user sign in again"),
                         ("passwd", "set a new password (prompt or stdin)"),
                         ("unlock", "forget a user's failed sign-ins, so no address has to wait")):
        u.add_parser(action, help=text).add_argument("name", metavar="NAME")

    c = cmd("token", "manage API tokens for scripts")
    t = c.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    x = t.add_parser("create", help="create a token for USER; it is printed once, as the last line")
    x.add_argument("user", metavar="USER")
    x.add_argument("--label", default="", help="what the token is for")
    x.add_argument("--scope", choices=("admin", "metrics"), default="admin",
                   help="admin (default): the user's full API rights; metrics: only GET /metrics, e.g. for a "
                        "Prometheus server (refused by every other route)")
    x.add_argument("--expires-in", type=int, metavar="DAYS", default=None,
                   help=f"refuse the token DAYS days from now (1-{MAX_DAYS}); default: it never expires")
    x = t.add_parser("revoke", help="revoke a token by its id (see `token list`)")
    x.add_argument("token_id", metavar="TOKEN_ID", type=int)
    t.add_parser("list", help="list tokens (never their values)").add_argument("--json", action="store_true")

    c = cmd("serve", "start the web app (pages and REST API), as `python -m ehr_backup` does")

    c = cmd("audit", "check or export the audit trail")
    a = c.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    a.add_parser("verify", help="check the audit log's MAC chain, its saved head, and the heads recorded in "
                                "the newest backup files").add_argument("--json", action="store_true")
    e = a.add_parser("export", help="write the audit log as CSV")
    e.add_argument("--csv", required=True, metavar="FILE", help="output file ('-' for stdout)")
    return p


def _rotation_commands(cmd: Any) -> None:
    c = cmd("prune", "rotate backups (grandfather-father-son): keep the newest backup of each of the last N days, "
                     "weeks, months and years that have one, delete the rest; pinned backups, the newest verified "
                     "one and every backup of a database whose latest backup failed are never deleted")
    c.add_argument("--dry-run", action="store_true", help="show every backup with the rule that keeps it or why "
                                                          "it would go; delete nothing")
    c.add_argument("--database", metavar="NAME", help="only this database profile's backups (a name that is no "
                   "profile: the databases of that name); each profile's databases rotate on their own")
    c.add_argument("--location", choices=["default", "desktop", "documents", "downloads", "custom"])
    c.add_argument("--schedule", metavar="NAME", help="only the backups this schedule made")
    for kind, default, unit in (("daily", 7, "days"), ("weekly", 4, "ISO weeks"), ("monthly", 12, "months"),
                                ("yearly", 5, "years")):
        c.add_argument(f"--keep-{kind}", type=int, default=default, metavar="N",
                       help=f"keep the newest backup of each of the last N {unit} that have one (default {default})")
    c.add_argument("--keep-within-days", type=int, metavar="N",
                   help="also keep every backup made within N days of the newest one")
    c.add_argument("--timezone", metavar="TZ", help="IANA time zone the days, weeks, months and years are counted "
                                                    "in (default: the server's)")
    c.add_argument("--include-discovered", action="store_true",
                   help="also rotate verified files found on disk that this catalogue did not make")
    c.add_argument("--json", action="store_true", help='print {"keep": [{"id", "reasons"}], "forget": '
                                                       '[{"id", "reason"}], "deleted": [ids], ...}')
    c = cmd("pin", "pin a backup (e.g. a legal hold): rotation and delete leave it alone until it is unpinned")
    c.add_argument("backup_id", metavar="BACKUP_ID")
    c.add_argument("--reason", required=True, help="why it is kept (audited), e.g. 'legal hold, case 114'")
    c.add_argument("--json", action="store_true")
    c = cmd("unpin", "unpin a backup, so that rotation may remove it again")
    c.add_argument("backup_id", metavar="BACKUP_ID")
    c.add_argument("--json", action="store_true")


def _actor() -> Actor:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor(name=f"os:{name}", address="cli")


def _progress_printer(progress: Progress, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(1.0):
            d = progress.as_dict()
            sys.stderr.write(f"\r{d['phase']:<14} {d['table'][:40]:<40} "
                             f"read {d['bytesRead'] / 1e6:8.1f} MB  written {d['bytesWritten'] / 1e6:8.1f} MB  "
                             f"{d['elapsed']:6.0f}s")
            sys.stderr.flush()
        sys.stderr.write("\r" + " " * 110 + "\r")
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _run_task(task: Any) -> Any:
    stop = threading.Event()
    printer = _progress_printer(task.progress, stop) if sys.stderr.isatty() else None
    try:
        return task.run()
    except KeyboardInterrupt:
        task.cancel.set()
        raise
    finally:
        stop.set()
        if printer:
            printer.join()


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _print_backups(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no backups")
        return
    for b in rows:
        verified = "-" if b["verifyOk"] is None else ("ok" if b["verifyOk"] else "FAILED")
        claim = " (unverified: found on disk)" if b.get("unverified") else ""
        pinned = f"  PINNED: {_printable(b['pinReason'] or '')}" if b["pinned"] else ""
        print(f"{b['id']}\n    {b['status']:<10} {b['location']:<9} {_human_size(b['size']):>9}  "
              f"{b['createdAt']}  by {_printable(b['createdBy'])}  verified: {verified}  "
              f"{_printable(b['description'])}{claim}\n    rotation: "
              f"{', '.join(b['keptBy']) or 'removed by the next prune'}{pinned}")
        for c in (b.get("copies") or [])[1:]:  # the S3 copies beside the local file
            print(f"    copy: {c['destination']} {c['status']} {c['uri']}"
                  + (f" ({_printable(c['error'])})" if c.get("error") else ""))
        if b.get("degraded"):
            print("    DEGRADED: a copy failed or is missing (ehr-backup copy ID --to NAME completes it)")


def run(argv: list[str] | None = None) -> int:
    """Run one command; return the exit status."""
    args = _parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    if args.command == "keygen":
        print(generate_key())
        return 0
    logging.basicConfig(level=logging.WARNING, format="ehr-backup: warning: %(message)s")
    try:
        settings = Settings.from_env()
        if args.command == "demo":
            return _demo(settings, args)
        if args.command == "serve":
            import runpy
            runpy.run_module("ehr_backup", run_name="__main__")
            return 0
        from .service import BackupService  # heavy imports only when needed
        if args.command == "metadata":  # the SQLite metadata is the source, whatever EHR_BACKUP_METADATA_URL says
            settings, args.default_url = cli_metadata.source_settings(settings)
        service = BackupService(settings)
        service.reconcile()
        if args.command == "scheduler":
            return cli_schedules.serve(service, args)
        result = cli_alerts.then_check(service, args.command, lambda: _dispatch(service, args))
    except RowCountsDiffer as exc:
        if as_json:
            print(json.dumps(exc.report, indent=2, ensure_ascii=False))
        else:
            _print_comparison(exc.report)
        print(f"ehr-backup: error: {exc.message}", file=sys.stderr)
        return 1
    except DrillFailed as exc:
        cli_drills.print_failed(exc.report, as_json)
        print(f"ehr-backup: error: {exc.message}", file=sys.stderr)
        return 1
    except cli_destinations.TestFailed as exc:
        if as_json:
            print(json.dumps(exc.result, indent=2, ensure_ascii=False))
        else:
            cli_destinations.print_checks(exc.result)
        print(f"ehr-backup: error: the connection test failed: {exc.result['message']}", file=sys.stderr)
        return 1
    except (VerifyFailed, cli_catalogue.Refused) as exc:
        if as_json:
            print(json.dumps(exc.result, indent=2, ensure_ascii=False))
        print(f"ehr-backup: error: {exc.message}", file=sys.stderr)
        return 1
    except BackupError as exc:
        print(f"ehr-backup: error: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidInput) else 1
    except KeyboardInterrupt:
        print("ehr-backup: error: interrupted; nothing was kept", file=sys.stderr)
        return 130
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        _print_human(args, result)
    return 0


def _dispatch(service: Any, args: argparse.Namespace) -> Any:
    actor = _actor()
    if args.command == "create":
        task = service.prepare_create(actor, description=args.description, location=args.location,
                                      custom_path=args.path, compression=args.compression, database=args.database,
                                      destinations=args.destination, local=not args.no_local)
        return service.view(_run_task(task))
    if args.command == "list" and (args.limit is not None or args.cursor):
        return service.list_page(location=args.location, database=args.database, kind=args.kind, status=args.status,
                                 search=args.search, sort=args.sort, descending=not args.oldest_first,
                                 limit=100 if args.limit is None else args.limit, cursor=args.cursor)
    if args.command == "list":
        return {"backups": service.list(location=args.location, database=args.database)}
    if args.command == "verify":
        return _verify(service, args, actor)
    if args.command == "status":
        return service.status(database=args.database)
    if args.command == "restore":
        return _restore(service, args, actor)
    if args.command == "contents":
        return service.contents(actor, args.backup_id)
    if args.command == "previous":
        if args.previous_command == "list":
            return {"previous": service.kept_databases()}
        if not args.yes:
            raise InvalidInput("drop removes the kept database for good; add --yes to confirm")
        service.drop_kept(actor, args.name, args.database)
        return {"dropped": args.name}
    if args.command == "delete":
        if not args.yes:
            raise InvalidInput("delete removes the backup file for good; add --yes to confirm")
        service.delete(actor, args.backup_id)
        return {"deleted": args.backup_id}
    if args.command == "prune":
        policy = RetentionPolicy(daily=args.keep_daily, weekly=args.keep_weekly, monthly=args.keep_monthly,
                                 yearly=args.keep_yearly, keep_within_days=args.keep_within_days,
                                 timezone=args.timezone)
        return service.prune(actor, database=args.database, location=args.location, schedule=args.schedule,
                             policy=policy, dry_run=args.dry_run, include_discovered=args.include_discovered)
    if args.command == "schedule":
        return cli_schedules.dispatch(service, args, actor)
    if args.command == "drill":
        return cli_drills.dispatch(service, args, actor)
    if args.command == "alerts":
        return cli_alerts.dispatch(service, args, actor)
    if args.command == "catalogue":
        return cli_catalogue.dispatch(service, args, actor)
    if args.command == "database":
        return cli_databases.dispatch(service, args, actor)
    if args.command in ("destination", "copy"):
        return cli_destinations.dispatch(service, args, actor)
    if args.command == "metadata":
        return cli_metadata.dispatch(service, args, actor, args.default_url)
    if args.command == "pin":
        return service.pin(actor, args.backup_id, args.reason)
    if args.command == "unpin":
        return service.unpin(actor, args.backup_id)
    if args.command == "decrypt":
        return service.decrypt_file(actor, Path(args.file), Path(args.output))
    if args.command == "locations":
        return {"locations": service.locations()}
    if args.command == "audit":
        return _audit(service, args)
    if args.command in ("user", "token"):
        return _accounts(service, args, actor)
    raise InvalidInput(f"unknown command {args.command}")


def _verify(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    if sum(bool(x) for x in (args.backup_id, args.all, args.due)) != 1:
        raise InvalidInput("give one BACKUP_ID, or --all, or --due")
    if args.since and not args.all:
        raise InvalidInput("--since goes with --all")
    if args.destination and not args.backup_id:
        raise InvalidInput("--destination goes with one BACKUP_ID")
    if args.destination:  # one S3 copy, read back in full (ehr_backup/destinations/copies.py)
        return service.copies.verify_copy(actor, args.backup_id, args.destination)
    if args.backup_id:
        return _run_task(service.prepare_verify(actor, args.backup_id))
    if args.due:
        result = service.reverify_tonight(actor)
    else:
        since = None
        if args.since:
            try:
                since = datetime.strptime(args.since, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise InvalidInput("--since takes a day as YYYY-MM-DD") from None
        result = service.verify_all(actor, since)
    if result["failed"]:
        failed = [r for r in result["results"] if not r["ok"]]
        raise VerifyFailed(f"{result['failed']} of {len(result['results'])} backups failed verification: "
                           + "; ".join(f"{r['backupId']}: {r['error']}" for r in failed[:3]), result)
    if result.get("copiesFailed"):  # the backups are good, an S3 copy is not: they are degraded
        bad = [(r["backupId"], c) for r in result["results"] for c in r.get("copies", []) if not c["ok"]]
        raise VerifyFailed(f"{result['copiesFailed']} S3 copies failed verification: "
                           + "; ".join(f"{i} at {c['destination']}: {c['error']}" for i, c in bad[:3]), result)
    return result


def _restore(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    if args.rollback is not None:
        if args.backup_id:
            raise InvalidInput("--rollback takes a database name, not a backup id")
        if not args.yes:
            raise InvalidInput("rollback swaps the previous database back in; add --yes to confirm")
        return service.rollback(actor, args.rollback or None, args.database)
    if not args.backup_id:
        raise InvalidInput("give the BACKUP_ID to restore (see `ehr-backup list`), or --rollback")
    if not args.yes:
        raise InvalidInput("restore replaces the target database's contents; add --yes to confirm")
    task = service.prepare_restore(actor, args.backup_id, target_url=args.target_url, mode=args.mode,
                                   jobs=args.jobs, roles=args.roles, tables=args.table, schemas=args.schema,
                                   into_schema=args.into_schema,
                                   safety_backup=False if args.no_safety_backup else None, database=args.database)
    return _run_task(task).as_dict()


def _print_prune(result: dict[str, Any]) -> None:
    """Every backup with the rules that keep it, or why it goes."""
    p = result["policy"]
    within = f", all within {p['keepWithinDays']} days" if p["keepWithinDays"] else ""
    print(f"policy: {p['daily']} daily, {p['weekly']} weekly, {p['monthly']} monthly, {p['yearly']} yearly{within} "
          f"(time zone {result['timezone']}); safety backups kept {result['safetyKeepDays']} days")
    for hold in result["holds"]:
        print(f"held: {hold['reason']}: nothing of {hold['database']} is deleted")
    rows = [(k["createdAt"], "keep", k["id"], ", ".join(k["reasons"])) for k in result["keep"]]
    rows += [(f["createdAt"], "forget", f["id"], f["reason"]) for f in result["forget"]]
    for _, what, bid, why in sorted(rows, reverse=True):
        print(f"{what:<7} {bid}  {why}")
    for s in result["skipped"]:
        print(f"skipped {s['id']}  {s['reason']}")
    if result["dryRun"]:
        print(f"{len(result['keep'])} kept, {len(result['forget'])} would go (dry run: nothing deleted)")
    else:
        print(f"{len(result['keep'])} kept, {len(result['deleted'])} deleted, {len(result['skipped'])} skipped, "
              f"{result['removedTemporaryFiles']} temporary files removed")


def _print_comparison(report: dict[str, Any]) -> None:
    """The table-by-table comparison of a restore."""
    tables = report.get("tables") or {}
    width = min(60, max([len(t) for t in tables] + [5]))
    print(f"{'table':<{width}}  {'in backup':>10}  {'loaded':>10}  {'restored':>10}")
    for name, c in tables.items():
        flag = "" if c["expected"] == c["loaded"] == c["actual"] else "   <-- DIFFERS"
        actual = "-" if c["actual"] is None else c["actual"]
        print(f"{name[:width]:<{width}}  {c['expected']:>10}  {c['loaded']:>10}  {actual:>10}{flag}")


def _audit(service: Any, args: argparse.Namespace) -> Any:
    if args.audit_command == "verify":
        report = service.verify_audit()
        if not report.ok:
            raise BackupError(f"audit chain broken: {report.reason} ({report.entries} entries read)")
        return report.as_dict()
    if args.csv == "-":
        return {"exported": service.audit.export_csv(sys.stdout)}
    try:
        fh = open(args.csv, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise os_error(exc, f"cannot write {args.csv}") from None
    with fh:
        return {"exported": service.audit.export_csv(fh), "file": args.csv}


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise InvalidInput("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _accounts(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    from .auth import AuthService
    auth = AuthService(service.db, service.audit, service.settings)
    if args.command == "user":
        if args.user_command == "add":
            user = auth.add_user(actor, args.name, _read_password(), admin=args.admin)
            return {"user": user.username, "admin": user.is_admin}
        if args.user_command == "list":
            states = auth.login_states()
            return {"users": [{"name": u.username, "admin": u.is_admin, "disabled": u.disabled,
                               "signIn": states[u.username].describe() if u.username in states else ""}
                              for u in auth.users()]}
        if args.user_command == "unlock":
            return {"user": args.name, "done": "unlock", "cleared": auth.unlock(actor, args.name)}
        if args.user_command == "passwd":
            auth.update_user(actor, args.name, password=_read_password())
        else:
            auth.update_user(actor, args.name, disabled=args.user_command == "disable")
        return {"user": args.name, "done": args.user_command}
    if args.token_command == "create":
        expires = expires_after(args.expires_in, utcnow())
        return {"token": auth.create_token(actor, args.user, args.label, args.scope, expires), "scope": args.scope,
                "expires": stamp(expires)}
    if args.token_command == "revoke":
        auth.revoke_token(actor, args.token_id)
        return {"revoked": args.token_id}
    names = {u.id: u.username for u in auth.users()}
    return {"tokens": [{"id": t.id, "prefix": t.prefix, "user": names.get(t.user_id), "label": t.label,
                        "scope": t.scope, "revoked": t.revoked_at is not None, "expires": stamp(t.expires_at),
                        "expired": is_expired(t.expires_at, utcnow())} for t in auth.tokens()]}


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    if args.stop:
        stopped = demo.stop(settings.data_dir)
        print("demo server stopped" if stopped else "no demo server was running")
        return 0
    info = demo.start(settings.data_dir)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(("created" if info["created"] else "reusing") + " the demo database with synthetic EHR data")
    print("With DATABASE_URL unset, ehr-backup uses it. To use it from elsewhere:")
    print(f"DATABASE_URL={info['url']}")
    if not settings.encryption_key:
        print(f"warning: demo backups use the key in {info['keyFile']}; real use needs BACKUP_ENCRYPTION_KEY, "
              "kept away from the backups", file=sys.stderr)
    return 0


def _print_human(args: argparse.Namespace, result: Any) -> None:
    cmd = args.command
    if cmd == "create":
        print(f"created {result['id']} ({_human_size(result['size'])}, "
              f"{len(result['tableRowCounts'] or {})} tables) in {result['path']}")
    elif cmd == "list":
        _print_backups(result["backups"])
        if "total" in result:
            print(f"{len(result['backups'])} of {result['total']} backups"
                  + (f"; next page: --cursor {result['nextCursor']}" if result["nextCursor"] else ""))
    elif cmd == "verify" and "results" in result:
        print(f"{result['verified']} backups verified, {result['failed']} failed")
    elif cmd == "verify":
        print(f"{result['backupId']}: authentic, dump complete, {len(result['tableRowCounts'])} tables, "
              f"{_human_size(result['dumpBytes'])} of SQL")
    elif cmd == "status":
        for loc in result["locations"]:
            full = f", full in about {loc['daysToFull']:.0f} days" if loc["daysToFull"] is not None else ""
            warn = "".join(f"  WARNING: {w}" for w in loc["warnings"])
            print(f"{loc['key']:<10} {loc['path']}: {loc['backups']} backups, {_human_size(loc['usedBytes'])} "
                  f"used, {_human_size(loc['freeBytes'])} free{full}{warn}")
        for db in result["databases"]:
            last = db["latest"]
            print(f"database {db['database']}: {db['backups']} backups, latest {last['at']} "
                  f"({_human_size(last['size'])})")
    elif cmd == "restore" and "restoredFrom" in result:
        print(f"rolled back: {result['restoredFrom']} is {result['database']} again; the restored copy is kept as "
              f"{result['undoneKeptAs']}")
    elif cmd == "restore":
        _print_comparison(result)
        where = f"schema {result['intoSchema']} of " if result.get("intoSchema") else ""
        print(f"restored {result['backupId']} into {where}{result['database']} in {result['seconds']}s; "
              f"{len(result['tables'])} tables, row counts match")
        if result.get("previousDatabase"):
            print(f"the previous database is kept as {result['previousDatabase']} "
                  f"(ehr-backup restore --rollback puts it back)")
        if result.get("safetyBackup"):
            print(f"safety backup taken first: {result['safetyBackup']}")
        for note in result.get("notes") or []:
            print(f"note: {note}")
        for item in result.get("leftOut") or []:
            print(f"not restored: {item}")
    elif cmd == "contents":
        print(f"{result['backupId']}: database {result['database']} ({result['encoding'] or '?'}), "
              f"format {result['format']}")
        for t in result["tables"]:
            size = "" if t["bytes"] is None else f"  {_human_size(t['bytes'])}"
            print(f"  table {t['schema']}.{t['name']}: {t['rows']} rows{size}")
        print("  other objects: " + ", ".join(f"{n} {k.lower()}" for k, n in result["objectCounts"].items()
                                               if k not in ("TABLE DATA", "SEQUENCE SET")))
    elif cmd == "previous" and "previous" in result:
        if not result["previous"]:
            print("no databases are kept")
        for k in result["previous"]:
            print(f"{k['name']:<40} {k['kind']:<8} of {k['database']}  since {k['createdAt']}  {k['note']}")
    elif cmd == "delete":
        print(f"deleted {result['deleted']}")
    elif cmd == "prune":
        _print_prune(result)
    elif cmd == "schedule":
        cli_schedules.print_human(args, result)
    elif cmd == "drill":
        cli_drills.print_human(args, result)
    elif cmd == "alerts":
        cli_alerts.print_human(args, result)
    elif cmd == "catalogue":
        cli_catalogue.print_human(args, result)
    elif cmd == "database":
        cli_databases.print_human(args, result)
    elif cmd in ("destination", "copy"):
        cli_destinations.print_human(args, result)
    elif cmd == "metadata":
        cli_metadata.print_human(args, result)
    elif cmd in ("pin", "unpin"):
        print(f"{cmd}ned {result['id']}" + (f": {_printable(result['pinReason'])}" if result["pinned"] else ""))
    elif cmd == "decrypt":
        print(f"wrote {result['output']} ({_human_size(result['dumpBytes'])} of SQL)")
    elif cmd == "locations":
        for loc in result["locations"]:
            flags = ("exists" if loc["exists"] else "absent") + (", writable" if loc["writable"] else
                                                                 ", NOT writable")
            print(f"{loc['key']:<10} {loc['path']}  ({flags}, {_human_size(loc['freeBytes'])} free"
                  f"{', LOW' if loc['lowSpace'] else ''})")
    elif cmd == "audit" and args.audit_command == "verify":
        print(f"audit log intact: {result['entries']} entries")
        for note in result["notes"]:
            print(f"  {note}")
    elif cmd == "audit":
        print(json.dumps(result))
    elif cmd == "token" and args.token_command == "create":
        print(f"API token{' for GET /metrics only' if result['scope'] == 'metrics' else ''}"
              f"{'' if result['expires'] == 'never' else ', refused from ' + result['expires']} "
              "(shown once; store it now):")
        print(result["token"])
    elif cmd == "user" and args.user_command == "list":
        for u in result["users"]:
            state = "disabled" if u["disabled"] else ""
            print(f"{u['name']:<24} {'admin' if u['admin'] else 'user':<6} {state:<8} {u['signIn']}".rstrip())
    elif cmd == "user" and args.user_command == "unlock":
        print(f"unlocked {result['user']}: {result['cleared']} failed sign-ins forgotten")
    elif cmd == "token" and args.token_command == "list":
        for t in result["tokens"]:
            state = "revoked" if t["revoked"] else "expired" if t["expired"] else "active"
            print(f"{t['id']:>4}  {t['prefix']}…  {t['user']:<20} {state:<8} "
                  f"{t['scope']:<8} expires {t['expires']:<20} {_printable(t['label'])}")
    else:
        print(json.dumps(result))


def main() -> None:
    """Console entry point."""
    sys.exit(run())
if __name__ == "__main__":
    main()
