"""Pin a backup (e.g. a legal hold) so that neither rotation nor Delete removes it; unpin it. Audited."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .audit import Actor
from .errors import BackupError, InvalidInput, NotFound
from .models import BackupRecord, Status
from .text import clean_text

if TYPE_CHECKING:
    from .service import BackupService

MAX_REASON = 500


def pin(service: BackupService, actor: Actor, backup_id: str, reason: str | None) -> BackupRecord:
    """Pin a backup with a reason; pinning a pinned backup replaces its reason."""
    record = service._resolve(actor, "pin", backup_id)
    try:
        text = clean_text(reason, MAX_REASON, "the reason")
        if not text:
            raise InvalidInput("say why the backup is pinned (for example: legal hold, case 2026-114)")
        if record.status not in (Status.COMPLETED, Status.DISCOVERED):
            raise InvalidInput(f"backup {record.id} is {record.status}: only a backup with a file can be pinned")
        # held while the flag is written: a rotation removing this file holds it alone, so a pin either
        # waits for nothing (Busy) or is seen by the rotation's check made while it holds the file
        reading = service._backup_lock(record.id).acquire(f"pinning {record.id}")
    except BackupError as exc:
        service.audit.record(actor, "pin", record.id, "refused", exc.message)
        raise
    try:
        if service.catalogue.get(record.id) is None:  # removed before we held it
            service.audit.record(actor, "pin", record.id, "refused", "the backup was deleted")
            raise NotFound(f"no backup with id {record.id}")
        service.audit.record(actor, "pin", record.id, "ok", text)
        updated = service.catalogue.update(record.id, pinned=True, pin_reason=text)
    finally:
        reading.release()
    return updated or record


def unpin(service: BackupService, actor: Actor, backup_id: str) -> BackupRecord:
    """Unpin a backup, so that rotation may remove it again."""
    record = service._resolve(actor, "unpin", backup_id)
    if not record.pinned:
        service.audit.record(actor, "unpin", record.id, "refused", "the backup is not pinned")
        raise InvalidInput(f"backup {record.id} is not pinned")
    service.audit.record(actor, "unpin", record.id, "ok", f"was pinned: {record.pin_reason or ''}")
    updated = service.catalogue.update(record.id, pinned=False, pin_reason=None)
    return updated or record
