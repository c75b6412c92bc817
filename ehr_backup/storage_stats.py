"""Watching storage: what backups use per location, free space over time, and when a location will fill.

`forecast` is a pure function over samples of free space: a least-squares line through the last
weeks, extended to the day free space runs out. Samples are taken whenever the status is read (at
most one per location per hour) and after each backup, so the history builds up as the app is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from . import storage
from .catalogue import as_utc, utcnow
from .models import BackupRecord as B
from .models import Status, StorageSample
from .profiles import DEFAULT, db_key, split_key

if TYPE_CHECKING:
    from .service import BackupService

WINDOW = timedelta(days=30)  # the history a forecast is drawn from
SAMPLE_EVERY = timedelta(hours=1)
MIN_SPAN = timedelta(hours=12)  # too short a history says nothing about a trend


@dataclass(frozen=True)
class Forecast:
    """The trend of free space: bytes per day (negative: filling) and the date it reaches zero."""

    bytes_per_day: float | None
    full_at: datetime | None

    def days_left(self, now: datetime) -> float | None:
        """Days until full, or None when free space is not shrinking (or not known)."""
        if self.full_at is None:
            return None
        return max(0.0, (self.full_at - now).total_seconds() / 86400)


def forecast(samples: Sequence[tuple[datetime, int]], now: datetime) -> Forecast:
    """Fit free space over time (last WINDOW); when it shrinks, the day the line reaches zero."""
    recent = sorted((t, f) for t, f in samples if now - t <= WINDOW)
    if len(recent) < 2 or recent[-1][0] - recent[0][0] < MIN_SPAN:
        return Forecast(None, None)
    t0 = recent[0][0]
    xs = [(t - t0).total_seconds() / 86400 for t, _ in recent]
    ys = [float(f) for _, f in recent]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return Forecast(None, None)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    if slope >= 0:
        return Forecast(slope, None)
    latest_free = ys[-1]
    days = latest_free / -slope
    return Forecast(slope, recent[-1][0] + timedelta(days=days))


class StorageStatus:
    """Per location and per database facts for the status page, CLI and API."""

    def __init__(self, service: BackupService) -> None:
        self.s = service

    def _totals(self) -> dict[Path, tuple[int, int]]:
        """Per folder: the number of completed backups and their bytes (one GROUP BY, whatever their number)."""
        with self.s.db.reading() as session:
            rows = session.execute(sa_select(B.directory, func.count(), func.coalesce(func.sum(B.size), 0))
                                   .where(B.status == Status.COMPLETED).group_by(B.directory)).all()
        out: dict[Path, tuple[int, int]] = {}
        for directory, count, used in rows:
            before = out.get(Path(directory), (0, 0))
            out[Path(directory)] = (before[0] + int(count), before[1] + int(used))
        return out

    def _history(self, points: int | None) -> dict[str, tuple[int, list[Any]]]:
        """Per database: its number of completed backups and their rows, oldest first (about `points` of
        them spread over the whole span, the newest always among them, chosen in SQL; None: all)."""
        # per database of each profile: two servers' databases of one name are two histories
        n = func.row_number().over(partition_by=(B.database, B.profile), order_by=(B.created_at, B.id)).label("n")
        total = func.count().over(partition_by=(B.database, B.profile)).label("total")
        inner = (sa_select(B.database, B.profile, B.created_at, B.size, B.dump_bytes, B.duration_s, B.location, n,
                           total)
                 .where(B.status == Status.COMPLETED).subquery())
        q = sa_select(inner)
        if points:
            step = (inner.c.total + points - 1) // points
            q = q.where(or_((inner.c.n - 1) % step == 0, inner.c.n == inner.c.total))
        with self.s.db.reading() as session:
            rows = session.execute(q.order_by(inner.c.database, inner.c.profile, inner.c.n)).all()
        out: dict[str, tuple[int, list[Any]]] = {}
        for r in rows:
            out.setdefault(db_key(r.database or "?", r.profile), (int(r.total), []))[1].append(r)
        return out

    def sample(self, now: datetime | None = None, *, force: bool = False,
               totals: dict[Path, tuple[int, int]] | None = None) -> None:
        """Record free and used space of every location (at most hourly unless forced)."""
        now = now or utcnow()
        totals = self._totals() if totals is None else totals
        with self.s.db.writing() as session:
            for key, directory in self.s._scan_dirs():
                name = key if key != "custom" else f"custom:{directory}"
                last = session.exec(select(StorageSample).where(StorageSample.location == name)
                                    .order_by(col(StorageSample.ts).desc()).limit(1)).first()
                if not force and last is not None and now - (as_utc(last.ts) or now) < SAMPLE_EVERY:
                    continue
                count, used = totals.get(directory, (0, 0))
                session.add(StorageSample(location=name, path=str(directory), ts=now,
                                          free_bytes=storage.free_bytes(directory), used_bytes=used, backups=count))

    def status(self, now: datetime | None = None, points: int | None = None) -> dict[str, Any]:
        """Locations (used, free, count, trend, fill date, warnings) and databases (sizes over time: every
        backup, or about `points` of them spread over the whole span, for a chart)."""
        now = now or utcnow()
        totals = self._totals()
        self.sample(now, totals=totals)
        limits = self.s.alert_thresholds.current()  # stored on the Alerts page, else the environment's
        warn_bytes = limits.min_free_mb * 1024 * 1024
        with self.s.db.reading() as session:
            samples = session.exec(select(StorageSample).where(StorageSample.ts >= now - WINDOW)
                                   .order_by(col(StorageSample.ts))).all()
        locations = []
        for key, directory in self.s._scan_dirs():
            name = key if key != "custom" else f"custom:{directory}"
            count, used = totals.get(directory, (0, 0))
            history = [(as_utc(x.ts) or now, x.free_bytes) for x in samples
                       if x.location == name and x.free_bytes is not None]
            fc = forecast([(t, f) for t, f in history if f is not None], now)
            free = storage.free_bytes(directory)
            days = fc.days_left(now)
            warnings = []
            if free is not None and free < warn_bytes:
                warnings.append(f"less than {limits.min_free_mb} MB free")
            if days is not None and days < limits.fill_warn_days:
                warnings.append(f"forecast to fill in {days:.0f} days")
            locations.append({
                "key": key, "path": str(directory), "usedBytes": used,
                "freeBytes": free, "backups": count, "bytesPerDay": fc.bytes_per_day,
                "fullAt": _iso(fc.full_at), "daysToFull": None if days is None else round(days, 1),
                "warnings": warnings,
                "history": [{"at": _iso(t), "freeBytes": f} for t, f in history]})
        def point(r: Any) -> dict[str, Any]:
            return {"at": _iso(as_utc(r.created_at)), "size": r.size, "dumpBytes": r.dump_bytes,
                    "seconds": r.duration_s, "location": r.location}

        return {"at": _iso(now), "locations": locations,
                "databases": [{"database": db, "profile": split_key(db)[1] or DEFAULT, "backups": count,
                               "latest": point(items[-1]),
                               "history": [point(r) for r in items]}
                              for db, (count, items) in sorted(self._history(points).items())]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None

