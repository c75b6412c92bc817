"""Alert thresholds of one database profile: a value stored for the profile wins, unset = the installation's.

Only thresholds about one database can differ per profile: the maximum backup age (a database without a
backup schedule is overdue after it). Repeat interval and storage thresholds concern alerts and locations
shared by every profile, so they stay installation-wide. A profile's value is a row of the same
`alert_thresholds` table named `<threshold>@<profile>` (the installation's rows are named bare, so neither
reads the other's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlmodel import col, delete, select

from ..audit import Actor
from ..catalogue import as_utc
from ..errors import InvalidInput
from .tables import AlertThreshold
from .thresholds import BY_NAME, _iso, validate

if TYPE_CHECKING:
    from ..service import BackupService

PROFILE_FIELDS = ("maxBackupAgeHours",)


def row_name(name: str, profile: str) -> str:
    """The stored row's name of a profile's threshold."""
    return f"{name}@{profile}"


def in_force(installation: Mapping[str, int], own: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """Pure: each per-profile threshold's value and source: the profile's own when stored ("profile"),
    else the installation's ("installation")."""
    return {n: (own[n], "profile") if n in own else (installation[n], "installation") for n in PROFILE_FIELDS}


def forget(session: Any, profile: str) -> None:
    """Delete a removed profile's own thresholds (inside the caller's write)."""
    names = [row_name(n, profile) for n in PROFILE_FIELDS]
    session.exec(delete(AlertThreshold).where(col(AlertThreshold.name).in_(names)))


class ProfileThresholds:
    """Read and store one profile's thresholds (audited like the installation's)."""

    def __init__(self, service: BackupService) -> None:
        self.s = service

    def _profile(self, profile: str) -> str:
        name = self.s.profiles.checked(profile)  # NotFound for an unknown one
        if name is None:
            raise InvalidInput("the default database uses the installation's thresholds: leave out --database")
        return name

    def _rows(self, profile: str) -> dict[str, AlertThreshold]:
        names = {row_name(n, profile): n for n in PROFILE_FIELDS}
        with self.s.db.reading() as s:
            rows = s.exec(select(AlertThreshold).where(col(AlertThreshold.name).in_(list(names))))
            return {names[r.name]: r for r in rows}

    def _installation(self) -> dict[str, int]:
        now = self.s.alert_thresholds.current()
        return {n: int(getattr(now, BY_NAME[n].attr)) for n in PROFILE_FIELDS}

    def max_backup_age_hours(self, profile: str | None) -> int:
        """The maximum backup age in force for a profile (None: the default database, the installation's)."""
        installation = self._installation()
        if not profile:
            return installation["maxBackupAgeHours"]
        own = {n: r.value for n, r in self._rows(profile).items()}
        return in_force(installation, own)["maxBackupAgeHours"][0]

    def view(self, profile: str) -> dict[str, Any]:
        """Each per-profile threshold: value in force, source (profile / installation), the installation's value."""
        profile = self._profile(profile)
        rows = self._rows(profile)
        installation = self._installation()
        out = {}
        for name, (value, source) in in_force(installation, {n: r.value for n, r in rows.items()}).items():
            f, row = BY_NAME[name], rows.get(name)
            out[name] = {"value": value, "source": source, "installation": installation[name], "unit": f.unit,
                         "min": f.low, "max": f.high, "label": f.label, "database": profile,
                         "updatedBy": row.updated_by if row else None,
                         "updatedAt": _iso(as_utc(row.updated_at)) if row else None}
        return out

    def update(self, actor: Actor, profile: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Store a profile's values (None: the installation's again); refused changes store nothing; audited."""
        target = f"thresholds@{str(profile)[:40]}"
        try:
            profile = self._profile(profile)
            other = [n for n in changes if n not in PROFILE_FIELDS]
            if other:
                raise InvalidInput(f"{', '.join(sorted(map(str, other)))[:120]} is set for the whole installation; "
                                   f"a database profile sets only {', '.join(PROFILE_FIELDS)}")
            checked = validate(changes)
        except InvalidInput as exc:
            self.s.audit.record(actor, "alert-settings", target, "refused", exc.message)
            raise
        before = self.view(profile)
        now = self.s.alert_thresholds.clock()
        with self.s.db.writing() as s:
            for name, value in checked.items():
                key = row_name(name, profile)
                if value is None:
                    s.exec(delete(AlertThreshold).where(col(AlertThreshold.name) == key))  # type: ignore[call-overload]
                    continue
                row = s.get(AlertThreshold, key) or AlertThreshold(name=key, value=value, updated_at=now)
                row.value, row.updated_at, row.updated_by = value, now, actor.name
                s.add(row)
        after = self.view(profile)
        detail = "; ".join(f"{n} {before[n]['value']} -> {after[n]['value']} ({after[n]['source']})" for n in checked)
        self.s.audit.record(actor, "alert-settings", target, "ok", detail)
        return after
