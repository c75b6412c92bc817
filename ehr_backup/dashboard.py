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
from .pg import ConnInfo
from .profiles import DEFAULT, db_key

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
    """One card per database (of each database profile): freshness, last good backup, last verification and
    drill, alerts, next run."""
    now = now or utcnow()
    targets = _databases(service)  # (database, profile); profile None: the configured database's
    try:
        configured = service.connection().dbname
    except BackupError:
        configured = None
    if configured and (configured, None) not in targets:
        targets.insert(0, (configured, None))
    for p in service.profiles.all():  # a profile without backups yet shows as one never backed up
        try:
            key = (ConnInfo.parse(p.url).dbname, p.name)
        except BackupError:
            continue
        if key not in targets:
            targets.append(key)
    schedules = [s for s in service.schedule_list() if s["enabled"] and s["kind"] == "backup"]
    drills = _drills(service)
    alerts = _alerts(service)
    cards = []
    for name, profile in targets:
        key = db_key(name, profile)
        # each database profile's own schedules; the default profile's back up the configured database
        own = [s for s in schedules if s.get("database", DEFAULT) == (profile or DEFAULT)]
        applies = profile is not None or name == configured
        interval = expected_interval([(s["cron"], s["timezone"]) for s in own], now) if applies else None
        next_run = min((s["nextRuns"][0] for s in own if s["nextRuns"]), default=None) if applies else None
        good, verified = _newest(service, name, profile)
        last_good = as_utc(good.finished_at or good.created_at) if good else None
        cards.append({
            "database": key, "profile": profile or DEFAULT, "status": freshness(last_good, interval, now),
            "measuredAgainst": _every(interval), "lastGoodAt": _iso(last_good),
            "lastGoodId": good.id if good else None,
            "ageSeconds": round((now - last_good).total_seconds()) if last_good else None,
            "lastVerification": {"at": _iso(verified.verified_at), "ok": verified.verify_ok,
                                 "backupId": verified.id} if verified else None,
            "lastDrill": drills.get(key),
            "alerts": [a for a in alerts if a.get("database") in (key, None)],
            "nextRun": next_run})
    return cards


def _databases(service: BackupService) -> list[tuple[str, str | None]]:
    """The databases (and their profiles) with backups made here (one indexed query)."""
    with service.db.reading() as s:
        q = (select(BackupRecord.database, BackupRecord.profile)
             .where(BackupRecord.database != "", BackupRecord.origin != "discovered").distinct())
        rows = {(d, p if p and p != DEFAULT else None) for d, p in s.exec(q).all()}
    return sorted(rows, key=lambda r: (r[0], r[1] or ""))


def _newest(service: BackupService, name: str,
            profile: str | None = None) -> tuple[BackupRecord | None, BackupRecord | None]:
    """A database's newest good backup (completed, verification not failed) and newest verified one."""
    mine = (col(BackupRecord.profile).is_(None) if profile is None else BackupRecord.profile == profile)
    with service.db.reading() as s:
        good = s.exec(select(BackupRecord).where(BackupRecord.database == name, mine,
                                                 BackupRecord.status == Status.COMPLETED,
                                                 or_(col(BackupRecord.verify_ok).is_(None),
                                                     col(BackupRecord.verify_ok).is_(True)))
                      .order_by(col(BackupRecord.created_at).desc()).limit(1)).first()
        verified = s.exec(select(BackupRecord).where(BackupRecord.database == name, mine,
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
