"""Prometheus metrics: facts read from the service at scrape time, written by the official client.

Nothing is counted in memory: each scrape reads the catalogue, the storage status, the running jobs,
the schedules and (when present) the drills, so the numbers survive restarts and agree with the pages.
`families` is the pure part (facts in, metric families out); `ServiceCollector` gathers the facts.
Counters (`_total`) are the catalogue's rows plus the tallies of deleted rows (models.BackupTally), so
rotation never makes them go down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .catalogue import TALLIED, as_utc
from .models import Status
from .profiles import db_key

if TYPE_CHECKING:
    from .service import BackupService

log = logging.getLogger("ehr_backup.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_KINDS = ("create", "verify", "restore")  # always reported (0 when idle), so alerts see the series
RUN_COLUMNS = ("database", "status", "origin", "created_at", "finished_at", "duration_s", "size", "verified_at",
               "verify_ok")


@dataclass(frozen=True)
class Run:
    """The columns of one catalogue row that metrics need."""

    database: str
    status: str
    origin: str = "catalogue"
    created_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    size: int | None = None
    verified_at: datetime | None = None
    verify_ok: bool | None = None


@dataclass
class Facts:
    """Everything one scrape reports, read at scrape time."""

    version: str = __version__
    runs: Sequence[Run] = ()
    outcomes: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (database, outcome) -> runs ever
    locations: Sequence[Mapping[str, Any]] = ()  # service.status()["locations"]
    jobs: Sequence[str] = ()  # the kind of each running job
    schedules: Sequence[Mapping[str, Any]] = ()  # service.schedule_list()
    drills: Sequence[Mapping[str, Any]] | None = None  # drills.latest(), None when drills are not built in
    sources: Mapping[str, bool] = field(default_factory=dict)  # source -> read without error


def _ts(value: datetime | str | None) -> float | None:
    """Seconds since the epoch of a datetime (naive: UTC) or an ISO text."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z
        except ValueError:
            return None
    value = as_utc(value)
    return value.timestamp() if value is not None else None


def _db(name: str | None) -> str:
    return name or "unknown"  # an empty label value would read as no label at all


def _location(loc: Mapping[str, Any]) -> str:
    """The location label: its key, or custom:<path> (several custom folders may be in use)."""
    return str(loc["key"]) if loc["key"] != "custom" else f"custom:{loc['path']}"


def _gauge(name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[Sequence[str], float | None]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for label_values, value in values:
        if value is not None:
            family.add_metric(list(label_values), float(value))
    return family


def backup_families(runs: Sequence[Run], outcomes: Mapping[tuple[str, str], int]) -> list[Metric]:
    """Last success, last run, run counters and verification state per database."""
    ours = [r for r in runs if r.origin == "catalogue"]
    databases = sorted({_db(r.database) for r in runs} | {_db(d) for d, _ in outcomes})

    def newest(items: Iterable[Run], when: Callable[[Run], datetime | None]) -> dict[str, Run]:
        found: dict[str, Run] = {}
        for r in items:
            t = as_utc(when(r))
            old = found.get(_db(r.database))
            if t is not None and (old is None or t > (as_utc(when(old)) or t)):
                found[_db(r.database)] = r
        return found

    def finished(r: Run) -> datetime | None:
        return r.finished_at or r.created_at

    # a backup whose read-back failed is no success, though pg_dump finished
    good = newest((r for r in ours if r.status == Status.COMPLETED and r.verify_ok is not False), finished)
    last = newest((r for r in ours if r.status in TALLIED), finished)
    readable = [r for r in runs if r.status in (Status.COMPLETED, Status.DISCOVERED)]
    checked = newest((r for r in readable if r.verified_at is not None), lambda r: r.verified_at)
    counter = CounterMetricFamily("ehr_backup_backups", "Backups run by this installation, by outcome "
                                  "(deleted ones included)", labels=["database", "outcome"])
    for database in databases:
        for outcome in TALLIED:
            counter.add_metric([database, outcome], float(outcomes.get((database, outcome), 0)))
    verifications = GaugeMetricFamily("ehr_backup_verifications", "Stored backups by the outcome of their "
                                      "latest verification (ok, failed, never)", labels=["database", "outcome"])
    for database in databases:
        mine = [r for r in readable if _db(r.database) == database]
        for outcome, test in (("ok", True), ("failed", False), ("never", None)):
            verifications.add_metric([database, outcome], float(sum(r.verify_ok is test for r in mine)))
    return [
        _gauge("ehr_backup_last_success_timestamp_seconds", "When the newest good backup finished (Unix time)",
               ["database"], (([d], _ts(finished(r))) for d, r in good.items())),
        _gauge("ehr_backup_last_success_duration_seconds", "How long the newest good backup took",
               ["database"], (([d], r.duration_s) for d, r in good.items())),
        _gauge("ehr_backup_last_success_size_bytes", "Size of the newest good backup's file",
               ["database"], (([d], r.size) for d, r in good.items())),
        _gauge("ehr_backup_last_backup_success", "1 when the newest finished backup run succeeded, else 0",
               ["database"], (([d], float(r.status == Status.COMPLETED and r.verify_ok is not False))
                              for d, r in last.items())),
        counter, verifications,
        _gauge("ehr_backup_last_verification_timestamp_seconds", "When a stored backup was last verified "
               "(Unix time)", ["database"], (([d], _ts(r.verified_at)) for d, r in checked.items())),
        _gauge("ehr_backup_last_verification_success", "1 when the newest verification passed, else 0",
               ["database"], (([d], float(bool(r.verify_ok))) for d, r in checked.items())),
    ]


def drill_families(drills: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """The newest restore drill per database: when, whether it passed, how long recovery took."""
    newest: dict[str, tuple[float, Mapping[str, Any]]] = {}
    for d in drills:
        at = _ts(d.get("at"))
        key = _db(d.get("database"))
        if at is not None and (key not in newest or at > newest[key][0]):
            newest[key] = (at, d)
    return [
        _gauge("ehr_backup_last_drill_timestamp_seconds", "When the newest restore drill ran (Unix time)",
               ["database"], (([k], at) for k, (at, _) in newest.items())),
        _gauge("ehr_backup_last_drill_success", "1 when the newest restore drill passed, else 0",
               ["database"], (([k], float(d.get("outcome") == "passed")) for k, (_, d) in newest.items())),
        _gauge("ehr_backup_last_drill_recovery_seconds", "Measured recovery time of the newest restore drill",
               ["database"], (([k], d.get("recoverySeconds")) for k, (_, d) in newest.items())),
    ]


def families(facts: Facts) -> list[Metric]:
    """Every metric family of one scrape (pure: no database, no clock)."""
    out: list[Metric] = [InfoMetricFamily("ehr_backup", "EHR Backup build information",
                                          value={"version": facts.version})]
    out += backup_families(facts.runs, facts.outcomes)
    if facts.drills is not None:
        out += drill_families(facts.drills)
    locs = [(_location(loc), loc) for loc in facts.locations]
    out += [
        _gauge("ehr_backup_location_free_bytes", "Free space where a location's backups are written",
               ["location"], (([n], loc.get("freeBytes")) for n, loc in locs)),
        _gauge("ehr_backup_location_used_bytes", "Space used by the backups in a location",
               ["location"], (([n], loc.get("usedBytes")) for n, loc in locs)),
        _gauge("ehr_backup_location_backups", "Backups stored in a location", ["location"],
               (([n], loc.get("backups")) for n, loc in locs)),
        _gauge("ehr_backup_location_full_timestamp_seconds", "When a location is forecast to fill (Unix time; "
               "absent while free space is not shrinking)", ["location"],
               (([n], _ts(loc.get("fullAt"))) for n, loc in locs)),
    ]
    kinds = sorted(set(JOB_KINDS) | set(facts.jobs))
    out.append(_gauge("ehr_backup_jobs_running", "Jobs running now in this process, by kind", ["kind"],
                      (([k], facts.jobs.count(k)) for k in kinds)))
    enabled = [s for s in facts.schedules if s.get("enabled")]
    out += [
        _gauge("ehr_backup_schedules", "Schedules, enabled or not", ["state"],
               ((["enabled"], len(enabled)), (["disabled"], len(facts.schedules) - len(enabled)))),
        _gauge("ehr_backup_schedules_failing", "Enabled schedules whose newest run failed", [],
               [([], sum(bool(s.get("failing")) for s in enabled))]),
        _gauge("ehr_backup_schedule_failing", "1 when a schedule's newest run failed, else 0",
               ["schedule", "kind"], (([s["name"], s["kind"]], float(bool(s.get("failing")))) for s in enabled)),
        _gauge("ehr_backup_schedule_next_run_timestamp_seconds", "When a schedule runs next (Unix time)",
               ["schedule"], (([s["name"]], _ts(s["nextRuns"][0] if s.get("nextRuns") else None))
                              for s in enabled)),
    ]
    out.append(_gauge("ehr_backup_metrics_source_up", "1 when this scrape could read the source, else 0 "
                      "(its metrics are missing)", ["source"],
                      (([name], float(ok)) for name, ok in sorted(facts.sources.items()))))
    return out


class ServiceCollector(Collector):
    """Reads the service's current facts at each scrape; a source that fails is reported, not fatal."""

    def __init__(self, service: BackupService, running_jobs: Callable[[], Sequence[str]]) -> None:
        self.service = service
        self.running_jobs = running_jobs

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not read the database (names are fixed and unique here)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metric families of this moment."""
        yield from families(self.gather())

    def gather(self) -> Facts:
        """Read each source; one that fails leaves its metrics out and says so in metrics_source_up."""
        facts = Facts()
        s = self.service
        drills = getattr(s, "drills", None)
        readers: dict[str, Callable[[], None]] = {
            # a database profile's database is "name@profile" (ehr_backup/profiles.py): servers' same names apart
            "catalogue": lambda: _set(facts, runs=[Run(db_key(row[0], row[-1]), *row[1:-1])
                                                   for row in s.catalogue.columns((*RUN_COLUMNS, "profile"))],
                                      outcomes=s.catalogue.outcome_counts()),
            "storage": lambda: _set(facts, locations=s.status()["locations"]),
            "jobs": lambda: _set(facts, jobs=list(self.running_jobs())),
            "schedules": lambda: _set(facts, schedules=list(s.schedule_list())),
        }
        if drills is not None:
            readers["drills"] = lambda: _set(facts, drills=list(drills.latest()))
        sources = {}
        for name, read in readers.items():
            try:
                read()
                sources[name] = True
            except Exception as exc:  # noqa: BLE001 - one broken source must not hide every other metric
                log.warning("metrics: cannot read %s: %s", name, getattr(exc, "message", exc.__class__.__name__))
                sources[name] = False
        facts.sources = sources
        return facts


def _set(facts: Facts, **values: Any) -> None:
    for name, value in values.items():
        setattr(facts, name, value)


def make_registry(service: BackupService, running_jobs: Callable[[], Sequence[str]]) -> CollectorRegistry:
    """A registry of its own per app (never the global REGISTRY: the app may be built more than once)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service, running_jobs))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of the registry (reads the service: call off the event loop)."""
    return generate_latest(registry)
