"""SQLModel tables of the metadata database: backups, audit entries, users, tokens, sign-in throttling."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class Status:
    """Backup states: a row is RUNNING while the job works, then COMPLETED, FAILED or CANCELLED."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DISCOVERED = "discovered"  # found on disk, not made by this catalogue; not yet verified
    MISSING = "missing"  # reported by list when a catalogued file is gone (not stored)


class BackupRecord(SQLModel, table=True):
    """One backup file and what is known about it."""

    __tablename__ = "backups"

    id: str = Field(primary_key=True)
    location: str = Field(index=True)
    directory: str
    description: str = ""
    kind: str = Field(default="manual", index=True)  # manual | scheduled | safety
    status: str = Field(index=True)
    step: str | None = None
    error: str | None = None
    compression: str = "gzip"
    size: int | None = Field(default=None, index=True)
    dump_bytes: int | None = None
    sha256: str | None = None
    key_id: str | None = None
    database: str = Field(default="", index=True)
    server_version: str | None = None
    pg_dump_version: str | None = None
    table_counts: str | None = None  # JSON object: table -> rows, as recorded in the dump
    created_at: datetime = Field(index=True)
    finished_at: datetime | None = None
    duration_s: float | None = None
    created_by: str = ""
    origin: str = "catalogue"  # catalogue | discovered
    verified_at: datetime | None = None
    verify_ok: bool | None = None
    verify_message: str | None = None
    verify_duration_s: float | None = None
    pinned: bool = False  # never rotated away (e.g. a legal hold); pin_reason says why
    pin_reason: str | None = None
    schedule: str | None = Field(default=None, index=True)  # the schedule that made it (kind scheduled)
    protects: str | None = None  # kind safety: the restore it was taken before ("<backup id> into <database>")
    # the database profile it was made from (ehr_backup/profiles.py); None: the default one (DATABASE_URL),
    # so rows older than profiles belong to it. `database` alone cannot tell two servers' "ehr" apart.
    profile: str | None = Field(default=None, index=True)


class AuditEntry(SQLModel, table=True):
    """One append-only, hash-chained audit record."""

    __tablename__ = "audit"

    seq: int | None = Field(default=None, primary_key=True)
    ts: datetime = Field(index=True)
    actor: str = Field(index=True)
    action: str = Field(index=True)
    target: str = ""
    outcome: str = ""
    detail: str = ""
    address: str = ""
    prev_hash: str = ""
    hash: str = ""  # SHA-256 of the entry (key_id empty), or its HMAC under the audit key key_id
    key_id: str = ""  # fingerprint of the audit key that MACs this entry; empty for unkeyed entries


class User(SQLModel, table=True):
    """A person who may sign in."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True)
    password_hash: str = ""
    is_admin: bool = False
    disabled: bool = False
    created_at: datetime
    password_changed_at: datetime | None = None


class ApiToken(SQLModel, table=True):
    """A bearer token for scripts; only its hash is kept."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(index=True, foreign_key="users.id")
    label: str = ""
    token_hash: str = Field(unique=True, index=True)
    prefix: str = ""
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    scope: str = "admin"  # admin: the user's full API rights; metrics: GET /metrics only (for Prometheus)
    expires_at: datetime | None = None  # refused from this moment on (UTC); None: never expires


class WebSession(SQLModel, table=True):
    """A signed-in browser session; the cookie holds a random token, only its hash is kept."""

    __tablename__ = "sessions"

    id: str = Field(primary_key=True)  # SHA-256 of the token
    user_id: int = Field(index=True, foreign_key="users.id")
    created_at: datetime
    last_seen: datetime
    ended_at: datetime | None = None
    address: str = ""


class AuthFailure(SQLModel, table=True):
    """One failed sign-in (or one under way: recorded before the password is checked) or invalid API token."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_pair", "kind", "account", "source"),)

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = Field(index=True)
    kind: str  # "password" | "token"
    account: str = ""  # the user name as typed; "" for tokens
    address: str = Field(default="", index=True)
    source: str = ""  # what is throttled with the account: the address, or "browser:<hash>" of a known browser


class KnownBrowser(SQLModel, table=True):
    """A browser (by the hash of its nonce cookie) that has signed in to an account: throttled on its own."""

    __tablename__ = "known_browsers"
    __table_args__ = (UniqueConstraint("account", "browser_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    account: str = Field(index=True)
    browser_hash: str
    last_login: datetime


class KeptDatabase(SQLModel, table=True):
    """A database a restore made beside the live one: a copy being built, or the one it replaced."""

    __tablename__ = "kept_databases"

    id: int | None = Field(default=None, primary_key=True)
    server: str = Field(index=True)  # the server's identity (pg.server_identity)
    server_display: str = ""  # user@host:port, for people
    name: str  # the database's current name
    original: str  # the live database it was built for, or replaced
    kind: str  # building | previous | undone
    backup_id: str = ""
    created_at: datetime
    dropped_at: datetime | None = None
    note: str = ""
    subscriptions: str = "[]"  # JSON: subscriptions disabled when it was set aside (enabled again on rollback)


class StorageSample(SQLModel, table=True):
    """Free and used space of a location at one moment: the history the fill forecast is drawn from."""

    __tablename__ = "storage_samples"

    id: int | None = Field(default=None, primary_key=True)
    location: str = Field(index=True)  # a location key, or custom:<path>
    path: str = ""
    ts: datetime = Field(index=True)
    free_bytes: int | None = None
    used_bytes: int = 0  # by our backups there
    backups: int = 0


class Schedule(SQLModel, table=True):
    """A cron schedule of backups (or of re-verification), with the rotation that follows each run."""

    __tablename__ = "schedules"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    kind: str = "backup"  # backup | verify | drill
    cron: str
    timezone: str
    location: str = "default"
    custom_path: str | None = None
    compression: str | None = None  # None: the configured default
    description: str = "Scheduled {date}"  # a template: {date} {time} {datetime} {weekday} {schedule} {database}
    policy: str | None = None  # JSON RetentionPolicy applied after each run; None: no rotation
    enabled: bool = True
    retries: int = 2
    retry_delay_s: int = 600
    created_at: datetime
    created_by: str = ""
    updated_at: datetime
    fired_until: datetime  # runs due up to here have been taken (by this or another process)
    database: str | None = None  # the database profile it backs up (ehr_backup/profiles.py); None: the default
    destinations: str = ""  # S3 destinations each backup is also copied to, comma-separated (destinations/)


class ScheduleRun(SQLModel, table=True):
    """One run of a schedule: its due time, each attempt, and how it ended (or why it was skipped)."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("schedule", "due_at", "attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule: str = Field(index=True)
    due_at: datetime = Field(index=True)  # the fire time (UTC); run-now: the moment asked
    attempt: int = 1
    trigger: str = "cron"  # cron | catch-up | retry | manual
    status: str = Field(index=True)  # waiting | running | succeeded | failed | skipped
    retry_at: datetime | None = None  # a failed run's next attempt is due then (status waiting)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    backup_id: str | None = None
    message: str = ""
    owner: str = ""  # the process running it (host:pid), to tell a dead run from a live one


class Drill(SQLModel, table=True):
    """One restore drill: a backup restored into a scratch database, checked, and the scratch dropped."""

    __tablename__ = "drills"

    id: int | None = Field(default=None, primary_key=True)
    backup_id: str = Field(index=True)
    database: str = Field(default="", index=True)  # the backed-up database the backup is of
    server: str = ""  # identity of the server the scratch database is made on (pg.server_identity)
    server_display: str = ""  # user@host:port, for people
    scratch: str = ""  # the scratch database's name, recorded before it is created
    scratch_dropped: bool = False
    actor: str = ""
    started_at: datetime = Field(index=True)
    finished_at: datetime | None = None
    outcome: str = Field(default="running", index=True)  # running | passed | failed
    recovery_s: float | None = None  # authenticate + load + check
    authenticate_s: float | None = None
    load_s: float | None = None
    check_s: float | None = None
    message: str = ""
    report_json: str | None = None  # paths under <data_dir>/drill-reports/
    report_pdf: str | None = None
    report_sha256: str | None = None  # of the JSON report
    report_pdf_sha256: str | None = None
    # roles the drill made on the drill server and has not dropped yet (JSON list), recorded before each
    # is created so a crash leaves a trace that reconcile settles
    roles_pending: str = ""


class DrillCheck(SQLModel, table=True):
    """An admin-defined check query run against every drill's scratch database."""

    __tablename__ = "drill_checks"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    sql: str
    expect: str | None = None  # the expected value as text; None with compare_live
    compare_live: bool = False  # expect what the same query gives on the live database
    created_at: datetime
    created_by: str = ""


class AppSetting(SQLModel, table=True):
    """A small key/value fact of this installation (e.g. that a default schedule was created once)."""

    __tablename__ = "app_settings"

    key: str = Field(primary_key=True)
    value: str = ""
    updated_at: datetime


class BackupTally(SQLModel, table=True):
    """Backups of a database that ended with an outcome and were deleted since: with the catalogue's rows,
    the run counts /metrics reports stay counters (they never go down when rotation deletes a backup)."""

    __tablename__ = "backup_tallies"
    __table_args__ = (UniqueConstraint("database", "outcome"),)

    id: int | None = Field(default=None, primary_key=True)
    database: str
    outcome: str  # completed | failed | cancelled
    count: int = 0


class DatabaseProfile(SQLModel, table=True):
    """A named database to back up: a connection URL without its password, and where the password comes from."""

    __tablename__ = "database_profiles"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    url: str  # postgresql:// URL or conninfo, never holding a password
    password_env: str | None = None  # read the password from this environment variable when connecting
    password_sealed: str | None = None  # the password encrypted with the master key (alerts/secrets.py)
    created_at: datetime
    created_by: str = ""
