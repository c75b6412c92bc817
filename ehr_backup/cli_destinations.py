"""`ehr-backup destination …` (add, list, test, remove S3 destinations) and `ehr-backup copy ID --to NAME`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from .audit import Actor
from .errors import InvalidInput
from .text import printable


def add_commands(cmd: Any) -> None:
    """Register `destination` and `copy` on the top-level parser's `cmd` helper."""
    d = cmd("destination", "S3-compatible destinations (AWS S3, GCS interoperability, MinIO, Ceph) backups are "
                           "copied to beside the local file")
    sub = d.add_subparsers(dest="destination_command", required=True, metavar="ACTION")
    a = sub.add_parser("add", help="add an S3 destination; credentials come from the standard AWS chain "
                                   "(environment, ~/.aws, instance role) unless --access-key-id is given")
    a.add_argument("name", metavar="NAME", help="1-63 lower-case letters, digits, '_' and '-'")
    a.add_argument("--s3", action="store_true", required=True, help="an S3-compatible bucket (the only kind yet)")
    a.add_argument("--bucket", required=True, metavar="B")
    a.add_argument("--prefix", metavar="P", help="folder inside the bucket, e.g. ehr/nightly/")
    a.add_argument("--endpoint-url", metavar="URL", help="for MinIO, Ceph, GCS (https://storage.googleapis.com); "
                                                         "default: AWS")
    a.add_argument("--region", metavar="R", help="default us-east-1")
    a.add_argument("--path-style", action="store_true", help="path-style addressing (MinIO, Ceph); default: "
                                                             "virtual-hosted")
    a.add_argument("--storage-class", metavar="C", help="e.g. STANDARD_IA, GLACIER_IR")
    a.add_argument("--sse", action="store_true", help="ask for server-side encryption (AES256)")
    a.add_argument("--access-key-id", metavar="ID", help="store these credentials, sealed with the master key; "
                   "the secret is read from the variable named by --secret-env, else a prompt, else stdin")
    a.add_argument("--secret-env", metavar="VAR", help="name of the environment variable holding the secret "
                                                       "access key")
    a.add_argument("--json", action="store_true")
    sub.add_parser("list", help="the destinations (credentials only as stored / AWS chain)").add_argument(
        "--json", action="store_true")
    t = sub.add_parser("test", help="test connection: list, write, read and delete a probe object; exit 1 and "
                                    "name the missing permission when one fails")
    t.add_argument("name", metavar="NAME")
    t.add_argument("--json", action="store_true")
    r = sub.add_parser("remove", help="forget a destination (its objects stay in the bucket)")
    r.add_argument("name", metavar="NAME")
    r.add_argument("--yes", action="store_true", help="confirm")
    r.add_argument("--json", action="store_true")
    p = sub.add_parser("prune", help="rotate the copies at one destination (grandfather-father-son, as `prune`): "
                                     "delete the copies the policy does not keep; the backups and their other "
                                     "copies stay, and a backup's last readable copy is never deleted")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dry-run", action="store_true", help="show what would go; delete nothing")
    for kind, default in (("daily", 7), ("weekly", 4), ("monthly", 12), ("yearly", 5)):
        p.add_argument(f"--keep-{kind}", type=int, default=default, metavar="N", help=f"default {default}")
    p.add_argument("--keep-within-days", type=int, metavar="N")
    p.add_argument("--timezone", metavar="TZ")
    p.add_argument("--json", action="store_true")
    c = cmd("copy", "copy a backup from a healthy copy to a destination (completes a degraded backup)")
    c.add_argument("backup_id", metavar="BACKUP_ID")
    c.add_argument("--to", required=True, metavar="NAME", dest="to")
    c.add_argument("--json", action="store_true")


def _secret(args: argparse.Namespace) -> str:
    if args.secret_env:
        value = os.environ.get(args.secret_env, "")
        if not value:
            raise InvalidInput(f"the variable {args.secret_env} is not set")
        return value
    if sys.stdin.isatty():
        return getpass.getpass(f"secret access key for {args.access_key_id}: ")
    return sys.stdin.readline().strip()


def dispatch(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    """Do one `destination …` or `copy` command."""
    if args.command == "copy":
        return service.copy(actor, args.backup_id, args.to)
    action = args.destination_command
    if action == "add":
        creds = (args.access_key_id, _secret(args)) if args.access_key_id else None
        return service.destination_add(actor, args.name, creds, bucket=args.bucket, prefix=args.prefix,
                                       endpoint_url=args.endpoint_url, region=args.region,
                                       path_style=args.path_style, storage_class=args.storage_class, sse=args.sse)
    if action == "list":
        return {"destinations": service.destination_list()}
    if action == "test":
        result = service.destination_test(actor, args.name)
        if not result["ok"]:
            raise TestFailed(result)
        return result
    if action == "prune":
        from .destinations.rotation import prune_destination
        from .retention import RetentionPolicy

        policy = RetentionPolicy(daily=args.keep_daily, weekly=args.keep_weekly, monthly=args.keep_monthly,
                                 yearly=args.keep_yearly, keep_within_days=args.keep_within_days,
                                 timezone=args.timezone)
        return prune_destination(service, actor, args.name, policy, dry_run=args.dry_run)
    if action == "remove":
        if not args.yes:
            raise InvalidInput("remove forgets the destination and its copies' records; add --yes to confirm")
        service.destination_remove(actor, args.name)
        return {"removed": args.name}
    raise InvalidInput(f"unknown destination action {action}")


class TestFailed(Exception):
    """A connection test found a missing permission (the CLI prints the checks and exits 1)."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result["message"])
        self.result = result


def print_human(args: argparse.Namespace, result: Any) -> None:
    """Print a `destination …` or `copy` result for people."""
    if args.command == "copy":
        print(f"copied {result['backupId']} to {result['destination']}: {result['uri']} ({result['size']} bytes, "
              f"sha256 {result['sha256']})")
        return
    action = args.destination_command
    if action == "add":
        print(f"added destination {result['name']}: s3://{result['bucket']}/{printable(result['prefix'] or '')} "
              f"(credentials: {result['credentials']})")
    elif action == "list":
        if not result["destinations"]:
            print("no destinations (add one with `ehr-backup destination add NAME --s3 --bucket B`)")
        for d in result["destinations"]:
            where = d["endpointUrl"] or "AWS"
            print(f"{d['name']:<20} s3://{d['bucket']}/{printable(d['prefix'] or '')}  at {printable(where)}  "
                  f"credentials: {d['credentials']}")
    elif action == "test":
        print_checks(result)
    elif action == "remove":
        print(f"removed destination {result['removed']}")
    elif action == "prune":
        for d in result["keep"]:
            print(f"keep   {d['id']}  ({', '.join(d['reasons'])})")
        for d in result["forget"]:
            print(f"{'delete' if d['id'] in result['deleted'] else 'goes  '} {d['id']}  ({d['reason']})")
        for s in result["skipped"]:
            print(f"kept   {s['id']}  ({printable(s['reason'])})")
        print(f"{len(result['deleted'])} copies deleted at {result['destination']}" if not args.dry_run
              else f"dry run: {len(result['forget'])} copies at {result['destination']} would go")


def print_checks(result: dict[str, Any]) -> None:
    """The connection test's checks, one a line."""
    for c in result["checks"]:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']:<7} {printable(c['message'])}")
    print(result["message"])
