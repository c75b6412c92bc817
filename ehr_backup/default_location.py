"""The Default location: one absolute folder per installation, resolved once and kept in the metadata
database, so that the CLI, the server and cron jobs write to the same place wherever they run.

EHR_BACKUP_DEFAULT_DIR overrides it. Otherwise the first resolution is stored and reused: the folder of
the newest backup already catalogued under Default (an installation from before this was recorded
keeps its folder), else `backups` inside the data directory. Never the current directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from sqlmodel import col, select

from .audit import Actor, AuditLog
from .catalogue import utcnow
from .config import Settings
from .db import Database
from .models import AppSetting, BackupRecord

log = logging.getLogger("ehr_backup.locations")
KEY = "default_dir"


def first_choice(settings: Settings, newest_default: str | None) -> Path:
    """Where Default goes when nothing is recorded yet (pure): the folder already in use, else the data dir's."""
    return Path(newest_default) if newest_default else settings.data_dir / "backups"


def resolve(db: Database, audit: AuditLog, settings: Settings) -> Settings:
    """The settings with Default's folder fixed: from the environment, else recorded (on first use)."""
    if settings.default_dir_from_env:
        return settings
    with db.reading() as s:
        stored = s.get(AppSetting, KEY)
        value = stored.value if stored is not None else None
        if value is None:
            newest = s.exec(select(BackupRecord.directory).where(BackupRecord.location == "default")
                            .order_by(col(BackupRecord.created_at).desc()).limit(1)).first()
    if value is None:
        chosen = str(Path(os.path.realpath(first_choice(settings, newest))))
        with db.writing() as s:  # another process may have recorded one meanwhile: the first one wins
            stored = s.get(AppSetting, KEY)
            if stored is None:
                s.add(AppSetting(key=KEY, value=chosen, updated_at=utcnow()))
                value = None
            else:
                value = stored.value
        if value is None:
            value = chosen
            audit.record(Actor("system"), "configure", "default location", "ok",
                         f"the Default location is {chosen} (set EHR_BACKUP_DEFAULT_DIR to choose another)")
            log.info("the Default location is %s", chosen)
    path = Path(value)
    # the custom-location base folders include Default's folder unless they were configured
    roots = tuple(path if r == settings.default_dir else r for r in settings.custom_roots)
    return dataclasses.replace(settings, default_dir=path, custom_roots=roots)
