"""Re-reading S3 copies in the nightly / --all / --due re-verification: each copy's state follows what was read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..audit import Actor
from ..errors import BackupError
from .copies import FAILED, MISSING, RUNNING

if TYPE_CHECKING:
    from ..service import BackupService

REREAD = "re-read: "  # marks a copy's error found by re-verification (failed_copies raises the alert for any such)


def verify_copies(service: BackupService, actor: Actor, backup_id: str) -> list[dict[str, Any]]:
    """Read every S3 copy of a backup back in full and authenticate it; record ok, failed or missing on each."""
    record = service.catalogue.get(backup_id)
    if record is None:
        return []
    out: list[dict[str, Any]] = []
    for row in service.copies.rows(backup_id):
        if row.status == RUNNING or row.destination == record.location:
            continue  # still uploading; or the primary, which the backup's own verification just read
        try:
            service.copies.verify_copy(actor, backup_id, row.destination)
            out.append({"destination": row.destination, "ok": True})
        except BackupError as exc:
            gone = "does not exist" in exc.message  # the object (or its bucket) is not there any more
            for current in service.copies.rows(backup_id):
                if current.destination == row.destination:
                    service.copies.set_status(current, MISSING if gone else FAILED, (REREAD + exc.message)[:1000])
            out.append({"destination": row.destination, "ok": False, "error": exc.message})
    return out
