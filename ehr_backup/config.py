"""One frozen Settings object, read from the environment once and passed down."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .errors import ConfigError
from .pgmeta import check_url as _metadata_url

APP = "ehr-backup"
SUBDIR = "EHR-Backups"  # the folder made in Desktop, Documents and Downloads

# Every variable the program reads, with its meaning; README's configuration table mirrors this
# (tests/test_docs.py fails when one is undocumented).
VARIABLES = {
    "DATABASE_URL": "PostgreSQL database to back up and restore (postgresql://user:pass@host:port/db); "
                    "unset: the demo cluster started by `ehr-backup demo`",
    "BACKUP_ENCRYPTION_KEY": "the key new backups are encrypted with: hex:<64 hex digits>, base64:<44 chars>, "
                             "or passphrase:<at least 16 characters>",
    "BACKUP_ENCRYPTION_OLD_KEYS": "older keys, separated by commas or newlines, still accepted for "
                                  "verify/restore/decrypt",
    "EHR_BACKUP_DATA_DIR": "where the catalogue, audit log, locks and demo cluster live "
                           "(default: the platform's user data directory)",
    "EHR_BACKUP_DEFAULT_DIR": "the Default location's folder (default: chosen on first use and recorded in the "
                              "metadata database: the data directory's backups folder)",
    "EHR_BACKUP_CUSTOM_ROOTS": "base folders a custom location (and the folder browser) must lie in, "
                              "absolute paths separated by commas or the path separator (:) (default: the "
                              "user's home folder and the standard locations)",
    "EHR_BACKUP_COMPRESSION": "gzip (default) or zstd",
    "EHR_BACKUP_GZIP_LEVEL": "libdeflate gzip level 1-12 (default 6: files smaller than gzip -9's, several "
                             "times faster)",
    "EHR_BACKUP_ZSTD_LEVEL": "zstd level 1-19 (default 3)",
    "EHR_BACKUP_THREADS": "compression threads (default: the number of CPUs)",
    "EHR_BACKUP_SAFETY_BACKUP": "1 (default): a restore with --mode recreate first backs up the database it "
                                "replaces; 0 turns that off (the default swap mode keeps the previous database "
                                "instead)",
    "EHR_BACKUP_VERIFY_AFTER_BACKUP": "1 (default): read every new backup back at once (authenticate, "
                                      "decompress, check the dump and its row counts); 0: don't",
    "EHR_BACKUP_REVERIFY_DAYS": "re-read every stored backup at least this often, a share each night "
                                "(default 30; `ehr-backup verify --due`)",
    "EHR_BACKUP_SCHEDULER": "1 (default): the web app runs the schedules; 0 when `ehr-backup scheduler` runs them "
                            "instead (both at once is safe: each due run happens once)",
    "EHR_BACKUP_FILL_WARN_DAYS": "warn when a location is forecast to fill within this many days (default 14); "
                                 "a value set on the Alerts page wins",
    "EHR_BACKUP_ALERT_REPEAT_HOURS": "send an alert that is still open again after this many hours (default 24); "
                                     "a value set on the Alerts page wins",
    "EHR_BACKUP_ALERT_CHECK_MINUTES": "how often the process that runs the schedules checks for alerts (default 5; "
                                      "also right after each backup, verification or scheduled run)",
    "EHR_BACKUP_MAX_BACKUP_AGE_HOURS": "alert when the configured database has no successful backup this many "
                                       "hours old and no backup schedule says otherwise (default 0: off); "
                                       "a value set on the Alerts page wins",
    "EHR_BACKUP_PUBLIC_URL": "the app's address as people reach it, for the link in alerts, e.g. "
                             "https://backup.example.org (default: http://EHR_BACKUP_HOST:EHR_BACKUP_PORT)",
    "EHR_BACKUP_SMTP_PASSWORD": "the SMTP password of email alert channels that have a user but no stored password",
    "EHR_BACKUP_KEEP_PREVIOUS_HOURS": "how long a database replaced by a restore is kept for rollback before it is "
                                      "dropped (default 72; checked at start-up)",
    "EHR_BACKUP_SAFETY_KEEP_DAYS": "rotation removes safety backups (taken before a recreate restore) older than "
                                   "this many days unless pinned or the newest good backup (default 30)",
    "EHR_BACKUP_PG_BIN": "directory with pg_dump/psql to prefer (default: /usr/lib/postgresql/N/bin, PATH)",
    "EHR_BACKUP_MIN_FREE_MB": "warn when a location has less free space than this (default 1024); "
                              "a value set on the Alerts page wins",
    "EHR_BACKUP_HOST": "address the web app listens on (default 127.0.0.1)",
    "EHR_BACKUP_PORT": "port the web app listens on (default 8080)",
    "EHR_BACKUP_TRUSTED_PROXIES": "comma-separated addresses or networks (CIDR) of reverse proxies whose "
                                  "X-Forwarded-For/-Proto headers are believed (default: none)",
    "EHR_BACKUP_MAX_BODY_KB": "largest request body accepted, in KiB (default 64); larger ones get 413",
    "EHR_BACKUP_READ_TIMEOUT": "seconds a client has to send a request's headers, and again its body "
                               "(default 20)",
    "EHR_BACKUP_IDLE_MINUTES": "sign out a browser session after this many idle minutes (default 15)",
    "EHR_BACKUP_SESSION_HOURS": "sign out a browser session this many hours after login (default 12)",
    "EHR_BACKUP_AUDIT_KEY": "key that MACs the audit chain, in the same forms as BACKUP_ENCRYPTION_KEY; "
                            "older audit keys may follow after commas (default: derived from "
                            "BACKUP_ENCRYPTION_KEY; keep either away from the data directory)",
    "EHR_BACKUP_AUDIT_SYSLOG": "also send the audit log's head to syslog after every entry: off (default), "
                               "local (/dev/log) or HOST:PORT (UDP)",
    "EHR_BACKUP_DRILL_URL": "PostgreSQL server restore drills make their scratch database on "
                            "(postgresql://user:pass@host:port/postgres; default: the server of the backup's "
                            "database profile, DATABASE_URL's for default)",
    "EHR_BACKUP_DRILL_SCHEDULE": "cron expression of the `weekly-drill` schedule created once at the first start "
                                 "(default `0 5 * * 0`, Sundays 05:00); off: create none",
    "EHR_BACKUP_DRILL_CHECK_TIMEOUT": "seconds a drill's check query may run (default 30)",
    "EHR_BACKUP_METRICS_PUBLIC": "1: GET /metrics answers without a token (e.g. behind a firewall that only lets "
                                 "the Prometheus server in); 0 (default): an administrator's token or session, "
                                 "or a metrics token (`ehr-backup token create USER --scope metrics`)",
    "EHR_BACKUP_S3_PART_MB": "part size of multipart uploads to S3 destinations, in MiB (5-5120, default 16): "
                             "the memory an upload holds; an object has at most 10,000 parts",
    "EHR_BACKUP_METADATA_URL": "PostgreSQL database holding users, sessions, tokens, catalogue, audit log, "
                               "schedules, jobs and locks instead of the SQLite file in the data directory, so that "
                               "several app instances share them (postgresql://user@host:port/dbname; default: "
                               "SQLite; see docs/SCALING.md)",
}


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def _custom_roots(env: Mapping[str, str], default_dir: Path) -> tuple[Path, ...]:
    """EHR_BACKUP_CUSTOM_ROOTS as real absolute paths; default: home and the standard locations."""
    raw = env.get("EHR_BACKUP_CUSTOM_ROOTS", "").strip()
    if raw:
        items = [x.strip() for x in raw.replace(os.pathsep, ",").split(",") if x.strip()]
        for item in items:
            if not item.startswith("/"):
                raise ConfigError(f"EHR_BACKUP_CUSTOM_ROOTS must list absolute paths; {item!r} is not one")
    else:
        # the process's home, as platformdirs (the standard locations) sees it
        items = [os.path.expanduser("~"), str(default_dir)] + [os.path.join(d, SUBDIR) for d in (
            platformdirs.user_desktop_dir(), platformdirs.user_documents_dir(), platformdirs.user_downloads_dir())]
        # a service account whose home is / must not open the whole machine
        items = [x for x in items if x.startswith("/") and os.path.realpath(x) != "/"]
    roots: list[Path] = []
    for item in items:
        root = Path(os.path.realpath(item))
        if root not in roots:
            roots.append(root)
    return tuple(roots)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str, name: str = "EHR_BACKUP_TRUSTED_PROXIES") -> tuple[Network, ...]:
    """Comma-separated IP addresses or CIDR networks."""
    networks = []
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item[:60]!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{name} must be 1 or 0")
    return raw in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, validated."""

    data_dir: Path
    default_dir: Path
    default_dir_from_env: bool = True  # False: the first resolution is recorded and reused (default_location)
    database_url: str | None = field(default=None, repr=False)
    encryption_key: str | None = field(default=None, repr=False)
    old_keys: str | None = field(default=None, repr=False)
    compression: str = "gzip"
    gzip_level: int = 6
    zstd_level: int = 3
    threads: int = 2
    safety_backup: bool = True
    keep_previous_hours: int = 72
    verify_after_backup: bool = True
    reverify_days: int = 30
    fill_warn_days: int = 14
    alert_repeat_hours: int = 24
    alert_check_minutes: int = 5
    max_backup_age_hours: int = 0  # 0: off
    public_url: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    safety_keep_days: int = 30
    pg_bin: str | None = None
    min_free_mb: int = 1024
    host: str = "127.0.0.1"
    port: int = 8080
    idle_minutes: int = 15
    session_hours: int = 12
    custom_roots: tuple[Path, ...] = ()
    audit_key: str | None = field(default=None, repr=False)
    audit_syslog: str | None = None  # None (off), a socket path, or HOST:PORT
    trusted_proxies: tuple[Network, ...] = ()
    max_body_kb: int = 64
    read_timeout: int = 20
    run_scheduler: bool = True
    drill_url: str | None = field(default=None, repr=False)
    drill_schedule: str | None = "0 5 * * 0"  # None: no default drill schedule
    drill_check_timeout: int = 30
    metrics_public: bool = False
    s3_part_mb: int = 16  # multipart part size for S3 destinations: memory per upload
    metadata_url: str | None = field(default=None, repr=False)  # None: the SQLite file in data_dir

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("EHR_BACKUP_DATA_DIR") or platformdirs.user_data_dir(APP)).expanduser()
        # without EHR_BACKUP_DEFAULT_DIR, the service replaces this with the folder recorded on first use
        # (default_location.py): never the current directory, which differs between the CLI, server and cron
        default_dir = Path(env.get("EHR_BACKUP_DEFAULT_DIR") or data_dir / "backups").expanduser()
        compression = env.get("EHR_BACKUP_COMPRESSION", "gzip").strip() or "gzip"
        if compression not in ("gzip", "zstd"):
            raise ConfigError("EHR_BACKUP_COMPRESSION must be gzip or zstd")
        safety = env.get("EHR_BACKUP_SAFETY_BACKUP", "1").strip().lower()
        if safety not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise ConfigError("EHR_BACKUP_SAFETY_BACKUP must be 1 or 0")
        default_dir = Path(os.path.realpath(default_dir))
        return cls(
            data_dir=Path(os.path.realpath(data_dir)),
            default_dir=default_dir,
            default_dir_from_env=bool(env.get("EHR_BACKUP_DEFAULT_DIR")),
            database_url=env.get("DATABASE_URL") or None,
            encryption_key=env.get("BACKUP_ENCRYPTION_KEY") or None,
            old_keys=env.get("BACKUP_ENCRYPTION_OLD_KEYS") or None,
            compression=compression,
            gzip_level=_int(env, "EHR_BACKUP_GZIP_LEVEL", 6, 1, 12),
            zstd_level=_int(env, "EHR_BACKUP_ZSTD_LEVEL", 3, 1, 19),
            threads=_int(env, "EHR_BACKUP_THREADS", os.cpu_count() or 1, 1, 64),
            safety_backup=safety not in ("0", "false", "no", "off"),
            keep_previous_hours=_int(env, "EHR_BACKUP_KEEP_PREVIOUS_HOURS", 72, 0, 24 * 365),
            verify_after_backup=_flag(env, "EHR_BACKUP_VERIFY_AFTER_BACKUP", True),
            run_scheduler=_flag(env, "EHR_BACKUP_SCHEDULER", True),
            metrics_public=_flag(env, "EHR_BACKUP_METRICS_PUBLIC", False),
            reverify_days=_int(env, "EHR_BACKUP_REVERIFY_DAYS", 30, 1, 3650),
            fill_warn_days=_int(env, "EHR_BACKUP_FILL_WARN_DAYS", 14, 0, 3650),
            alert_repeat_hours=_int(env, "EHR_BACKUP_ALERT_REPEAT_HOURS", 24, 1, 24 * 365),
            alert_check_minutes=_int(env, "EHR_BACKUP_ALERT_CHECK_MINUTES", 5, 1, 24 * 60),
            max_backup_age_hours=_int(env, "EHR_BACKUP_MAX_BACKUP_AGE_HOURS", 0, 0, 24 * 3650),
            public_url=_public_url(env.get("EHR_BACKUP_PUBLIC_URL", "")),
            smtp_password=env.get("EHR_BACKUP_SMTP_PASSWORD") or None,
            safety_keep_days=_int(env, "EHR_BACKUP_SAFETY_KEEP_DAYS", 30, 0, 36500),
            pg_bin=env.get("EHR_BACKUP_PG_BIN") or None,
            min_free_mb=_int(env, "EHR_BACKUP_MIN_FREE_MB", 1024, 0, 10**9),
            host=env.get("EHR_BACKUP_HOST", "127.0.0.1") or "127.0.0.1",
            port=_int(env, "EHR_BACKUP_PORT", 8080, 1, 65535),
            idle_minutes=_int(env, "EHR_BACKUP_IDLE_MINUTES", 15, 1, 24 * 60),
            session_hours=_int(env, "EHR_BACKUP_SESSION_HOURS", 12, 1, 24 * 30),
            custom_roots=_custom_roots(env, default_dir),
            audit_key=env.get("EHR_BACKUP_AUDIT_KEY") or None,
            audit_syslog=_syslog(env.get("EHR_BACKUP_AUDIT_SYSLOG", "")),
            trusted_proxies=parse_networks(env.get("EHR_BACKUP_TRUSTED_PROXIES", "")),
            max_body_kb=_int(env, "EHR_BACKUP_MAX_BODY_KB", 64, 1, 1024 * 1024),
            read_timeout=_int(env, "EHR_BACKUP_READ_TIMEOUT", 20, 1, 600),
            drill_url=env.get("EHR_BACKUP_DRILL_URL") or None,
            drill_schedule=_drill_schedule(env.get("EHR_BACKUP_DRILL_SCHEDULE", "")),
            drill_check_timeout=_int(env, "EHR_BACKUP_DRILL_CHECK_TIMEOUT", 30, 1, 3600),
            s3_part_mb=_int(env, "EHR_BACKUP_S3_PART_MB", 16, 5, 5120),
            metadata_url=_metadata_url(env.get("EHR_BACKUP_METADATA_URL", "")),
        )


def _syslog(raw: str) -> str | None:
    """Validate EHR_BACKUP_AUDIT_SYSLOG: None when off, else a socket path or HOST:PORT."""
    value = raw.strip()
    if value.lower() in ("", "0", "off", "no", "false"):
        return None
    if value.lower() == "local":
        return "/dev/log"
    host, sep, port = value.rpartition(":")
    if (not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535
            or any(c.isspace() for c in host)):
        raise ConfigError("EHR_BACKUP_AUDIT_SYSLOG must be off, local, or HOST:PORT")
    return value


def _drill_schedule(raw: str) -> str | None:
    """EHR_BACKUP_DRILL_SCHEDULE: the default drill schedule's cron expression, or None when off."""
    value = raw.strip()
    if value.lower() in ("0", "off", "no", "false", "none"):
        return None
    return value or "0 5 * * 0"
def _public_url(raw: str) -> str | None:
    """Validate EHR_BACKUP_PUBLIC_URL: an http(s) address, or None."""
    value = raw.strip().rstrip("/")
    if not value:
        return None
    if not value.startswith(("http://", "https://")) or any(c.isspace() for c in value) or "@" in value:
        raise ConfigError("EHR_BACKUP_PUBLIC_URL must be an http:// or https:// address without credentials")
    return value
