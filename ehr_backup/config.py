"""One frozen Settings object, read from the environment once and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .errors import ConfigError

APP = "ehr-backup"

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
    "EHR_BACKUP_DEFAULT_DIR": "the Default location (default: ./backups, resolved at start)",
    "EHR_BACKUP_COMPRESSION": "gzip (default) or zstd",
    "EHR_BACKUP_GZIP_LEVEL": "libdeflate gzip level 1-12 (default 6: files smaller than gzip -9's, several "
                             "times faster)",
    "EHR_BACKUP_ZSTD_LEVEL": "zstd level 1-19 (default 3)",
    "EHR_BACKUP_THREADS": "compression threads (default: the number of CPUs)",
    "EHR_BACKUP_SAFETY_BACKUP": "1 (default): a restore with --mode recreate first backs up the database it "
                                "replaces; 0 turns that off (the default swap mode keeps the previous database "
                                "instead)",
    "EHR_BACKUP_KEEP_PREVIOUS_HOURS": "how long a database replaced by a restore is kept for rollback before it is "
                                      "dropped (default 72; checked at start-up)",
    "EHR_BACKUP_PG_BIN": "directory with pg_dump/psql to prefer (default: /usr/lib/postgresql/N/bin, PATH)",
    "EHR_BACKUP_MIN_FREE_MB": "warn when a location has less free space than this (default 1024)",
    "EHR_BACKUP_HOST": "address the web app listens on (default 127.0.0.1)",
    "EHR_BACKUP_PORT": "port the web app listens on (default 8080)",
    "EHR_BACKUP_SESSION_SECRET": "secret that signs browser sessions (default: generated once, stored "
                                 "0600 in the data directory)",
    "EHR_BACKUP_IDLE_MINUTES": "sign out a browser session after this many idle minutes (default 15)",
    "EHR_BACKUP_SESSION_HOURS": "sign out a browser session this many hours after login (default 12)",
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


@dataclass(frozen=True)
class Settings:
    """Everything configurable, validated."""

    data_dir: Path
    default_dir: Path
    database_url: str | None = field(default=None, repr=False)
    encryption_key: str | None = field(default=None, repr=False)
    old_keys: str | None = field(default=None, repr=False)
    compression: str = "gzip"
    gzip_level: int = 6
    zstd_level: int = 3
    threads: int = 2
    safety_backup: bool = True
    keep_previous_hours: int = 72
    pg_bin: str | None = None
    min_free_mb: int = 1024
    host: str = "127.0.0.1"
    port: int = 8080
    session_secret: str | None = field(default=None, repr=False)
    idle_minutes: int = 15
    session_hours: int = 12

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("EHR_BACKUP_DATA_DIR") or platformdirs.user_data_dir(APP)).expanduser()
        default_dir = Path(env.get("EHR_BACKUP_DEFAULT_DIR") or "backups").expanduser()
        compression = env.get("EHR_BACKUP_COMPRESSION", "gzip").strip() or "gzip"
        if compression not in ("gzip", "zstd"):
            raise ConfigError("EHR_BACKUP_COMPRESSION must be gzip or zstd")
        safety = env.get("EHR_BACKUP_SAFETY_BACKUP", "1").strip().lower()
        if safety not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise ConfigError("EHR_BACKUP_SAFETY_BACKUP must be 1 or 0")
        return cls(
            data_dir=Path(os.path.realpath(data_dir)),
            default_dir=Path(os.path.realpath(default_dir)),
            database_url=env.get("DATABASE_URL") or None,
            encryption_key=env.get("BACKUP_ENCRYPTION_KEY") or None,
            old_keys=env.get("BACKUP_ENCRYPTION_OLD_KEYS") or None,
            compression=compression,
            gzip_level=_int(env, "EHR_BACKUP_GZIP_LEVEL", 6, 1, 12),
            zstd_level=_int(env, "EHR_BACKUP_ZSTD_LEVEL", 3, 1, 19),
            threads=_int(env, "EHR_BACKUP_THREADS", os.cpu_count() or 1, 1, 64),
            safety_backup=safety not in ("0", "false", "no", "off"),
            keep_previous_hours=_int(env, "EHR_BACKUP_KEEP_PREVIOUS_HOURS", 72, 0, 24 * 365),
            pg_bin=env.get("EHR_BACKUP_PG_BIN") or None,
            min_free_mb=_int(env, "EHR_BACKUP_MIN_FREE_MB", 1024, 0, 10**9),
            host=env.get("EHR_BACKUP_HOST", "127.0.0.1") or "127.0.0.1",
            port=_int(env, "EHR_BACKUP_PORT", 8080, 1, 65535),
            session_secret=env.get("EHR_BACKUP_SESSION_SECRET") or None,
            idle_minutes=_int(env, "EHR_BACKUP_IDLE_MINUTES", 15, 1, 24 * 60),
            session_hours=_int(env, "EHR_BACKUP_SESSION_HOURS", 12, 1, 24 * 30),
        )
