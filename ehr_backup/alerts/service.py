"""Alerts as the service offers them: channels (add, list, remove, test), evaluation (`check`), open alerts,
delivery history, and the loop the long-running processes run.

Evaluation never runs on a backup's thread: jobs only `poke` the loop. A failed delivery is recorded in
the history and logged as a WARNING; the alert stays unnotified and is tried again at the next check.
"""

from __future__ import annotations

import logging
import re
import secrets as pysecrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlmodel import col, delete, select

from ..audit import Actor
from ..catalogue import as_utc, utcnow
from ..errors import BackupError, Busy, InvalidInput, NotFound
from ..locks import lock_for
from . import editing, secrets
from .channels import Message, Outcome, message_for, send_email, send_webhook
from .conditions import Collector, clean_message
from .state import Condition, OpenAlert, decide
from .tables import AlertChannel, AlertDelivery, OpenAlertRow

if TYPE_CHECKING:
    from ..service import BackupService

log = logging.getLogger("ehr_backup.alerts")
KEEP_HISTORY = 2000
MAX_CHANNELS = 50
EMAIL_RE = re.compile(r"[^@\s,;<>\"'()]{1,64}@[A-Za-z0-9.-]{1,253}")
HOST_RE = re.compile(r"[A-Za-z0-9.:\[\]-]{1,253}")
URL_HOST_RE = re.compile(r"[A-Za-z0-9._:-]{1,253}")  # a webhook's host name, IPv4 or (unbracketed) IPv6 address
PORTS = {"starttls": 587, "tls": 465, "none": 25}
MIN_SECRET = 16


class Alerts:
    """Channels, evaluation and history of alerts for one installation."""

    def __init__(self, service: BackupService, clock: Callable[[], datetime] = utcnow) -> None:
        self.s = service
        self.db = service.db
        self.clock = clock
        self.sleep: Callable[[float], None] = time.sleep  # the webhook's backoff (tests pass their own)
        self.collector = Collector(service)
        self._wake = threading.Event()

    # ----- channels ----------------------------------------------------------------------------------
    def channels(self) -> list[dict[str, Any]]:
        """Every channel, secrets shown only as set / not set."""
        with self.db.reading() as s:
            return [self._view(c) for c in s.exec(select(AlertChannel).order_by(col(AlertChannel.id)))]

    def _view(self, c: AlertChannel) -> dict[str, Any]:
        secret = "set" if c.secret else ("from EHR_BACKUP_SMTP_PASSWORD" if c.kind == "email" and c.smtp_user
                                         and self.s.settings.smtp_password else "not set")
        out: dict[str, Any] = {"id": c.id, "kind": c.kind, "target": display_target(c), "enabled": c.enabled,
                               "createdAt": _iso(c.created_at), "createdBy": c.created_by}
        if c.kind == "email":
            out.update({"recipients": c.target.split(","), "smtpHost": c.smtp_host, "smtpPort": c.smtp_port,
                        "smtpUser": c.smtp_user or None, "security": c.smtp_security, "sender": c.sender,
                        "password": secret if c.smtp_user else "not needed"})
        else:
            out["secret"] = secret
        return out

    def add_webhook(self, actor: Actor, url: str, secret: str | None = None) -> dict[str, Any]:
        """Add a webhook; with no secret one is made and returned once (as `secret`)."""
        made = secret is None or secret == ""
        try:
            url = check_url(url)
            secret = pysecrets.token_urlsafe(32) if made else str(secret)
            if len(secret) < MIN_SECRET or not secret.isprintable():
                raise InvalidInput(f"a webhook secret has at least {MIN_SECRET} printable characters")
            channel = AlertChannel(kind="webhook", target=url, created_at=self.clock(), created_by=actor.name)
            channel.secret = secrets.seal(self.s.keyring(), secret, _context(channel))
        except BackupError as exc:
            self.s.audit.record(actor, "alert-channel-add", "webhook", "refused", exc.message)
            raise
        view = self._save(actor, channel)
        return {**view, "secret": secret} if made else view

    def add_email(self, actor: Actor, recipients: str | list[str], *, smtp_host: str, smtp_port: int | None = None,
                  smtp_user: str | None = None, security: str = "starttls", password: str | None = None,
                  sender: str | None = None) -> dict[str, Any]:
        """Add an email channel; the password is stored encrypted, or read from EHR_BACKUP_SMTP_PASSWORD."""
        try:
            addresses = check_addresses(recipients)
            if security not in PORTS:
                raise InvalidInput("security is starttls, tls or none")
            if not isinstance(smtp_host, str) or not HOST_RE.fullmatch(smtp_host):
                raise InvalidInput("give the SMTP server's host name or address")
            port = PORTS[security] if smtp_port is None else smtp_port
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidInput("the SMTP port is a number from 1 to 65535")
            user = (smtp_user or "").strip()
            if len(user) > 200 or not user.isprintable():
                raise InvalidInput("the SMTP user name is at most 200 printable characters")
            if password and not user:
                raise InvalidInput("a password goes with an SMTP user name")
            if user and security == "none":
                raise InvalidInput("a password is only sent over TLS: choose starttls or tls")
            if user and not password and not self.s.settings.smtp_password:
                raise InvalidInput("give the SMTP password, or set EHR_BACKUP_SMTP_PASSWORD")
            from_ = check_addresses(sender)[0] if sender else f"ehr-backup@{socket.getfqdn() or 'localhost'}"
            channel = AlertChannel(kind="email", target=",".join(addresses), smtp_host=smtp_host, smtp_port=port,
                                   smtp_user=user, smtp_security=security, sender=from_, created_at=self.clock(),
                                   created_by=actor.name)
            if password:
                channel.secret = secrets.seal(self.s.keyring(), password, _context(channel))
        except BackupError as exc:
            self.s.audit.record(actor, "alert-channel-add", "email", "refused", exc.message)
            raise
        return self._save(actor, channel)

    def _save(self, actor: Actor, channel: AlertChannel) -> dict[str, Any]:
        with self.db.writing() as s:
            count = len(s.exec(select(AlertChannel.id)).all())
            if count >= MAX_CHANNELS:
                raise InvalidInput(f"at most {MAX_CHANNELS} alert channels")
            s.add(channel)
            s.flush()
        view = self._view(channel)
        self.s.audit.record(actor, "alert-channel-add", f"{channel.id}", "ok", f"{channel.kind} {view['target']}")
        return view

    def remove(self, actor: Actor, channel_id: int) -> None:
        """Delete a channel (its history stays)."""
        with self.db.writing() as s:
            found = s.get(AlertChannel, channel_id) if isinstance(channel_id, int) else None
            if found is not None:
                s.delete(found)
        if found is None:
            self.s.audit.record(actor, "alert-channel-remove", str(channel_id)[:20], "refused", "no such channel")
            raise NotFound(f"no alert channel with id {channel_id}")
        self.s.audit.record(actor, "alert-channel-remove", str(channel_id), "ok", found.kind)

    # ----- sending -------------------------------------------------------------------------------------
    def link(self) -> str:
        """The backup page's address for messages: EHR_BACKUP_PUBLIC_URL, else the listening host and port."""
        base = self.s.settings.public_url
        if not base:
            host = self.s.settings.host
            host = socket.getfqdn() if host in ("0.0.0.0", "::") else host
            base = f"http://{'[' + host + ']' if ':' in host else host}:{self.s.settings.port}"
        return base.rstrip("/") + "/admin/backup"

    def _deliver(self, channel: AlertChannel, message: Message) -> Outcome:
        try:
            secret = secrets.unseal(self.s.keyring(), channel.secret, _context(channel)) if channel.secret else None
            if channel.kind == "webhook":
                if secret is None:
                    return Outcome(False, 0, "the webhook has no signing secret; add it again")
                return send_webhook(channel.target, secret, message, sleep=self.sleep)
            password = secret if secret is not None else self.s.settings.smtp_password
            return send_email(channel.smtp_host, channel.smtp_port, channel.smtp_security, channel.smtp_user,
                              password, channel.sender, channel.target.split(","), message)
        except BackupError as exc:
            return Outcome(False, 0, exc.message)
        except Exception as exc:  # noqa: BLE001 - an alert must never break the caller; recorded below
            return Outcome(False, 0, f"internal error: {exc.__class__.__name__}")

    def _send(self, message: Message, channels: list[AlertChannel]) -> list[AlertDelivery]:
        """Send to every channel and record each outcome; returns the history rows."""
        rows = []
        c = message.condition
        for channel in channels:
            try:
                outcome = self._deliver(channel, message)
                where = f"{channel.kind} {display_target(channel)}"[:300]
            except Exception as exc:  # noqa: BLE001 - one broken channel must not keep the alert from the others
                outcome, where = Outcome(False, 0, f"internal error: {exc.__class__.__name__}"), channel.kind
            rows.append(AlertDelivery(at=self.clock(), channel_id=channel.id, channel=where, kind=message.kind,
                                      event=message.event, key=c.key[:300], database=c.database,
                                      location=c.location, message=message.text(),
                                      outcome="sent" if outcome.ok else "failed", attempts=outcome.attempts,
                                      error=clean_message(outcome.error)))
            if not outcome.ok:
                log.warning("alert %s (%s) not delivered to alert channel %s after %d attempt(s): %s", message.event,
                            clean_message(c.key), channel.id, outcome.attempts, clean_message(outcome.error))
        with self.db.writing() as s:
            for row in rows:
                s.add(row)
            s.flush()
            newest = s.exec(select(AlertDelivery.id).order_by(col(AlertDelivery.id).desc())
                            .offset(KEEP_HISTORY).limit(1)).first()
            if newest is not None:
                s.exec(delete(AlertDelivery).where(col(AlertDelivery.id) <= newest))  # type: ignore[call-overload]
        return rows

    def _enabled(self) -> list[AlertChannel]:
        with self.db.reading() as s:
            return list(s.exec(select(AlertChannel).where(col(AlertChannel.enabled)).order_by(col(AlertChannel.id))))

    def test(self, actor: Actor) -> dict[str, Any]:
        """Send a test alert to every channel now; each outcome is recorded and returned."""
        channels = self._enabled()
        if not channels:
            self.s.audit.record(actor, "alert-test", "alerts", "refused", "no alert channel is on")
            raise InvalidInput("add an alert channel first (email or webhook), or switch one on")
        now = self.clock()
        cond = Condition("test", "test", f"test alert sent by {actor.name}: alerts from EHR Backup reach this "
                         "channel", now)
        rows = self._send(Message("test", cond, now, self.link()), channels)
        sent = sum(r.outcome == "sent" for r in rows)
        self.s.audit.record(actor, "alert-test", "alerts", "ok" if sent == len(rows) else "failed",
                            f"{sent} of {len(rows)} channels reached")
        return {"sent": sent, "failed": len(rows) - sent, "deliveries": [history_view(r) for r in rows]}

    # ----- evaluation ----------------------------------------------------------------------------------
    def check(self, now: datetime | None = None) -> dict[str, Any]:
        """Evaluate the conditions now, send what is due, and record it; Busy when another check runs."""
        lock = lock_for(self.s.settings, self.s.settings.data_dir / "locks" / "jobs", "alerts-check",
                        noun="the alert check")
        lock.acquire("an alert check")
        try:
            return self._check(now or self.clock())
        finally:
            lock.release()

    def _check(self, now: datetime) -> dict[str, Any]:
        conditions = self.collector.collect(now)
        previous = self._open_alerts()
        repeat = timedelta(hours=self.s.alert_thresholds.current().alert_repeat_hours)
        decision = decide(previous, conditions, now, repeat)
        channels = self._enabled()
        delivered: set[str] = set()
        rows: list[AlertDelivery] = []
        for notice in decision.notices:
            if not channels:
                break
            sent = self._send(message_for(notice, now, self.link()), channels)
            rows.extend(sent)
            if any(r.outcome == "sent" for r in sent) and notice.kind != "resolved":
                delivered.add(notice.condition.key)
        with self.db.writing() as s:
            for key in decision.closed:
                s.exec(delete(OpenAlertRow).where(col(OpenAlertRow.key) == key))  # type: ignore[call-overload]
            for alert in decision.still_open:
                c = alert.condition
                row = s.get(OpenAlertRow, c.key) or OpenAlertRow(key=c.key, event=c.event, since=c.since)
                row.event, row.database, row.location = c.event, c.database, c.location
                row.message, row.since = clean_message(c.message), c.since
                if c.key in delivered:
                    row.notified_at, row.notices = now, row.notices + 1
                s.add(row)
        return {"at": _iso(now), "conditions": len(conditions), "open": [open_view(a) for a in self._open_alerts()],
                "notices": [{"kind": n.kind, "event": n.condition.event, "key": n.condition.key}
                            for n in decision.notices] if channels else [],
                "sent": sum(r.outcome == "sent" for r in rows), "failed": sum(r.outcome == "failed" for r in rows)}

    def _open_alerts(self) -> list[OpenAlert]:
        with self.db.reading() as s:
            rows = list(s.exec(select(OpenAlertRow).order_by(col(OpenAlertRow.since))))
        return [OpenAlert(Condition(r.key, r.event, r.message, as_utc(r.since) or utcnow(), r.database, r.location),
                          as_utc(r.notified_at), r.notices) for r in rows]

    def open_alerts(self) -> list[dict[str, Any]]:
        """Alerts open now (as of the last check)."""
        return [open_view(a) for a in self._open_alerts()]

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries, newest first."""
        limit = max(1, min(int(limit), KEEP_HISTORY))
        with self.db.reading() as s:
            rows = s.exec(select(AlertDelivery).order_by(col(AlertDelivery.id).desc()).limit(limit)).all()
        return [history_view(r) for r in rows]

    def thresholds(self) -> dict[str, Any]:
        """The thresholds in force (stored on the Alerts page, else the environment's) and where each comes from."""
        t = self.s.alert_thresholds.current()
        return {"repeatHours": t.alert_repeat_hours, "checkMinutes": self.s.settings.alert_check_minutes,
                "maxBackupAgeHours": t.max_backup_age_hours or None, "minFreeMb": t.min_free_mb,
                "fillWarnDays": t.fill_warn_days, "sources": dict(t.sources), "link": self.link()}

    def set_enabled(self, actor: Actor, channel_id: int, enabled: bool) -> dict[str, Any]:
        """Switch a channel on or off (a channel that is off receives nothing, test alerts included)."""
        return editing.set_enabled(self, actor, channel_id, enabled)

    def set_recipients(self, actor: Actor, channel_id: int, recipients: str | list[str]) -> dict[str, Any]:
        """Replace an email channel's recipients."""
        return editing.set_recipients(self, actor, channel_id, recipients)

    # ----- the loop -------------------------------------------------------------------------------------
    def poke(self) -> None:
        """Ask the loop to check soon (after a backup, verification or scheduled run); never blocks."""
        self._wake.set()

    def check_quietly(self) -> None:
        """One check whose failure is only logged (the loop, and after CLI commands)."""
        try:
            self.check()
        except Busy:
            pass  # another process checks right now
        except Exception as exc:  # noqa: BLE001 - alerts must never break what runs them
            log.warning("the alert check failed: %s", clean_message(getattr(exc, "message", exc)))

    def serve(self, stop: threading.Event, every: float | None = None) -> None:
        """Check every few minutes (EHR_BACKUP_ALERT_CHECK_MINUTES) and when poked, until `stop` is set."""
        every = every or self.s.settings.alert_check_minutes * 60.0
        next_at = time.monotonic() + min(every, 15.0)  # a first look soon after start-up
        while not stop.is_set():
            if self._wake.wait(1.0) or time.monotonic() >= next_at:
                self._wake.clear()
                if stop.is_set():
                    break
                self.check_quietly()
                next_at = time.monotonic() + every


def check_url(url: Any) -> str:
    """A webhook URL: http or https with a host, no spaces, at most 2000 characters."""
    if not isinstance(url, str) or len(url) > 2000 or not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidInput("give the webhook's URL (http:// or https://, at most 2000 characters)")
    try:  # urlsplit and .port raise ValueError on a bad IPv6 host or port, which would break every later use
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise InvalidInput("the webhook URL's host or port is not valid (the port is a number from 1 to 65535)") \
            from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInput("a webhook URL starts with http:// or https:// and names a host")
    if not URL_HOST_RE.fullmatch(host) or port == 0:
        raise InvalidInput("the webhook URL's host is a name or an address, and its port a number from 1 to 65535")
    return url


def check_addresses(value: Any) -> list[str]:
    """One or more email addresses (a list, or text separated by commas)."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    out = [str(x).strip() for x in items if str(x).strip()]
    if not out or len(out) > 20 or not all(EMAIL_RE.fullmatch(x) for x in out):
        raise InvalidInput("give one to twenty email addresses such as ops@example.org, separated by commas")
    return out


def display_target(c: AlertChannel) -> str:
    """A channel's destination for people and logs: a webhook without credentials, query or long path."""
    if c.kind != "webhook":
        return f"{c.target} via {c.smtp_host}:{c.smtp_port}"
    try:  # a URL stored by an older version may not parse: showing it must not break the list or the sending
        parts = urlsplit(c.target)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an invalid webhook URL (remove this channel and add it again)"
    path = parts.path if len(parts.path) <= 24 else parts.path[:12] + "…"
    return clean_message(f"{parts.scheme}://{host}{port}{path}", 300)


def _context(c: AlertChannel) -> str:
    return f"alert-channel|{c.kind}|{c.target}|{c.smtp_user}"


def open_view(a: OpenAlert) -> dict[str, Any]:
    """The JSON form of an open alert."""
    c = a.condition
    return {"key": c.key, "event": c.event, "database": c.database or None, "location": c.location or None,
            "message": c.message, "since": _iso(c.since), "notifiedAt": _iso(a.notified_at), "notices": a.notices}


def history_view(r: AlertDelivery) -> dict[str, Any]:
    """The JSON form of a delivery."""
    return {"id": r.id, "at": _iso(as_utc(r.at)), "channelId": r.channel_id, "channel": r.channel, "kind": r.kind,
            "event": r.event, "key": r.key, "database": r.database or None, "location": r.location or None,
            "message": r.message, "outcome": r.outcome, "attempts": r.attempts, "error": r.error or None}


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None


