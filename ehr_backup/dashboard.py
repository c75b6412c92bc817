"""The health of each database at a glance: time since its last good backup against its schedule (green,
amber, red), its last verification and drill, open alerts, and the next scheduled run."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_
from sqlmodel import col, select

from .alerts.conditions import expected_interval, grace
from .catalogue import as_utc, utcnow
from .errors import BackupError
from .models import BackupRecord, Status

if TYPE_CHECKING:
    from .service import BackupService

log = logging.getLogger("ehr_backup.dashboard")
UNSCHEDULED = timedelta(hours=24)  # what a database without a backup schedule is measured against


def freshness(last_good: datetime | None, interval: timedelta | None, now: datetime) -> str:
    """Pure: green within the interval plus grace, amber one interval later, then (or with none) red."""
    if last_good is None:
        return "red"
    every = interval or UNSCHEDULED
    allowed = every + grace(every)
    age = now - last_good
    if age <= allowed:
        return "green"
    return "amber" if age <= allowed + every else "red"


def overview(service: BackupService, now: datetime | None = None) -> list[dict[str, Any]]:
    """One card per database: freshness, last good backup, last verification and drill, alerts, next run."""
    now = now or utcnow()
    names = _databases(service)
    try:
        configured = service.connection().dbname
    except BackupError:
        configured = None
    if configured and configured not in names:
        names.insert(0, configured)
    schedules = [s for s in service.schedule_list() if s["enabled"] and s["kind"] == "backup"]
    interval = expected_interval([(s["cron"], s["timezone"]) for s in schedules], now)
    next_run = min((s["nextRuns"][0] for s in schedules if s["nextRuns"]), default=None)
    drills = _drills(service)
    alerts = _alerts(service)
    cards = []
    for name in names:
        good, verified = _newest(service, name)
        last_good = as_utc(good.finished_at or good.created_at) if good else None
        scheduled_here = interval if name == configured else None  # schedules back up the configured database
        cards.append({
            "database": name, "status": freshness(last_good, scheduled_here, now),
            "measuredAgainst": _every(scheduled_here), "lastGoodAt": _iso(last_good),
            "lastGoodId": good.id if good else None,
            "ageSeconds": round((now - last_good).total_seconds()) if last_good else None,
            "lastVerification": {"at": _iso(verified.verified_at), "ok": verified.verify_ok,
                                 "backupId": verified.id} if verified else None,
            "lastDrill": drills.get(name),
            "alerts": [a for a in alerts if a.get("database") in (name, None)],
            "nextRun": next_run if name == configured else None})
    return cards


def _databases(service: BackupService) -> list[str]:
    """The databases with backups made here (a few indexed queries, whatever the number of backups; reused
    until the catalogue changes)."""
    return list(service.catalogue.memo.get("dashboard databases", lambda: _read_databases(service)))


def _read_databases(service: BackupService) -> list[str]:
    with service.db.reading() as s:
        q = (select(BackupRecord.database).where(BackupRecord.database != "", BackupRecord.origin != "discovered")
             .distinct())
        return sorted(s.exec(q).all())


def _newest(service: BackupService, name: str) -> tuple[BackupRecord | None, BackupRecord | None]:
    """A database's newest good backup (completed, verification not failed) and newest verified one (reused
    until the catalogue changes: the newest verified one is found by reading every verified backup)."""
    return service.catalogue.memo.get(("dashboard newest", name), lambda: _read_newest(service, name))


def _read_newest(service: BackupService, name: str) -> tuple[BackupRecord | None, BackupRecord | None]:
    with service.db.reading() as s:
        good = s.exec(select(BackupRecord).where(BackupRecord.database == name, BackupRecord.status == Status.COMPLETED,
                                                 or_(col(BackupRecord.verify_ok).is_(None),
                                                     col(BackupRecord.verify_ok).is_(True)))
                      .order_by(col(BackupRecord.created_at).desc()).limit(1)).first()
        verified = s.exec(select(BackupRecord).where(BackupRecord.database == name,
                                                     col(BackupRecord.verified_at).is_not(None))
                          .order_by(col(BackupRecord.verified_at).desc()).limit(1)).first()
    return good, verified


def _drills(service: BackupService) -> dict[str, dict[str, Any]]:
    drills = getattr(service, "drills", None)
    if drills is None:
        return {}
    try:
        return {d["database"]: d for d in drills.latest()}
    except (BackupError, OSError) as exc:
        log.warning("the dashboard could not read the drills: %s", exc)
        return {}


def _alerts(service: BackupService) -> list[dict[str, Any]]:
    try:
        return list(service.alerts.open_alerts())
    except (BackupError, OSError) as exc:
        log.warning("the dashboard could not read the open alerts: %s", exc)
        return []


def _every(interval: timedelta | None) -> str:
    every = interval or UNSCHEDULED
    hours = every.total_seconds() / 3600
    words = "every day" if hours == 24 else f"every {hours:g} hours"
    return f"its schedule ({words})" if interval else f"{words} (no backup schedule)"


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value else None
