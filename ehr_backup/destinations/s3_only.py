"""A backup written to S3 only (`create --destination NAME --no-local`): no local file, an S3 copy is the primary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BackupError, InvalidInput
from ..models import BackupRecord
from .rebuild_s3 import directory_of
from .store import Target

if TYPE_CHECKING:
    from ..service import BackupService


def primary(targets: Sequence[Target], location: str, custom_path: str | None) -> tuple[str, str]:
    """Pure: (location, directory) a backup kept at S3 only records: its first destination's."""
    if not targets:
        raise InvalidInput("a backup without a local file needs at least one S3 destination (--destination NAME)")
    if location != "default" or custom_path:
        raise InvalidInput("a backup without a local file takes no local location or path")
    return targets[0].name, directory_of(targets[0])


def settle(service: BackupService, record: BackupRecord, targets: Sequence[Target], failed: Sequence[Any]) -> None:
    """After the uploads: fail the backup when no copy stands; else make the first good copy its primary."""
    bad = {c.destination: c.error for c in failed}
    good = [t for t in targets if t.name not in bad]
    if not good:
        raise BackupError("no copy of the backup was written (it has no local file): "
                          + "; ".join(f"{name}: {error}" for name, error in bad.items()))
    if good[0].name != record.location:
        service.catalogue.update(record.id, location=good[0].name, directory=directory_of(good[0]))
