"""Sending an alert: the message (what failed, when, where, the error, a link), email over SMTP, and a
JSON webhook signed with HMAC-SHA256 and retried with exponential backoff.

Receivers check `X-EHR-Backup-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw body under the
channel's secret. Nothing here logs or returns a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from .. import __version__
from .conditions import clean_message
from .state import Condition, Notice

SIGNATURE_HEADER = "X-EHR-Backup-Signature"
TRIES = 4
FIRST_DELAY = 1.0  # then 2, 4 … seconds
MAX_TOTAL = 30.0  # a webhook never holds the alert thread longer than this, retries included
TIMEOUT = 10.0
FOOTER = ("EHR Backup sends this alert when a backup, verification, drill or scheduled run fails, a backup is "
          "overdue, storage runs low, or the audit log does not verify; and once more when it is resolved.")
TITLES = {"backup.failed": "Backup failed", "backup.overdue": "Backup overdue", "verify.failed": "Verification failed",
          "drill.failed": "Restore drill failed", "storage.low": "Storage low", "schedule.failed": "Scheduled run failed",
          "audit.broken": "Audit log does not verify", "copy.failed": "Backup copy failed (degraded)",
          "test": "Test alert"}


@dataclass(frozen=True)
class Message:
    """An alert as channels send it."""

    kind: str  # new | repeat | resolved | test
    condition: Condition
    at: datetime
    link: str

    @property
    def event(self) -> str:
        """The event name receivers switch on: the condition's, or `resolved`."""
        return "resolved" if self.kind == "resolved" else self.condition.event

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        c = self.condition
        return {"event": self.event, "kind": self.kind, "key": c.key, "status": "resolved" if self.kind == "resolved"
                else "open", **({"resolves": c.event} if self.kind == "resolved" else {}),
                "database": c.database or None, "location": c.location or None, "message": self.text(),
                "since": _iso(c.since), "at": _iso(self.at), "link": self.link, "source": f"ehr-backup {__version__}",
                "id": str(uuid.uuid4())}

    def text(self) -> str:
        """One line: what happened."""
        message = clean_message(self.condition.message)
        return f"resolved: {message}" if self.kind == "resolved" else message

    def subject(self) -> str:
        """The email subject."""
        c = self.condition
        title = TITLES.get(c.event, c.event)
        where = c.database or c.location
        prefix = {"resolved": "RESOLVED: ", "repeat": "STILL OPEN: "}.get(self.kind, "")
        # one printable line: a CR or LF (e.g. in a database name) would make EmailMessage refuse the header
        return clean_message(f"[EHR Backup] {prefix}{title}{': ' + where if where else ''}", 250)

    def body(self) -> str:
        """The email body: what, when, where, the error and the link."""
        c = self.condition
        event = f"Event:    {self.event}" + (f" ({c.event})" if self.kind == "resolved" else "")
        lines = [self.subject().removeprefix("[EHR Backup] "), "", self.text(), "", event,
                 f"Database: {clean_message(c.database, 200) or '-'}",
                 f"Location: {clean_message(c.location, 200) or '-'}",
                 f"Since:    {_iso(c.since)}", f"Sent at:  {_iso(self.at)}", f"Open:     {self.link}", "",
                 FOOTER]
        return "\n".join(lines) + "\n"


def message_for(notice: Notice, now: datetime, link: str) -> Message:
    """The message of a notice."""
    return Message(notice.kind, notice.condition, now, link)


@dataclass(frozen=True)
class Outcome:
    """How a delivery went: ok, after how many attempts, and why not (no secrets)."""

    ok: bool
    attempts: int = 1
    error: str = ""


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=<hex HMAC-SHA256 of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook is posted where it was configured; a redirect is an error, not a new destination."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def send_webhook(url: str, secret: str, message: Message, *, sleep: Callable[[float], None] = time.sleep,
                 tries: int = TRIES, first_delay: float = FIRST_DELAY, max_total: float = MAX_TOTAL,
                 timeout: float = TIMEOUT) -> Outcome:
    """POST the signed JSON body; retry connection errors, 5xx, 408 and 429 with exponential backoff."""
    body = json.dumps(message.payload(), separators=(",", ":"), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": f"ehr-backup/{__version__}",
               SIGNATURE_HEADER: sign(secret, body), "X-EHR-Backup-Event": message.event}
    opener = urllib.request.build_opener(_NoRedirect)
    started = time.monotonic()
    error = ""
    for attempt in range(1, tries + 1):
        retry = True
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with opener.open(request, timeout=timeout) as response:
                response.read(4096)
                if 200 <= response.status < 300:
                    return Outcome(True, attempt)
                error, retry = f"HTTP {response.status}", False
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            retry = exc.code >= 500 or exc.code in (408, 429)
        except http.client.InvalidURL as exc:  # e.g. a bad port stored by an older version: retrying cannot help
            error, retry = f"the webhook URL is not valid: {clean_message(exc, 200)}", False
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"cannot reach the webhook: {clean_message(reason, 200)}"
        delay = first_delay * 2 ** (attempt - 1)
        if not retry or attempt == tries or time.monotonic() - started + delay > max_total:
            return Outcome(False, attempt, error)
        sleep(delay)
    return Outcome(False, tries, error)


def send_email(host: str, port: int, security: str, user: str, password: str | None, sender: str,
               recipients: list[str], message: Message, timeout: float = TIMEOUT) -> Outcome:
    """Send the message over SMTP: STARTTLS, implicit TLS, or (for a local relay) plain; login when a user is set."""
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, ", ".join(recipients), message.subject()
    mail["Date"] = format_datetime(message.at)
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    mail.set_content(message.body())
    context = ssl.create_default_context()  # certificates checked against the system's (or SSL_CERT_FILE's) CAs
    try:
        if security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            client.ehlo()
            if security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if user:
                client.login(user, password or "")
            client.send_message(mail)
    except smtplib.SMTPAuthenticationError as exc:
        return Outcome(False, 1, f"the SMTP server refused the login ({exc.smtp_code})")
    except smtplib.SMTPResponseException as exc:
        return Outcome(False, 1, f"the SMTP server said {exc.smtp_code}: {clean_message(_text(exc.smtp_error), 200)}")
    except smtplib.SMTPRecipientsRefused:
        return Outcome(False, 1, "the SMTP server refused every recipient")
    except ssl.SSLCertVerificationError as exc:
        return Outcome(False, 1, f"the SMTP server's certificate is not trusted: {clean_message(exc.verify_message, 200)}")
    except ssl.SSLError as exc:
        return Outcome(False, 1, f"TLS with the SMTP server failed: {clean_message(exc.reason or exc, 200)}")
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, 1, f"cannot send through {host}:{port}: {clean_message(exc, 200) or exc.__class__.__name__}")
    return Outcome(True, 1)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None
