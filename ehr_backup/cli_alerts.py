"""`ehr-backup alerts …`: add, list, switch, edit, remove and test alert channels; thresholds; check now; history."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable
from typing import Any

from .alerts.conditions import clean_message
from .alerts.profile_thresholds import ProfileThresholds
from .alerts.thresholds import BY_NAME
from .audit import Actor
from .errors import InvalidInput
from .text import printable

log = logging.getLogger("ehr_backup.alerts")
FLAGS = {"--repeat-hours": "repeatHours", "--max-backup-age-hours": "maxBackupAgeHours", "--min-free-mb": "minFreeMb",
         "--fill-warn-days": "fillWarnDays"}


def add_commands(cmd: Any) -> None:
    """Register `alerts` on the top-level parser's `cmd` helper."""
    a = cmd("alerts", "tell people when backups, verifications, drills or scheduled runs fail, a backup is "
                      "overdue, storage runs low or the audit log does not verify (email, signed webhook)")
    sub = a.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    w = sub.add_parser("add-webhook", help="add a JSON webhook; its body is signed: X-EHR-Backup-Signature: "
                                           "sha256=<hex HMAC-SHA256 of the body>")
    w.add_argument("url", metavar="URL")
    w.add_argument("--secret", metavar="TEXT", help="the signing secret (at least 16 characters; `-` reads it from "
                                                    "stdin); default: a new one, printed once")
    w.add_argument("--json", action="store_true")
    e = sub.add_parser("add-email", help="add an email channel (password: EHR_BACKUP_SMTP_PASSWORD, else a "
                                         "prompt, or stdin when it is not a terminal)")
    e.add_argument("address", metavar="ADDRESS", help="recipient address(es), separated by commas")
    e.add_argument("--smtp-host", required=True, metavar="H")
    e.add_argument("--smtp-port", type=int, metavar="P", help="default 587 (STARTTLS), 465 (--tls), 25 (--plain)")
    e.add_argument("--smtp-user", metavar="U", help="log in as U (needs TLS)")
    e.add_argument("--from", dest="sender", metavar="ADDRESS", help="sender address (default ehr-backup@<host>)")
    sec = e.add_mutually_exclusive_group()
    sec.add_argument("--starttls", dest="security", action="store_const", const="starttls",
                     help="upgrade the connection with STARTTLS (default)")
    sec.add_argument("--tls", dest="security", action="store_const", const="tls", help="implicit TLS (SMTPS)")
    sec.add_argument("--plain", dest="security", action="store_const", const="none",
                     help="no TLS, for a relay on this machine; no login")
    e.add_argument("--json", action="store_true")
    sub.add_parser("list", help="the channels (secrets only as set / not set) and open alerts"
                   ).add_argument("--json", action="store_true")
    r = sub.add_parser("remove", help="remove a channel by its id (see `alerts list`)")
    r.add_argument("id", type=int, metavar="ID")
    r.add_argument("--json", action="store_true")
    sub.add_parser("test", help="send a test alert to every channel").add_argument("--json", action="store_true")
    sub.add_parser("check", help="check the conditions now and send what is due").add_argument(
        "--json", action="store_true")
    t = sub.add_parser("settings", help="show the thresholds (and where each comes from) or store new ones; a "
                                        "stored value wins over the environment's")
    for flag, name in FLAGS.items():
        t.add_argument(flag, type=int, metavar="N", dest=name, help=f"store: {BY_NAME[name].label}, in {BY_NAME[name].unit}")
    t.add_argument("--reset", action="append", choices=list(FLAGS.values()), default=[], metavar="NAME",
                   help="forget a stored value, so the environment's holds again (repeatable): "
                        + ", ".join(FLAGS.values()))
    t.add_argument("--database", metavar="NAME", help="a database profile's own thresholds (only "
                   "--max-backup-age-hours; --reset forgets its value, so the installation's holds again)")
    t.add_argument("--json", action="store_true")
    for verb, what in (("enable", "switch a channel on"), ("disable", "switch a channel off: it receives nothing")):
        x = sub.add_parser(verb, help=f"{what} (by its id, see `alerts list`)")
        x.add_argument("id", type=int, metavar="ID")
        x.add_argument("--json", action="store_true")
    rc = sub.add_parser("set-recipients", help="replace an email channel's recipients")
    rc.add_argument("id", type=int, metavar="ID")
    rc.add_argument("address", metavar="ADDRESS", help="recipient address(es), separated by commas")
    rc.add_argument("--json", action="store_true")
    h = sub.add_parser("history", help="alerts sent or failed to send, newest first")
    h.add_argument("--limit", type=int, default=50, metavar="N")
    h.add_argument("--json", action="store_true")


def _password(service: Any, user: str | None) -> str | None:
    if not user or service.settings.smtp_password:
        return None  # no login, or the password comes from the environment at send time
    if sys.stdin.isatty():
        return getpass.getpass(f"SMTP password for {user}: ")
    return sys.stdin.readline().rstrip("\n")


def dispatch(service: Any, args: argparse.Namespace, actor: Actor) -> Any:
    """Do one `alerts …` action."""
    alerts = service.alerts
    action = args.alerts_command
    if action == "add-webhook":
        secret = sys.stdin.readline().rstrip("\n") if args.secret == "-" else args.secret
        return alerts.add_webhook(actor, args.url, secret)
    if action == "add-email":
        return alerts.add_email(actor, args.address, smtp_host=args.smtp_host, smtp_port=args.smtp_port,
                                smtp_user=args.smtp_user, security=args.security or "starttls",
                                password=_password(service, args.smtp_user), sender=args.sender)
    if action == "list":
        return {"channels": alerts.channels(), "open": alerts.open_alerts(), "thresholds": alerts.thresholds()}
    if action == "remove":
        alerts.remove(actor, args.id)
        return {"removed": args.id}
    if action == "test":
        return alerts.test(actor)
    if action == "check":
        result = alerts.check()
        service.audit.record(actor, "alert-check", "alerts", "ok", f"{len(result['open'])} open, "
                                                                   f"{result['sent']} sent, {result['failed']} failed")
        return result
    if action == "history":
        return {"history": alerts.history(args.limit)}
    if action == "settings":
        changes: dict[str, Any] = {name: getattr(args, name) for name in FLAGS.values()
                                   if getattr(args, name) is not None}
        changes.update({name: None for name in args.reset if name not in changes})
        if args.database and args.database != "default":  # one profile's own (alerts/profile_thresholds.py)
            own = ProfileThresholds(service)
            return {"thresholds": own.update(actor, args.database, changes) if changes else own.view(args.database)}
        store = service.alert_thresholds
        return {"thresholds": store.update(actor, changes) if changes else store.view()}
    if action in ("enable", "disable"):
        return alerts.set_enabled(actor, args.id, action == "enable")
    if action == "set-recipients":
        return alerts.set_recipients(actor, args.id, args.address)
    raise InvalidInput(f"unknown alerts action {action}")


def then_check(service: Any, command: str, work: Callable[[], Any]) -> Any:
    """Run a command; after `create` and `verify` (whether they worked or not) check alerts when channels exist."""
    try:
        return work()
    finally:
        if command in ("create", "verify"):
            _check_after(service)


def _check_after(service: Any) -> None:
    """Check alerts after a command; any failure is only logged, so the command's own result stands."""
    try:
        if service.alerts.channels():
            service.alerts.check_quietly()
    except Exception as exc:  # noqa: BLE001 - raising here would replace the command's result or exit status
        log.warning("the alert check after this command failed: %s", clean_message(getattr(exc, "message", exc)))


def print_human(args: argparse.Namespace, result: Any) -> None:
    """Print an `alerts …` result for people."""
    action = args.alerts_command
    if action in ("add-webhook", "add-email"):
        print(f"added alert channel {result['id']}: {result['kind']} {printable(result['target'])}")
        if "secret" in result and result["secret"] not in ("set", "not set"):
            print("Webhook signing secret (shown once; give it to the receiver):")
            print(result["secret"])
    elif action == "list":
        if not result["channels"]:
            print("no alert channels (add one with `ehr-backup alerts add-email` or `add-webhook`)")
        for c in result["channels"]:
            secret = f"password {c['password']}" if c["kind"] == "email" else f"secret {c['secret']}"
            print(f"{c['id']:>4}  {c['kind']:<8} {printable(c['target'])}  ({secret})"
                  f"{'' if c['enabled'] else '  OFF'}")
        _print_open(result["open"])
    elif action == "remove":
        print(f"removed alert channel {result['removed']}")
    elif action == "test":
        _print_deliveries(result["deliveries"])
    elif action == "check":
        print(f"checked: {result['conditions']} condition(s), {result['sent']} sent, {result['failed']} failed")
        _print_open(result["open"])
    elif action == "settings":
        for name, t in result["thresholds"].items():
            if "database" in t:  # a profile's own
                own = (f"set for {t['database']} by {t['updatedBy']} at {t['updatedAt']}" if t["source"] == "profile"
                       else f"the installation's ({t['database']} sets none)")
                print(f"{name:<18} {t['value']:>10} {t['unit']:<6} {own}")
                continue
            source = {"stored": f"stored by {t['updatedBy']} at {t['updatedAt']}",
                      "environment": f"from {t['variable']}", "default": f"default ({t['variable']} not set)"}
            print(f"{name:<18} {t['value']:>10} {t['unit']:<6} {source[t['source']]}")
    elif action in ("enable", "disable", "set-recipients"):
        print(f"alert channel {result['id']} {'on' if result['enabled'] else 'off'}: {result['kind']} "
              f"{printable(result['target'])}")
    elif action == "history":
        if not result["history"]:
            print("no alerts sent yet")
        _print_deliveries(result["history"])


def _print_open(rows: list[dict[str, Any]]) -> None:
    print(f"open alerts: {len(rows)}" if rows else "no open alerts")
    for a in rows:
        print(f"  {a['event']:<16} since {a['since']}  {printable(a['message'])}")


def _print_deliveries(rows: list[dict[str, Any]]) -> None:
    for d in rows:
        why = f" ({printable(d['error'])})" if d["error"] else ""
        print(f"{d['at']}  {d['outcome'].upper():<6} {d['kind']:<8} {d['event']:<16} to {printable(d['channel'])}"
              f"{why}: {printable(d['message'])}")
