"""`ehr-backup drill …`: run a restore drill, list drills, check a report, manage check queries."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .audit import Actor
from .errors import InvalidInput
from .text import printable as _printable


def add_commands(cmd: Any) -> None:
    """Register `drill` on the top-level parser's `cmd` helper."""
    d = cmd("drill", "restore a backup into a scratch database, compare every table's rows with the backup's "
                     "record, run the check queries, drop it, and write an evidence report (PDF and JSON); "
                     "exit 1 when the drill failed. Also: drill list | verify-report FILE | check …")
    d.add_argument("target", metavar="ARG", nargs="+",
                   help="a backup id to drill; `list`; `verify-report FILE`; `check add NAME --sql SQL "
                        "(--expect VALUE | --compare-live)`, `check list`, `check remove NAME`")
    d.add_argument("--sql", metavar="SQL", help="check add: one SELECT returning one value (run read-only, with "
                                                "EHR_BACKUP_DRILL_CHECK_TIMEOUT)")
    d.add_argument("--expect", metavar="VALUE", help="check add: the value the query must return (as text)")
    d.add_argument("--compare-live", action="store_true", help="check add: expect what the same query returns "
                                                               "on the live database")
    d.add_argument("--json", action="store_true", help="print the result as JSON (a drill: outcome, "
                                                       "recoverySeconds, tables, checks, report paths)")


def _run_task(task: Any) -> Any:
    from .cli import _run_task as run
    return run(task)


def dispatch(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    """Do one `drill …` action."""
    words = args.target
    head = words[0]
    if head == "list" and len(words) == 1:
        return {"drills": service.drill_list()}
    if head == "verify-report":
        if len(words) != 2:
            raise InvalidInput("usage: ehr-backup drill verify-report FILE")
        return service.verify_drill_report(actor, Path(words[1]))
    if head == "check":
        return _check(service, args, actor, words[1:])
    if len(words) != 1:
        raise InvalidInput("usage: ehr-backup drill BACKUP_ID [--json]")
    return _run_task(service.prepare_drill(actor, head))


def _check(service: Any, args: argparse.Namespace, actor: Actor, words: list[str]) -> Any:
    if words == ["list"]:
        return {"checks": service.drill_checks()}
    if len(words) == 2 and words[0] == "remove":
        service.drill_check_remove(actor, words[1])
        return {"removed": words[1]}
    if len(words) == 2 and words[0] == "add":
        if not args.sql or (args.expect is None) == (not args.compare_live):
            raise InvalidInput("usage: ehr-backup drill check add NAME --sql SQL (--expect VALUE | --compare-live)")
        return service.drill_check_add(actor, words[1], args.sql, expect=args.expect, compare_live=args.compare_live)
    raise InvalidInput("usage: ehr-backup drill check add NAME --sql SQL (--expect VALUE | --compare-live) | "
                       "check list | check remove NAME")


def print_human(args: argparse.Namespace, result: Any) -> None:
    """The human form of a `drill …` result."""
    if "drills" in result:
        if not result["drills"]:
            print("no drills yet")
        for d in result["drills"]:
            print(f"{d['id']:>5}  {d['startedAt']}  {d['outcome']:<7} {d['backupId']}  "
                  f"recovery {d['recoverySeconds'] if d['recoverySeconds'] is not None else '-'} s  "
                  f"{_printable(d['message'])}")
    elif "checks" in result and "outcome" not in result:
        if not result["checks"]:
            print("no check queries (add one with `ehr-backup drill check add`)")
        for c in result["checks"]:
            want = "the live database's value" if c["compareLive"] else repr(c["expect"])
            print(f"{c['name']}: {_printable(c['sql'])}  → expect {want}")
    elif "removed" in result:
        print(f"removed check {result['removed']}")
    elif "auditEntry" in result:
        print(f"{result['file']}: ok — SHA-256 {result['sha256']} is recorded in audit entry {result['auditEntry']} "
              f"(drill of {result['drill']})")
    elif "sql" in result:
        print(f"added check {result['name']}")
    else:
        print_drill(result)


def print_drill(result: dict[str, Any]) -> None:
    """The table-by-table comparison, the checks and the verdict of one drill."""
    tables = result.get("tables") or {}
    if isinstance(tables, dict) and tables and "expected" in next(iter(tables.values())):
        width = min(60, max([len(t) for t in tables] + [5]))
        print(f"{'table':<{width}}  {'recorded':>10}  {'restored':>10}")
        for name, t in tables.items():
            restored = "-" if t["restored"] is None else t["restored"]
            expected = "-" if t["expected"] is None else t["expected"]
            print(f"{_printable(name)[:width]:<{width}}  {expected:>10}  {restored:>10}"
                  f"{'' if t['ok'] else '   <-- DIFFERS'}")
    for c in result.get("checks") or []:
        print(f"check {c['name']}: {'passed' if c['passed'] else 'FAILED'} (got {c['actual']!r}, expected "
              f"{c['expected']!r}){' ' + _printable(c['error']) if c.get('error') else ''}")
    if "outcome" in result:
        print(f"drill {result['id']} {result['outcome'].upper()}: {_printable(result['message'])}; recovery "
              f"{result['recoverySeconds']} s ({', '.join(f'{k} {v} s' for k, v in result['phases'].items())})")
        print(f"report: {result['report']['pdf']}\n        {result['report']['json']}")


def print_failed(report: dict[str, Any], as_json: bool) -> None:
    """A failed drill's result, before the error line."""
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_drill(report)
    sys.stdout.flush()
