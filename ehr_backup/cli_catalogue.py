"""`ehr-backup catalogue rebuild`: recreate the catalogue from the backup files alone (or preview it)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

from .audit import Actor
from .errors import BackupError, InvalidInput
from .storage import LOCATIONS
from .text import printable


class Refused(BackupError):
    """Some files did not authenticate (the rebuild's result goes with it; the CLI prints it and exits 1)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def add_commands(cmd: Any) -> None:
    """Register `catalogue` on the top-level parser's `cmd` helper."""
    c = cmd("catalogue", "the catalogue of backups: rebuild it from the backup files' authenticated headers and "
                         "trailers (after losing the metadata database, say)")
    sub = c.add_subparsers(dest="catalogue_command", required=True, metavar="ACTION")
    about = ("read every backup file in the locations and S3 destinations (after losing the metadata database, "
             "add the destinations again first), authenticate it (every byte) and add the backups the "
             "catalogue lacks, complete the rows it has, and mark rows whose file is gone as missing; files that "
             "do not authenticate are reported (exit 1), never recorded. On a terminal it shows the files and "
             "bytes read of the total; Ctrl-C cancels at the next read (exit 1). One "
             "rebuild at a time: a second one is refused as busy")
    r = sub.add_parser("rebuild", help=about, description=about)
    r.add_argument("--location", "--destination", dest="location", metavar="KEY",
                   help=f"only this location ({', '.join(LOCATIONS)}) or destination; default: every one")
    r.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="a custom folder to read as well (repeatable; inside EHR_BACKUP_CUSTOM_ROOTS): after the "
                        "metadata database was lost, the app knows only the standard locations")
    r.add_argument("--dry-run", action="store_true", help="only show what would be added, completed and marked "
                                "missing")
    r.add_argument("--json", action="store_true")


def dispatch(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    """Do one `catalogue …` action."""
    if args.catalogue_command != "rebuild":
        raise InvalidInput(f"unknown catalogue action {args.catalogue_command}")
    if args.path and args.location not in (None, "custom"):
        raise InvalidInput("--path reads a custom folder: use it without --location, or with --location custom")
    task = service.prepare_rebuild(actor, location=args.location, paths=args.path, dry_run=args.dry_run)
    result = run_with_progress(task)
    if result["refused"]:
        if not args.json:
            print_human(args, result)
        first = "; ".join(f"{r['file']}: {r['reason']}" for r in result["refused"][:3])
        n = len(result["refused"])
        raise Refused(f"{n} file{'s were' if n != 1 else ' was'} refused: {printable(first)}", result)
    return result


def progress_line(d: dict[str, Any]) -> str:
    """One line of a rebuild's progress for a terminal (pure): phase, files and bytes read of the total."""
    line = f"{d['phase']:<13}"
    if d.get("filesTotal") is not None:
        line += f" file {d['files']} of {d['filesTotal']}"
    if d.get("total"):
        share = 100 * d["bytesRead"] // d["total"]
        line += f"  read {d['bytesRead'] / 1e6:.1f} of {d['total'] / 1e6:.1f} MB ({share}%)"
    return f"{line}  {d['elapsed']:.0f}s"


def run_with_progress(task: Any) -> Any:
    """Run the rebuild on a worker thread; on a terminal, its progress on stderr twice a second. Ctrl-C
    cancels it as Cancel does on the page: it stops at the next read (or between applied rows) and the
    command says what was changed."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = task.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="catalogue-rebuild", daemon=True)
    worker.start()
    shown = sys.stderr.isatty()
    previous = None
    if threading.current_thread() is threading.main_thread():  # Ctrl-C asks the worker to stop at its next read
        previous = signal.signal(signal.SIGINT, lambda *_: task.cancel.set())
    try:
        written, phase = 0.0, None
        while worker.is_alive():
            worker.join(0.05)
            now = time.monotonic()
            if shown and worker.is_alive():
                d = task.progress.as_dict()
                if d["phase"] != phase or now - written >= 0.5:  # a new phase at once, else twice a second
                    sys.stderr.write("\r" + progress_line(d)[:110].ljust(110))
                    sys.stderr.flush()
                    written, phase = now, d["phase"]
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if shown:
        sys.stderr.write("\r" + " " * 110 + "\r")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def print_human(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """The rebuild's outcome in lines."""
    verb = "would be" if result["dryRun"] else "were"
    print(f"{result['files']} backup files read in {len(result['sources'])} folders"
          + (" (preview: nothing changed)" if result["dryRun"] else ""))
    for a in result["added"]:
        state = {"ok": "verified", "failed": "FAILED verification"}.get(a["verification"] or "", "not verified")
        print(f"  add      {a['id']}  {printable(a['description'])}  ({a['database']}, {state})")
    for u in result["updated"]:
        print(f"  complete {u['id']}  ({', '.join(u['changes'])})")
    for m in result["missing"]:
        print(f"  missing  {m}")
    for r in result["refused"]:
        print(f"  REFUSED  {printable(r['file'])} in {printable(r['directory'])}: {r['reason']}")
    for f in result["failedVerification"]:
        print(f"  FAILED   {f['id']}: catalogued, its file does not authenticate: recorded as failing verification")
    for w in result["warnings"]:
        print(f"  warning  {printable(w['file'])}: {w['warning']}")
    print(f"{len(result['added'])} {verb} added, {len(result['updated'])} completed, {len(result['missing'])} "
          f"missing, {len(result['refused'])} refused, {result['unchanged']} unchanged")
