"""Grandfather-father-son rotation as a pure function: backups + policy + now -> keep/forget with reasons.

The bucket rules are restic's `forget --keep-daily/--keep-weekly/--keep-monthly/--keep-yearly`
(internal/restic/snapshot_policy.go, ApplyPolicy): newest first, for each kind of bucket the newest
backup of each of the last N calendar days / ISO weeks / months / years that have a backup is kept, and
while a kind still has counts left when the oldest backup is reached, the oldest is kept too (the longest
history the counts allow). `keep_within_days` keeps every backup made within N days of the group's newest
one. A backup kept by any rule is kept.

Only backups proven intact count (completed, file present, verified good): a failed, missing, unverified
or corrupt backup never takes a bucket from a good one. On top of the policy, safety rules that no policy
overrides: pinned backups stay; the newest verified-good backup of each group stays; nothing of a
database is deleted while its latest backup failed, is missing or failed verification; files the
catalogue did not make stay unless asked; unverified or corrupt files stay (rotation deletes only
redundant proven copies and the records of failed runs); safety backups follow their own age limit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .errors import InvalidInput

MAX_COUNT = 10_000
MAX_WITHIN_DAYS = 36_500
BUCKETS = ("daily", "weekly", "monthly", "yearly")
# every reason a backup can be kept for, in the order they are listed
KEEP_REASONS = ("daily", "weekly", "monthly", "yearly", "within", "newest-good", "pinned", "safety-age",
                "not-ours", "unverified", "verify-failed", "missing", "running", "hold")


@dataclass(frozen=True)
class RetentionPolicy:
    """How many daily, weekly, monthly and yearly backups to keep, and optionally all of the last N days."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    yearly: int = 5
    keep_within_days: int | None = None
    timezone: str | None = None  # IANA name the calendar buckets are counted in; None: the server's

    def __post_init__(self) -> None:
        for name in BUCKETS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
                raise InvalidInput(f"keep-{name} must be a whole number from 0 to {MAX_COUNT}")
        within = self.keep_within_days
        if within is not None and (isinstance(within, bool) or not isinstance(within, int)
                                   or not 1 <= within <= MAX_WITHIN_DAYS):
            raise InvalidInput(f"keep-within-days must be a whole number from 1 to {MAX_WITHIN_DAYS}")
        if not any(getattr(self, name) for name in BUCKETS) and within is None:
            raise InvalidInput("this policy keeps nothing: give at least one of keep-daily, keep-weekly, "
                               "keep-monthly, keep-yearly or keep-within-days")
        if self.timezone is not None:
            zone(self.timezone)

    def describe(self) -> str:
        """The policy in words, e.g. `7 daily, 4 weekly, 12 monthly, 5 yearly`."""
        parts = [f"{getattr(self, name)} {name}" for name in BUCKETS if getattr(self, name)]
        if self.keep_within_days:
            parts.append(f"all within {self.keep_within_days} days")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"daily": self.daily, "weekly": self.weekly, "monthly": self.monthly, "yearly": self.yearly,
                "keepWithinDays": self.keep_within_days, "timezone": self.timezone}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetentionPolicy:
        """The policy from its JSON form (missing keys take the defaults); unknown keys are refused."""
        names = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "yearly": "yearly",
                 "keepWithinDays": "keep_within_days", "timezone": "timezone"}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InvalidInput(f"unknown policy field {unknown[0][:40]!r}: use {', '.join(names)}")
        return cls(**{names[k]: v for k, v in data.items()})


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name, or a clear InvalidInput."""
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise InvalidInput("a time zone must be an IANA name such as Europe/Berlin")
    if name not in _iana_names():  # "localtime", "posixrules" and paths are files, not IANA zones
        raise InvalidInput(f"unknown time zone {name[:64]!r}: use an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(f"unknown time zone {name[:64]!r}: use an IANA name such as Europe/Berlin") from None


@dataclass(frozen=True)
class Candidate:
    """What the rules need to know about one backup."""

    id: str
    database: str
    place: str  # where the file lives (its directory): rotation applies per location
    created_at: datetime  # timezone-aware
    status: str  # completed | failed | cancelled | running | discovered
    ours: bool = True  # made by this catalogue (not a file found on disk)
    exists: bool = True  # the file is present
    verify_ok: bool | None = True
    pinned: bool = False
    kind: str = "manual"  # manual | scheduled | safety
    schedule: str | None = None
    location: str = ""


@dataclass(frozen=True)
class Decision:
    """What happens to one backup, and why."""

    backup: Candidate
    keep: bool
    reasons: tuple[str, ...]  # the rules that keep it, or the one reason it goes

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: {id, reasons} for a kept backup, {id, reason} for one that goes."""
        b = self.backup
        facts = {"database": b.database, "location": b.location, "createdAt": _iso(b.created_at)}
        if self.keep:
            return {"id": b.id, "reasons": list(self.reasons), **facts}
        return {"id": b.id, "reason": self.reasons[0], **facts}


@dataclass
class Plan:
    """Every backup planned, newest first, and the databases held back."""

    keep: list[Decision] = field(default_factory=list)
    forget: list[Decision] = field(default_factory=list)
    holds: dict[str, str] = field(default_factory=dict)  # database -> why nothing of it is deleted

    def reasons(self) -> dict[str, list[str]]:
        """For each backup id, the rules that keep it (empty: it would go)."""
        out = {d.backup.id: list(d.reasons) for d in self.keep}
        out.update({d.backup.id: [] for d in self.forget})
        return out

    def find(self, backup_id: str) -> Decision | None:
        """The decision about one backup."""
        return next((d for d in (*self.keep, *self.forget) if d.backup.id == backup_id), None)

    def only(self, wanted: Callable[[Candidate], bool]) -> Plan:
        """The part of the plan about the backups `wanted` selects."""
        return Plan([d for d in self.keep if wanted(d.backup)], [d for d in self.forget if wanted(d.backup)],
                    {db: why for db, why in self.holds.items()
                     if any(wanted(d.backup) and d.backup.database == db for d in (*self.keep, *self.forget))})

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"keep": [d.as_dict() for d in self.keep], "forget": [d.as_dict() for d in self.forget],
                "holds": [{"database": db, "reason": why} for db, why in sorted(self.holds.items())]}


def plan(backups: Iterable[Candidate], policy: RetentionPolicy, now: datetime, *, tz: tzinfo,
         safety_keep_days: int, include_discovered: bool = False,
         schedule_policies: Mapping[str, RetentionPolicy] | None = None) -> Plan:
    """Decide for every backup whether it is kept (with every rule that keeps it) or goes (with why).

    Backups are grouped per database and location, and a schedule's backups form groups of their own
    (under their schedule's policy in `schedule_policies`, else `policy`).
    """
    items = sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)
    holds = _holds(items)
    groups: dict[tuple[str, str, str], list[Candidate]] = {}
    for b in items:
        groups.setdefault((b.database, b.place, b.schedule or ""), []).append(b)
    decided: dict[str, Decision] = {}
    for (database, _place, schedule), members in groups.items():
        rules = (schedule_policies or {}).get(schedule, policy) if schedule else policy
        for d in _group(members, rules, now, tz, safety_keep_days, include_discovered, holds.get(database)):
            decided[d.backup.id] = d
    result = Plan(holds=holds)
    for b in items:
        d = decided[b.id]
        (result.keep if d.keep else result.forget).append(d)
    return result


def _counted(b: Candidate, include_discovered: bool) -> bool:
    """Whether a backup is proven good: only these fill the policy's buckets."""
    return (b.status == "completed" and b.exists and b.verify_ok is True
            and (b.ours or include_discovered))


def _holds(items: Sequence[Candidate]) -> dict[str, str]:
    """Databases whose latest finished backup failed, is missing or failed verification."""
    holds: dict[str, str] = {}
    seen: set[str] = set()
    for b in items:  # newest first
        if b.database in seen or not b.ours or b.kind == "safety" or b.status in ("running", "cancelled"):
            continue
        seen.add(b.database)
        if b.status == "failed":
            holds[b.database] = f"the latest backup of {b.database} ({b.id}) failed"
        elif b.status == "completed" and not b.exists:
            holds[b.database] = f"the latest backup of {b.database} ({b.id}) is missing from its location"
        elif b.status == "completed" and b.verify_ok is False:
            holds[b.database] = f"the latest backup of {b.database} ({b.id}) failed verification"
    return holds


def _group(members: list[Candidate], policy: RetentionPolicy, now: datetime, tz: tzinfo,
           safety_keep_days: int, include_discovered: bool, hold: str | None) -> list[Decision]:
    """Decide for one group (newest first)."""
    counted = [b for b in members if _counted(b, include_discovered) and b.kind != "safety"]
    kept = _buckets(counted, policy, tz)
    for b in _within(counted, policy, now, tz):
        kept[b.id].append("within")
    newest_good = next((b.id for b in members if _counted(b, include_discovered)), None)
    out = []
    for b in members:
        reasons, gone = _rules(b, kept.get(b.id, []), now, safety_keep_days, include_discovered, policy)
        if b.id == newest_good:
            reasons.append("newest-good")
        if b.pinned:
            reasons.append("pinned")
        if not reasons and hold:
            reasons.append("hold")
        reasons.sort(key=KEEP_REASONS.index)
        out.append(Decision(b, True, tuple(reasons)) if reasons else Decision(b, False, (gone,)))
    return out


def _rules(b: Candidate, by_policy: list[str], now: datetime, safety_keep_days: int, include_discovered: bool,
           policy: RetentionPolicy) -> tuple[list[str], str]:
    """The rules that keep one backup apart from newest-good and pinned, and why it goes if none does."""
    if b.status == "running":
        return ["running"], ""
    if not b.ours and not include_discovered:
        return ["not-ours"], ""
    if b.status in ("failed", "cancelled"):
        return [], f"record of a {b.status} backup (no file was kept)"
    if not b.exists:
        return ["missing"], ""  # the file may come back (an unmounted disk): keep the record
    if b.status != "completed" or b.verify_ok is None:
        return ["unverified"], ""  # not proven intact yet: it neither counts nor goes
    if b.verify_ok is False:
        return ["verify-failed"], ""  # kept for inspection; a wrong key also fails verification
    if b.kind == "safety":
        if now - b.created_at < timedelta(days=safety_keep_days):
            return ["safety-age"], ""
        return [], f"safety backup older than {safety_keep_days} days"
    return list(by_policy), f"not kept by the policy ({policy.describe()})"


def _buckets(counted: list[Candidate], policy: RetentionPolicy, tz: tzinfo) -> dict[str, list[str]]:
    """restic's bucket rules over the counted backups (newest first): id -> bucket kinds that keep it."""
    kept: dict[str, list[str]] = {b.id: [] for b in counted}
    days = [b.created_at.astimezone(tz).date() for b in counted]
    keys: dict[str, list[Any]] = {"daily": days, "weekly": [d.isocalendar()[:2] for d in days],
                                  "monthly": [(d.year, d.month) for d in days], "yearly": [d.year for d in days]}
    for kind in BUCKETS:
        left = getattr(policy, kind)
        last: Any = None
        for i, (b, value) in enumerate(zip(counted, keys[kind], strict=True)):
            if left <= 0:
                break
            if value != last or i == len(counted) - 1:  # a new bucket, or the oldest while counts are left
                kept[b.id].append(kind)
                last = value
                left -= 1
    return kept


def _within(counted: list[Candidate], policy: RetentionPolicy, now: datetime, tz: tzinfo) -> list[Candidate]:
    """The counted backups made within keep_within_days of the newest one (that is not in the future)."""
    if not policy.keep_within_days:
        return []
    past = [b.created_at for b in counted if b.created_at <= now]
    if not past:
        return []
    # calendar days in the policy's zone (as restic's AddDate): a DST change does not move the edge an hour
    edge = max(past).astimezone(tz) - timedelta(days=policy.keep_within_days)
    return [b for b in counted if b.created_at > edge]


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
