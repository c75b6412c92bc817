"""Every folder the app has recorded backups going to: what a catalogue rebuild reads besides --path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import col, select

from . import storage
from .models import AuditEntry, StorageSample

if TYPE_CHECKING:
    from .service import BackupService


def known_folders(service: BackupService) -> list[tuple[str, Path]]:
    """(location key, folder) for the standard locations, every folder of a catalogued row (any location,
    any status), every schedule's custom folder, and the custom folders the storage history sampled or the
    folder browser created (they outlive the rows: rotation and Delete forget the rows, not the folder)."""
    found: list[tuple[str, Path]] = [(x.key, Path(os.path.realpath(x.path)))
                                     for x in storage.standard_locations(service.settings.default_dir)]
    for key in storage.LOCATIONS:
        found += [(key, Path(d)) for d in service.catalogue.directories(key)]
    found += [("custom", Path(s.custom_path)) for s in service.schedules.all()
              if s.location == "custom" and s.custom_path]
    with service.db.reading() as s:
        sampled = s.exec(select(StorageSample.path).where(col(StorageSample.location).startswith("custom:"))
                         .distinct()).all()
        created = s.exec(select(AuditEntry.target).where(AuditEntry.action == "folder.create",
                                                         AuditEntry.outcome == "ok").distinct()).all()
    found += [("custom", Path(p)) for p in [*sampled, *created] if p and os.path.isabs(p)]
    return found
