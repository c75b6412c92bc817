"""Schedules as admins define them: validated, stored in the metadata database, audited, shown with their
reading in words, next runs and last outcome."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select

from . import cron
from .audit import Actor
from .catalogue import as_utc, utcnow
from .errors import BackupError, InvalidInput, NotFound
from .models import Schedule, ScheduleRun
from .prune import local_zone
from .retention import RetentionPolicy, zone
from .text import clean_text

if TYPE_CHECKING:
    from .service import BackupService

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KINDS = ("backup", "verify", "drill")
PLACEHOLDERS = ("date", "time", "datetime", "weekday", "schedule", "database")
MAX_TEMPLATE = 200
MAX_RETRIES = 10
KEEP_RUNS = 500  # runs kept per schedule (a year and more of nightly runs); older ones are forgotten
RETRY_DELAY = (10, 86_400)
FIELDS = ("kind", "cron", "timezone", "location", "custom_path", "compression", "description", "policy",
          "enabled", "retries", "retry_delay_s", "database")


def server_zone_name() -> str:
    """The server's IANA time zone name (UTC when it has none)."""
    key = getattr(local_zone(), "key", None)
    try:
        return zone(key).key if key and key != "localtime" else "UTC"
    except InvalidInput:
        return "UTC"


def check_name(name: Any) -> str:
    """A schedule name: letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 64."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput("a schedule name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
                           "or digit (e.g. nightly)")
    return name


def check_template(template: Any) -> str:
    """A description template: text with {date} {time} {datetime} {weekday} {schedule} {database}."""
    if not isinstance(template, str):
        raise InvalidInput("the description template is text, e.g. `Nightly {date}`")
    text = clean_text(template, MAX_TEMPLATE, "the description template")
    if not text:
        raise InvalidInput("give a description template, e.g. `Nightly {date}`")
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise InvalidInput(f"the description template has an unmatched brace ({exc}); write {{{{ or }}}} for "
                           "a literal brace") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            shown = "{" + field + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            raise InvalidInput(f"unknown placeholder {shown[:40]!r} in the description template: use "
                               + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
    return text


def render(template: str, when: datetime, schedule: str, database: str) -> str:
    """The description of a run due at `when` (aware, in the schedule's zone)."""
    return check_template(template).format(
        date=when.strftime("%Y-%m-%d"), time=when.strftime("%H:%M"), datetime=when.strftime("%Y-%m-%d %H:%M"),
        weekday=when.strftime("%A"), schedule=schedule, database=database)


def check_policy(policy: Any, timezone: str) -> str | None:
    """The JSON of a rotation policy (a mapping, a RetentionPolicy, or None for no rotation)."""
    if policy is None:
        return None
    if isinstance(policy, RetentionPolicy):
        data = policy.as_dict()
    elif isinstance(policy, Mapping):
        data = dict(policy)
    else:
        raise InvalidInput("the rotation policy is an object such as {\"daily\": 7, \"weekly\": 4}")
    data["timezone"] = timezone  # calendar days are the schedule's days
    return json.dumps(RetentionPolicy.from_dict(data).as_dict())


def policy_of(schedule: Schedule) -> RetentionPolicy | None:
    """The schedule's rotation policy, or None."""
    return RetentionPolicy.from_dict(json.loads(schedule.policy)) if schedule.policy else None


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}")
    return value


class Schedules:
    """Create, change, list and remove schedules."""

    def __init__(self, service: BackupService) -> None:
        self.service = service
        self.db = service.db
        self.clock = utcnow  # tests move it by hand, with the scheduler's

    # ----- validation ----------------------------------------------------------------------------------
    def _validated(self, fields: Mapping[str, Any], current: Schedule | None) -> dict[str, Any]:
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise InvalidInput(f"unknown schedule field {unknown[0][:40]!r}")
        merged: dict[str, Any] = {k: getattr(current, k) for k in FIELDS} if current else {
            "kind": "backup", "location": "default", "custom_path": None, "compression": None,
            "description": "Scheduled {date}", "policy": RetentionPolicy().as_dict(), "enabled": True,
            "retries": 2, "retry_delay_s": 600, "timezone": None, "cron": None, "database": None}
        if current is not None and current.policy:
            merged["policy"] = json.loads(current.policy)
        merged.update(fields)
        out: dict[str, Any] = {}
        out["kind"] = merged["kind"]
        if out["kind"] not in KINDS:
            raise InvalidInput("a schedule's kind is backup, verify or drill")
        if merged["cron"] is None:
            raise InvalidInput("give a cron expression, e.g. `30 2 * * *` for 02:30 every day")
        out["cron"] = cron.normalize(merged["cron"])
        tz = merged["timezone"] or server_zone_name()
        zone(tz)
        out["timezone"] = tz
        out["description"] = check_template(merged["description"])
        out["enabled"] = bool(merged["enabled"])
        out["retries"] = _int(merged["retries"], "retries", 0, MAX_RETRIES)
        out["retry_delay_s"] = _int(merged["retry_delay_s"], "the retry delay (seconds)", *RETRY_DELAY)
        compression = merged["compression"] or None
        if compression not in (None, "gzip", "zstd"):
            raise InvalidInput("compression must be gzip or zstd")
        out["compression"] = compression
        location = merged["location"] or "default"
        custom = merged["custom_path"] or None
        if location != "custom":
            custom = None
        if out["kind"] == "backup":
            self.service.resolve_location(location, custom)  # refuses unknown keys and unsafe custom paths
        out["location"], out["custom_path"] = location, custom
        # the database profile it backs up (ehr_backup/profiles.py); None: DATABASE_URL's
        out["database"] = self.service.profiles.checked(merged.get("database")) if out["kind"] == "backup" else None
        if out["kind"] != "backup" and fields.get("policy") is not None:
            raise InvalidInput(f"rotation applies to backup schedules; a {out['kind']} schedule makes no backups")
        out["policy"] = check_policy(merged["policy"], tz) if out["kind"] == "backup" else None
        return out

    # ----- reading ---------------------------------------------------------------------------------------
    def all(self) -> list[Schedule]:
        """Every schedule, by name."""
        with self.db.reading() as s:
            return list(s.exec(select(Schedule).order_by(col(Schedule.name))))

    def get(self, name: str) -> Schedule:
        """The schedule of that name, or NotFound."""
        check_name(name)
        with self.db.reading() as s:
            found = s.exec(select(Schedule).where(Schedule.name == name)).first()
        if found is None:
            raise NotFound(f"no schedule named {name!r}")
        return found

    def runs(self, name: str, limit: int = 20) -> list[ScheduleRun]:
        """The schedule's newest runs, newest first."""
        with self.db.reading() as s:
            return list(s.exec(select(ScheduleRun).where(ScheduleRun.schedule == name)
                               .order_by(col(ScheduleRun.id).desc()).limit(limit)))

    def _newest(self, name: str, statuses: tuple[str, ...]) -> ScheduleRun | None:
        with self.db.reading() as s:
            return s.exec(select(ScheduleRun).where(ScheduleRun.schedule == name, col(ScheduleRun.status).in_(statuses))
                          .order_by(col(ScheduleRun.id).desc()).limit(1)).first()

    def preview(self, expression: str, timezone: str | None = None, description: str | None = None,
                now: datetime | None = None) -> dict[str, Any]:
        """What a schedule being typed would do: its reading, the next five runs, an example description."""
        tz = timezone or server_zone_name()
        runs = cron.next_runs(expression, tz, now or self.clock())
        out: dict[str, Any] = {"cron": cron.normalize(expression), "reading": cron.describe(expression),
                               "timezone": tz, "nextRuns": [r.isoformat() for r in runs]}
        if description is not None:
            out["exampleDescription"] = render(description, runs[0], "name", self._database_name())
        return out

    def _database_name(self) -> str:
        try:
            return self.service.connection().dbname
        except BackupError:
            return "database"

    def view(self, sched: Schedule, now: datetime | None = None) -> dict[str, Any]:
        """The public JSON form: settings, reading, next runs, last outcome."""
        now = now or self.clock()
        last = self._newest(sched.name, ("succeeded", "failed", "skipped"))
        last_ok = self._newest(sched.name, ("succeeded",))
        failing = self._newest(sched.name, ("succeeded", "failed"))  # skipped runs do not end a failure
        waiting = self._newest(sched.name, ("waiting",))
        running = self._newest(sched.name, ("running",))
        try:
            nexts = cron.next_runs(sched.cron, sched.timezone, max(now, as_utc(sched.fired_until) or now))
        except BackupError:  # stored by an older version that accepted it: shown, never run
            nexts = []
        return {"name": sched.name, "kind": sched.kind, "cron": sched.cron, "reading": _reading(sched.cron),
                "timezone": sched.timezone, "location": sched.location, "customPath": sched.custom_path,
                "compression": sched.compression, "description": sched.description,
                "policy": json.loads(sched.policy) if sched.policy else None, "enabled": sched.enabled,
                "retries": sched.retries, "retryDelaySeconds": sched.retry_delay_s,
                "createdAt": _iso(sched.created_at), "createdBy": sched.created_by,
                "updatedAt": _iso(sched.updated_at),
                "nextRuns": [r.isoformat() for r in nexts] if sched.enabled else [],
                "lastRun": run_view(last) if last else None,
                "lastSuccessAt": _iso(last_ok.finished_at) if last_ok else None,
                "failing": bool(failing and failing.status == "failed"),
                "failure": failing.message if failing and failing.status == "failed" else None,
                "retryAt": _iso(waiting.retry_at) if waiting else None,
                "running": run_view(running) if running else None, "database": sched.database or "default"}

    # ----- changing ----------------------------------------------------------------------------------------
    def create(self, actor: Actor, name: str, **fields: Any) -> Schedule:
        """Add a schedule; its first run is the first fire time from now on."""
        try:
            check_name(name)
            values = self._validated(fields, None)
        except BackupError as exc:
            self.service.audit.record(actor, "schedule-create", str(name)[:64], "refused", exc.message)
            raise
        now = self.clock()
        try:
            with self.db.writing() as s:
                sched = Schedule(name=name, created_at=now, updated_at=now, created_by=actor.name, fired_until=now,
                                 **values)
                s.add(sched)
        except IntegrityError:
            self.service.audit.record(actor, "schedule-create", name, "refused", "the name is taken")
            raise InvalidInput(f"a schedule named {name!r} already exists; choose another name or edit it") from None
        self.service.audit.record(actor, "schedule-create", name, "ok", _summary(sched))
        return sched

    def update(self, actor: Actor, name: str, **fields: Any) -> Schedule:
        """Change a schedule; a new time or time zone counts from now (runs it would have had are not made up)."""
        current = self.get(name)
        try:
            values = self._validated(fields, current)
        except BackupError as exc:
            self.service.audit.record(actor, "schedule-update", name, "refused", exc.message)
            raise
        now = self.clock()
        with self.db.writing() as s:
            sched = s.exec(select(Schedule).where(Schedule.name == name)).first()
            if sched is None:
                raise NotFound(f"no schedule named {name!r}")
            restart = (values["cron"], values["timezone"]) != (sched.cron, sched.timezone) or (
                values["enabled"] and not sched.enabled)  # re-enabled: what it missed while off is not made up
            for key, value in values.items():
                setattr(sched, key, value)
            sched.updated_at = now
            if restart:
                sched.fired_until = max(now, as_utc(sched.fired_until) or now)
            s.add(sched)
        changed = ", ".join(sorted(fields)) or "nothing"
        self.service.audit.record(actor, "schedule-update", name, "ok", f"changed {changed}: {_summary(sched)}")
        return sched

    def remove(self, actor: Actor, name: str) -> None:
        """Delete a schedule (its backups stay; its run history goes)."""
        self.get(name)
        with self.db.writing() as s:
            sched = s.exec(select(Schedule).where(Schedule.name == name)).first()
            if sched is not None:
                s.delete(sched)
            # a schedule made later under this name starts with no history (a run in flight finds its row gone)
            s.exec(delete(ScheduleRun).where(col(ScheduleRun.schedule) == name))
        self.service.audit.record(actor, "schedule-remove", name, "ok")


def _reading(expression: str) -> str:
    try:
        return cron.describe(expression)
    except BackupError as exc:
        return f"never runs: {exc.message}"


def trim_runs(s: Any, name: str, keep: int = KEEP_RUNS) -> None:
    """Forget all but a schedule's newest `keep` runs (in session `s`); the audit log keeps every one."""
    old = s.exec(select(ScheduleRun.id).where(ScheduleRun.schedule == name)
                 .order_by(col(ScheduleRun.id).desc()).offset(keep)).all()
    if old:
        s.exec(delete(ScheduleRun).where(col(ScheduleRun.id).in_(old)))


def run_view(run: ScheduleRun) -> dict[str, Any]:
    """The JSON form of one run."""
    return {"dueAt": _iso(run.due_at), "attempt": run.attempt, "trigger": run.trigger, "status": run.status,
            "startedAt": _iso(run.started_at), "finishedAt": _iso(run.finished_at), "backupId": run.backup_id,
            "message": run.message, "retryAt": _iso(run.retry_at)}


def _summary(sched: Schedule) -> str:
    what = sched.kind if sched.kind in ("verify", "drill") else f"backup to {sched.location}"
    return f"{what} at `{sched.cron}` ({sched.timezone}), {'enabled' if sched.enabled else 'disabled'}"


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value else None
