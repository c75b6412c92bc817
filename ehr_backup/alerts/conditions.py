"""Collect the facts alerts are about: failed backups, verifications, drills and scheduled runs, overdue
backups, low or filling storage, and an audit chain that does not verify.

Each collector reads what the service already knows; one that fails is logged and skipped, so a broken
check never hides the others. Messages carry catalogue errors, with credentials in URLs and conninfo
strings blanked, and never dump contents.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func
from sqlalchemy import select as sa_select
from sqlmodel import col

from .. import cron, demo
from ..catalogue import as_utc
from ..errors import BackupError
from ..models import BackupRecord, Status
from ..pg import ConnInfo
from ..profiles import db_key
from .profile_thresholds import ProfileThresholds
from .state import Condition

if TYPE_CHECKING:
    from ..service import BackupService

log = logging.getLogger("ehr_backup.alerts")
MAX_MESSAGE = 600
# the catalogue columns each check reads (light rows, not records)
FAILED_FACTS = ("id", "database", "location", "kind", "status", "step", "error", "finished_at", "created_at")
VERIFY_FACTS = ("id", "database", "location", "status", "verify_ok", "verified_at", "verify_message")
MIN_GRACE = timedelta(hours=1)  # a scheduled backup may take a while, and be retried, before it is late
FORGET_FAILED = timedelta(days=7)  # a failure of a database that is no longer configured stops alerting
AUDIT_EVERY = timedelta(hours=1)  # the whole chain is re-read at most this often: its cost grows with the log
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_KEY_VALUES = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|key|sslpassword)\s*[=:]\s*\S+")


def clean_message(text: Any, limit: int = MAX_MESSAGE) -> str:
    """An error for a message: one line, printable, bounded, with credentials in URLs or key=value blanked."""
    value = str(text or "")
    value = _URL_CREDENTIALS.sub(r"\1***@", value)
    value = _KEY_VALUES.sub(lambda m: f"{m.group(1)}=***", value)
    value = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return value[:limit]


def expected_interval(expressions: Iterable[tuple[str, str]], now: datetime) -> timedelta | None:
    """The longest gap between consecutive fire times of the most frequent schedule (cron, zone), or None."""
    best: timedelta | None = None
    for expression, zone in expressions:
        runs = cron.next_runs(expression, zone, now, 8)
        gaps = [b - a for a, b in pairwise(runs)]
        if gaps:
            gap = max(gaps)
            best = gap if best is None else min(best, gap)
    return best


def grace(interval: timedelta) -> timedelta:
    """How late a scheduled backup may be before it is overdue: a quarter of the interval, at least an hour."""
    return max(MIN_GRACE, interval / 4)


def overdue(database: str, last_success: datetime | None, reference: datetime | None,
            interval: timedelta | None, max_age: timedelta | None, now: datetime) -> Condition | None:
    """Pure: the overdue condition of a database, from its schedule's interval (else a maximum age)."""
    if interval is not None:
        allowed, why = interval + grace(interval), "its schedule"
    elif max_age is not None:
        allowed, why = max_age, "the maximum backup age (Alerts page or EHR_BACKUP_MAX_BACKUP_AGE_HOURS)"
    else:
        return None
    start = last_success or reference
    if start is None or now - start <= allowed:
        return None
    hours = allowed.total_seconds() / 3600
    last = f"the last one finished {start:%Y-%m-%d %H:%M} UTC" if last_success else "there has been none yet"
    return Condition(f"backup.overdue:{database}", "backup.overdue",
                     f"no successful backup of {database} within {hours:.1f} hours (expected by {why}); {last}",
                     start + allowed, database=database)


def failed_backups(records: Iterable[Any], configured: str | None, now: datetime,
                   forget_after: timedelta = FORGET_FAILED) -> list[Condition]:
    """Pure: a backup.failed condition per database whose newest attempt (records newest first) failed.

    Only the configured database, and databases that have had a successful backup, count: an attempt on a
    mistyped DATABASE_URL would otherwise stay open forever. Another database's failure stops counting after
    `forget_after` (it is no longer backed up here); the configured database's stays until a backup succeeds.
    """
    records = list(records)

    def label(r: Any) -> str:  # a profile's database is its own (name@profile): same-named ones stay apart
        return db_key(r.database, getattr(r, "profile", None))

    succeeded = {label(r) for r in records if r.status in (Status.COMPLETED, Status.DISCOVERED)}
    seen: set[str] = set()
    out = []
    for r in records:
        name = label(r)
        if r.kind == "safety" or r.status not in (Status.COMPLETED, Status.FAILED) or name in seen:
            continue
        seen.add(name)
        if r.status != Status.FAILED or (name != configured and name not in succeeded):
            continue
        at = as_utc(r.finished_at) or as_utc(r.created_at) or now
        if name != configured and now - at > forget_after:
            continue
        out.append(Condition(f"backup.failed:{name}", "backup.failed",
                             f"backup {r.id} of {name} failed at {at:%Y-%m-%d %H:%M} UTC"
                             f"{' while ' + r.step if r.step else ''}: {clean_message(r.error)}",
                             at, database=name, location=r.location))
    return out


class Collector:
    """The current conditions of one installation."""

    def __init__(self, service: BackupService) -> None:
        self.s = service
        self._audit_ok_at: datetime | None = None  # when the chain last verified (a broken one is re-read each time)

    def collect(self, now: datetime) -> list[Condition]:
        """Every condition that holds now."""
        out: list[Condition] = []
        checks: Sequence[Callable[[datetime], list[Condition]]] = (
            self.backups, self.verifications, self.drills, self.overdue, self.storage, self.schedules, self.audit,
            self.copies)
        for check in checks:
            try:
                out.extend(check(now))
            except (BackupError, OSError, ValueError) as exc:
                log.warning("alert check %s skipped: %s", check.__name__, clean_message(getattr(exc, "message", exc)))
        return out

    def backups(self, now: datetime) -> list[Condition]:
        """The newest attempt at backing up a database failed (see failed_backups for which databases count)."""
        try:
            configured = self.configured_database()
        except (BackupError, ValueError):
            configured = None  # a DATABASE_URL that does not parse: only databases backed up before count
        return failed_backups(self.newest_attempts(), configured, now)

    def newest_attempts(self) -> list[Any]:
        """What failed_backups reads, chosen by SQLite: each database's newest attempt (newest first), then
        one marker per database that has a good backup. Not every backup: this runs after every job,
        beside the web server, and reading 10,000 rows held the GIL for a tenth of a second."""
        attempt = and_(col(BackupRecord.kind) != "safety", col(BackupRecord.status).in_((Status.COMPLETED, Status.FAILED)))
        rank = func.row_number().over(partition_by=BackupRecord.database,
                                      order_by=(col(BackupRecord.created_at).desc(), col(BackupRecord.id).desc()))
        inner = (sa_select(*(getattr(BackupRecord, n) for n in FAILED_FACTS), rank.label("rank"))
                 .where(attempt).subquery())
        good = col(BackupRecord.status).in_((Status.COMPLETED, Status.DISCOVERED))
        with self.s.db.reading() as session:
            newest = session.execute(sa_select(inner).where(inner.c.rank == 1)
                                     .order_by(inner.c.created_at.desc(), inner.c.id.desc())).all()
            succeeded = session.execute(sa_select(col(BackupRecord.database)).where(good).distinct()).scalars().all()
        # a marker counts as a good backup of its database and never as an attempt (kind safety)
        return [*newest, *(SimpleNamespace(database=d, status=Status.DISCOVERED, kind="safety") for d in succeeded)]

    def copies(self, now: datetime) -> list[Condition]:
        """The newest backup of a database has a failed copy at a destination (ehr_backup/destinations/)."""
        from ..destinations.copies import failed_copies

        return [Condition(f"copy.failed:{f['database']}:{f['destination']}", "copy.failed",
                          f"backup {f['backupId']} of {f['database']} is degraded: its copy to {f['destination']} "
                          f"{f['status']}: {clean_message(f['error'])}", as_utc(f["at"]) or now,
                          database=f["database"], location=f["destination"])
                for f in failed_copies(self.s.catalogue.all(), self.s.copies.all())]

    def verifications(self, now: datetime) -> list[Condition]:
        """A stored backup whose latest verification failed."""
        out = []
        failed = [col(BackupRecord.verify_ok).is_(False),
                  col(BackupRecord.status).in_((Status.COMPLETED, Status.DISCOVERED))]
        for r in self.s.catalogue.columns(VERIFY_FACTS, where=failed):  # only those, found by SQLite
            if r.verify_ok is False and r.status in (Status.COMPLETED, Status.DISCOVERED):
                at = as_utc(r.verified_at) or now
                out.append(Condition(f"verify.failed:{r.id}", "verify.failed",
                                     f"verification of backup {r.id} of {r.database} failed at "
                                     f"{at:%Y-%m-%d %H:%M} UTC: {clean_message(r.verify_message)}",
                                     at, database=r.database, location=r.location))
        return out

    def drills(self, now: datetime) -> list[Condition]:
        """The newest restore drill of a database failed (when drills exist in this version)."""
        drills = getattr(self.s, "drills", None)
        if drills is None or not hasattr(drills, "latest"):
            return []
        out = []
        for d in drills.latest():
            if d.get("outcome") != "failed":
                continue
            at = _parse(d.get("at")) or now
            database = str(d.get("database") or "")
            out.append(Condition(f"drill.failed:{database}", "drill.failed",
                                 f"restore drill of backup {d.get('backupId')} ({database}) failed at "
                                 f"{at:%Y-%m-%d %H:%M} UTC: {clean_message(d.get('message'))}", at, database=database))
        return out

    def configured_database(self) -> str | None:
        """The configured database's name, without starting the demo cluster."""
        url = self.s.settings.database_url or demo.database_url(self.s.settings.data_dir)
        return ConnInfo.parse(url).dbname if url else None

    def overdue(self, now: datetime) -> list[Condition]:
        """No successful backup of the configured database, or of a database profile, within its expected
        interval (the profile's own schedules; else the maximum backup age)."""
        own = ProfileThresholds(self.s)  # a profile may have its own maximum age
        # (profile, its database's name, when it was added); None: the configured database (DATABASE_URL)
        targets: list[tuple[str | None, str | None, datetime | None]] = [(None, self.configured_database(), None)]
        targets += [(p.name, ConnInfo.parse(p.url).dbname, as_utc(p.created_at)) for p in self.s.profiles.all()]
        schedules = [s for s in self.s.schedules.all() if s.enabled and s.kind == "backup"]
        out = []
        for profile, database, added in targets:
            if database is None:
                continue
            scheduled = [s for s in schedules if (s.database or None) == profile]
            interval = expected_interval(((s.cron, s.timezone) for s in scheduled), now)
            mine = col(BackupRecord.profile).is_(None) if profile is None else BackupRecord.profile == profile
            good = self.s.catalogue.columns(("finished_at", "created_at"), database=database,
                                            where=[BackupRecord.status == Status.COMPLETED, mine])
            last = max((as_utc(r.finished_at) or as_utc(r.created_at) for r in good),  # type: ignore[type-var]
                       default=None)
            reference = min((as_utc(s.created_at) for s in scheduled), default=added)  # type: ignore[type-var]
            hours = own.max_backup_age_hours(profile)
            max_age = timedelta(hours=hours) if hours else None
            found = overdue(db_key(database, profile), last, reference, interval, max_age, now)
            if found:
                out.append(found)
        return out

    def storage(self, now: datetime) -> list[Condition]:
        """A location below its free-space threshold or forecast to fill soon."""
        out = []
        for loc in self.s.status().get("locations", []):
            if not loc.get("warnings"):
                continue
            name = loc["key"] if loc["key"] != "custom" else f"custom:{loc['path']}"
            out.append(Condition(f"storage.low:{name}", "storage.low",
                                 f"backup location {name} ({loc['path']}): {'; '.join(loc['warnings'])}",
                                 now, location=name))
        return out

    def schedules(self, now: datetime) -> list[Condition]:
        """A schedule whose newest finished run failed (until a run succeeds)."""
        database = self.configured_database() or ""
        # a profile's schedule names its profile's database as its alerts do elsewhere (name@profile)
        labels = {p.name: db_key(ConnInfo.parse(p.url).dbname, p.name) for p in self.s.profiles.all()}
        out = []
        for s in self.s.schedule_list():
            if not s.get("failing"):
                continue
            last = s.get("lastRun") or {}
            at = _parse(last.get("finishedAt")) or now
            out.append(Condition(f"schedule.failed:{s['name']}", "schedule.failed",
                                 f"the scheduled {s['kind']} {s['name']} failed at {at:%Y-%m-%d %H:%M} UTC: "
                                 f"{clean_message(s.get('failure'))}", at,
                                 database=labels.get(s.get("database") or "", database) if s["kind"] == "backup" else "",
                                 location=s.get("location") or ""))
        return out

    def audit(self, now: datetime) -> list[Condition]:
        """The audit log's hash chain does not verify (a chain that verified is re-read at most every AUDIT_EVERY)."""
        last = self._audit_ok_at
        if last is not None and last <= now < last + AUDIT_EVERY:
            return []
        report = self.s.verify_audit()
        if report.ok:
            self._audit_ok_at = now
            return []
        self._audit_ok_at = None
        where = f" (first bad entry {report.first_bad})" if report.first_bad is not None else ""
        return [Condition("audit.broken", "audit.broken",
                          f"the audit log does not verify{where}: {clean_message(report.reason)}", now)]


def _parse(text: Any) -> datetime | None:
    if isinstance(text, datetime):
        return as_utc(text)
    try:
        return as_utc(datetime.fromisoformat(str(text))) if text else None
    except ValueError:
        return None
