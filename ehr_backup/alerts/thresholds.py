"""The thresholds that decide when alerts and storage warnings fire: the environment gives the defaults,
a value an administrator stored (page, CLI, REST) wins.

`effective` and `validate` are pure; `Thresholds` (the store) reads and writes the `alert_thresholds`
table and audits every change. Everything that compares against a threshold asks `current()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import col, delete, select

from ..audit import Actor
from ..catalogue import as_utc, utcnow
from ..config import Settings
from ..errors import InvalidInput
from .tables import AlertThreshold

if TYPE_CHECKING:
    from ..db import Database


@dataclass(frozen=True)
class ThresholdField:
    """One threshold: its API name, Settings attribute, variable, bounds, unit and meaning."""

    name: str
    attr: str
    variable: str
    low: int
    high: int
    unit: str
    label: str


FIELDS = (
    ThresholdField("repeatHours", "alert_repeat_hours", "EHR_BACKUP_ALERT_REPEAT_HOURS", 1, 24 * 365, "hours",
           "send an open alert again after"),
    ThresholdField("maxBackupAgeHours", "max_backup_age_hours", "EHR_BACKUP_MAX_BACKUP_AGE_HOURS", 0, 24 * 3650, "hours",
           "without a backup schedule, a backup is overdue after (0: off)"),
    ThresholdField("minFreeMb", "min_free_mb", "EHR_BACKUP_MIN_FREE_MB", 0, 10**9, "MB",
           "a location is low below this much free space (0: off)"),
    ThresholdField("fillWarnDays", "fill_warn_days", "EHR_BACKUP_FILL_WARN_DAYS", 0, 3650, "days",
           "warn when a location is forecast to fill within (0: off)"),
)
BY_NAME = {f.name: f for f in FIELDS}
DEFAULTS = {f.name: next(x.default for x in fields(Settings) if x.name == f.attr) for f in FIELDS}


@dataclass(frozen=True)
class Effective:
    """The thresholds in force and where each comes from (`stored`, `environment` or `default`)."""

    alert_repeat_hours: int
    max_backup_age_hours: int
    min_free_mb: int
    fill_warn_days: int
    sources: Mapping[str, str]


def effective(settings: Settings, stored: Mapping[str, int]) -> Effective:
    """Pure: a stored value wins over the environment's (which is the built-in default when unset)."""
    values, sources = {}, {}
    for f in FIELDS:
        env_value = getattr(settings, f.attr)
        if f.name in stored:
            values[f.attr], sources[f.name] = stored[f.name], "stored"
        else:
            values[f.attr] = env_value
            # Settings does not keep whether the variable was set: the built-in value reads as the default
            sources[f.name] = "default" if env_value == DEFAULTS[f.name] else "environment"
    return Effective(sources=sources, **values)


def validate(changes: Mapping[str, Any]) -> dict[str, int | None]:
    """Pure: known names with whole numbers in range, or None (back to the environment's value)."""
    if not changes:
        raise InvalidInput(f"give at least one of {', '.join(BY_NAME)}")
    out: dict[str, int | None] = {}
    for name, value in changes.items():
        f = BY_NAME.get(name)
        if f is None:
            raise InvalidInput(f"unknown threshold {str(name)[:40]!r}: one of {', '.join(BY_NAME)}")
        if value is None:
            out[name] = None
            continue
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not f.low <= value <= f.high:
            raise InvalidInput(f"{name} is a whole number of {f.unit} from {f.low} to {f.high}")
        out[name] = value
    return out


class Thresholds:
    """The stored thresholds of one installation, merged with the environment's."""

    def __init__(self, db: Database, settings: Settings, audit: Any, clock: Callable[[], datetime] = utcnow) -> None:
        self.db, self.settings, self.audit, self.clock = db, settings, audit, clock

    def stored(self) -> dict[str, AlertThreshold]:
        """The rows an administrator stored, by name."""
        with self.db.reading() as s:
            return {r.name: r for r in s.exec(select(AlertThreshold)) if r.name in BY_NAME}

    def current(self) -> Effective:
        """The thresholds in force now."""
        return effective(self.settings, {n: r.value for n, r in self.stored().items()})

    def view(self) -> dict[str, Any]:
        """Each threshold: value, source, the environment's value, its variable, who stored it and when."""
        rows = self.stored()
        now = self.current()
        out = {}
        for f in FIELDS:
            row = rows.get(f.name)
            out[f.name] = {"value": getattr(now, f.attr), "source": now.sources[f.name],
                           "environment": getattr(self.settings, f.attr), "variable": f.variable, "unit": f.unit,
                           "min": f.low, "max": f.high, "label": f.label,
                           "updatedBy": row.updated_by if row else None,
                           "updatedAt": _iso(as_utc(row.updated_at)) if row else None}
        return out

    def update(self, actor: Actor, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Store values (None: use the environment's again); refused changes store nothing; all audited."""
        try:
            checked = validate(changes)
        except InvalidInput as exc:
            self.audit.record(actor, "alert-settings", "thresholds", "refused", exc.message)
            raise
        before = self.current()
        now = self.clock()
        with self.db.writing() as s:
            for name, value in checked.items():
                if value is None:
                    s.exec(delete(AlertThreshold).where(col(AlertThreshold.name) == name))  # type: ignore[call-overload]
                    continue
                row = s.get(AlertThreshold, name) or AlertThreshold(name=name, value=value, updated_at=now)
                row.value, row.updated_at, row.updated_by = value, now, actor.name
                s.add(row)
        after = self.current()
        detail = "; ".join(f"{n} {getattr(before, BY_NAME[n].attr)} -> {getattr(after, BY_NAME[n].attr)}"
                           f" ({after.sources[n]})" for n in checked)
        self.audit.record(actor, "alert-settings", "thresholds", "ok", detail)
        return self.view()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None
