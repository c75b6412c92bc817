"""`ehr-backup schedule …` and `ehr-backup scheduler`: define schedules, and run them without the web UI."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import time
from typing import Any

from .audit import Actor
from .errors import BackupError, InvalidInput
from .jobs import JobManager
from .schedules import KINDS, check_template
from .text import printable as _printable

LOCATIONS = ["default", "desktop", "documents", "downloads", "custom"]
BUCKETS = (("daily", 7, "days"), ("weekly", 4, "ISO weeks"), ("monthly", 12, "months"), ("yearly", 5, "years"))
log = logging.getLogger("ehr_backup.scheduler")


def add_commands(cmd: Any) -> None:
    """Register `schedule` and `scheduler` on the top-level parser's `cmd` helper."""
    s = cmd("schedule", "define when backups (or re-verification) run by themselves; see `ehr-backup scheduler`")
    sub = s.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a schedule", description="add a schedule; its first run is the first "
                                                                    "time the expression gives from now on")
    add.add_argument("--cron", required=True, metavar="EXPR",
                     help="five fields: minute hour day-of-month month day-of-week, e.g. '30 2 * * *' (02:30 daily); "
                          "@daily, @weekly … also work")
    add.add_argument("--description", metavar="TEMPLATE",
                     help="each backup's description: {date} {time} {datetime} {weekday} {schedule} {database} "
                          "are filled in, e.g. 'Nightly {date}' (required for backup schedules)")
    add.add_argument("--name", help="the schedule's name (default: from the description)")
    _options(add, defaults=True)
    for action, text in (("list", "list schedules with their next run and last outcome"),):
        sub.add_parser(action, help=text).add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one schedule: settings, next five runs, recent runs")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true")
    edit = sub.add_parser("edit", help="change a schedule (only the options given)")
    edit.add_argument("name", metavar="NAME")
    edit.add_argument("--cron", metavar="EXPR")
    edit.add_argument("--description", metavar="TEMPLATE")
    _options(edit, defaults=False)
    for action, text in (("enable", "enable a schedule (runs it missed while disabled are not made up)"),
                         ("disable", "disable a schedule"), ("remove", "delete a schedule (its backups stay)"),
                         ("run-now", "run a schedule now, out of turn, and wait for it")):
        x = sub.add_parser(action, help=text)
        x.add_argument("name", metavar="NAME")
        x.add_argument("--json", action="store_true")
    r = cmd("scheduler", "run the schedules without the web UI (for a systemd unit; see README); stops on "
                         "SIGTERM or Ctrl-C, cancelling runs still going")
    r.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                   help="look at the schedules at least this often (default 30)")


def _options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    p.add_argument("--kind", choices=KINDS, help="backup (default); verify: re-read a share of the stored "
                                                 "backups each run (EHR_BACKUP_REVERIFY_DAYS); drill: restore the "
                                                 "newest verified backup of each database into a scratch database")
    p.add_argument("--database", metavar="NAME", help="the database profile it backs up (default: DATABASE_URL's; "
                                                      "see `ehr-backup database list`)")
    p.add_argument("--location", choices=LOCATIONS, help="where the backups go (default: default)")
    p.add_argument("--path", help="directory for --location custom")
    p.add_argument("--compression", choices=["gzip", "zstd"], help="default: EHR_BACKUP_COMPRESSION or gzip")
    p.add_argument("--destination", action="append", metavar="NAME", help="also copy each backup to this S3 "
                   "destination (repeatable; see `destination add`)")
    p.add_argument("--no-destinations", action="store_true", help="copy to no S3 destination any more")
    p.add_argument("--timezone", metavar="TZ", help="IANA time zone the expression is read in (default: the "
                                                     "server's), e.g. Europe/Berlin")
    for kind, default, unit in BUCKETS:
        p.add_argument(f"--keep-{kind}", type=int, metavar="N",
                       help=f"after each run, keep the newest backup of each of the last N {unit} that have one "
                            f"({'default ' + str(default) if defaults else 'changes the rotation'})")
    p.add_argument("--keep-within-days", type=int, metavar="N", help="also keep every backup of the last N days")
    p.add_argument("--no-rotation", action="store_true", help="rotate nothing after a run")
    p.add_argument("--retries", type=int, metavar="N", help="retry a failed run N times (default 2)")
    p.add_argument("--retry-delay", type=int, metavar="SECONDS", help="wait between tries (default 600)")
    if defaults:
        p.add_argument("--disabled", action="store_true", help="add it disabled")
    p.add_argument("--json", action="store_true", help="print the schedule as JSON")


def _fields(service: Any, args: argparse.Namespace, current: dict[str, Any] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for arg, key in (("cron", "cron"), ("description", "description"), ("kind", "kind"),
                     ("location", "location"), ("compression", "compression"), ("timezone", "timezone"),
                     ("retries", "retries"), ("retry_delay", "retry_delay_s"), ("database", "database")):
        value = getattr(args, arg, None)
        if value is not None:
            fields[key] = value
    if args.path is not None:
        fields["custom_path"] = args.path
        fields.setdefault("location", "custom")
    keeps = {kind: getattr(args, f"keep_{kind}") for kind, _, _ in BUCKETS}
    within = args.keep_within_days
    if args.no_rotation:
        if any(v is not None for v in keeps.values()) or within is not None:
            raise InvalidInput("--no-rotation goes without --keep-… options")
        fields["policy"] = None
    elif any(v is not None for v in keeps.values()) or within is not None:
        base = (current or {}).get("policy") or ({} if current else {k: d for k, d, _ in BUCKETS})
        policy = {k: base.get(k, 0) for k, _, _ in BUCKETS}
        policy.update({k: v for k, v in keeps.items() if v is not None})
        policy["keepWithinDays"] = within if within is not None else base.get("keepWithinDays")
        fields["policy"] = policy
    if getattr(args, "disabled", False):
        fields["enabled"] = False
    if args.destination or args.no_destinations:
        fields["destinations"] = [] if args.no_destinations else args.destination
    return fields


def _default_name(service: Any, description: str) -> str:
    words = re.sub(r"\{[^}]*\}", " ", check_template(description))
    base = re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")[:48] or "schedule"
    taken = {s["name"] for s in service.schedule_list()}
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def dispatch(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    """Do one `schedule …` action."""
    action = args.schedule_command
    if action == "add":
        if args.kind not in ("verify", "drill") and not args.description:
            raise InvalidInput("give --description, e.g. --description 'Nightly {date}'")
        name = args.name or _default_name(service, args.description or ("drill" if args.kind == "drill" else "reverify"))
        return service.schedule_create(actor, name, **_fields(service, args, None))
    if action == "list":
        return {"schedules": service.schedule_list()}
    if action == "show":
        return service.schedule_get(args.name)
    if action == "edit":
        fields = _fields(service, args, service.schedule_get(args.name))
        if not fields:
            raise InvalidInput("give at least one option to change (see `ehr-backup schedule edit --help`)")
        return service.schedule_update(actor, args.name, **fields)
    if action in ("enable", "disable"):
        return service.schedule_update(actor, args.name, enabled=action == "enable")
    if action == "remove":
        service.schedule_remove(actor, args.name)
        return {"removed": args.name}
    if action == "run-now":
        return _run_now(service, args, actor)
    raise InvalidInput(f"unknown schedule action {action}")


def _run_now(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    from .scheduler import Scheduler

    Scheduler(service).run_now(actor, args.name)  # runs here, on this thread
    result = service.schedule_get(args.name, runs=5)
    run = next((r for r in result["runs"] if r["startedAt"] and r["trigger"] == "manual"), None)
    if run is None or run["status"] != "succeeded":
        raise BackupError(f"the run of {args.name} failed: {run['message'] if run else 'it did not start'}")
    return result


def serve(service: Any, args: argparse.Namespace) -> int:
    """`ehr-backup scheduler`: take due runs until SIGTERM or Ctrl-C."""
    from .jobstore import JobStore
    from .scheduler import Scheduler

    if not args.poll > 0:
        raise InvalidInput("--poll must be a positive number of seconds")
    logging.getLogger("ehr_backup").setLevel(logging.INFO)
    jobs = JobManager(after=lambda job: service.alerts.poke(),  # with PostgreSQL metadata, seen by every instance
                      store=JobStore(service.db) if service.settings.metadata_url else None)
    scheduler = Scheduler(service, start=jobs.start)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.drills.ensure_default_schedule()  # once per installation: weekly-drill (EHR_BACKUP_DRILL_SCHEDULE)
    count = len(service.schedule_list())
    print(f"ehr-backup scheduler: {count} schedule{'s' if count != 1 else ''}; stop with SIGTERM or Ctrl-C",
          flush=True)
    worker = threading.Thread(target=scheduler.serve, args=(stop, args.poll), name="scheduler", daemon=True)
    worker.start()
    alerts = threading.Thread(target=service.alerts.serve, args=(stop,), name="alerts", daemon=True)
    alerts.start()  # the headless scheduler checks for alerts, as the web app does
    while not stop.wait(1.0):
        pass
    worker.join(timeout=30)
    going = jobs.active()
    for job in going:
        job.cancel()
    deadline = time.monotonic() + 60
    for job in going:
        job.done.wait(max(0.0, deadline - time.monotonic()))
    print(f"ehr-backup scheduler: stopped ({len(going)} run{'s' if len(going) != 1 else ''} cancelled)",
          file=sys.stderr, flush=True)
    return 0


def print_human(args: argparse.Namespace, result: Any) -> None:
    """Print a `schedule …` result for people."""
    action = args.schedule_command
    if action == "remove":
        print(f"removed schedule {result['removed']} (its backups stay)")
        return
    rows = result["schedules"] if action == "list" else [result]
    if not rows:
        print("no schedules (add one with `ehr-backup schedule add`)")
    for s in rows:
        state = "enabled" if s["enabled"] else "DISABLED"
        what = {"verify": "verify stored backups", "drill": "drill the newest verified backups"}.get(
            s["kind"], f"backup to {' + '.join([s['location'], *s.get('destinations', [])])}"
            + (f" of database {s['database']}" if s.get("database", "default") != "default" else ""))
        print(f"{s['name']}: {s['reading']} ({s['cron']}, {s['timezone']}), {what}, {state}")
        if s["kind"] == "backup":
            policy = s["policy"]
            kept = ", ".join(f"{policy[k]} {k}" for k, _, _ in BUCKETS if policy and policy[k]) if policy else ""
            print(f"    description: {_printable(s['description'])}; rotation: {kept or 'none'}")
        if s["nextRuns"]:
            print(f"    next: {', '.join(s['nextRuns'][:1 if action == 'list' else 5])}")
        last = s["lastRun"]
        if last:
            print(f"    last run: {last['status']} (due {last['dueAt']}): {_printable(last['message'] or '')}")
        if s["failing"]:
            print(f"    FAILING: {_printable(s['failure'] or '')}")
        if s["retryAt"]:
            print(f"    retry at {s['retryAt']}")
        for run in s.get("runs", [])[1 if last else 0:] if action == "show" else []:
            print(f"    run {run['status']:<9} due {run['dueAt']} try {run['attempt']}: {_printable(run['message'])}")
