"""Rotation per destination: the same GFS rules, applied to the copies at one S3 destination only.

The plan is the pure retention.plan over the backups that have a good copy there (so an off-site bucket can
keep, say, twelve monthly copies while the local folder keeps seven daily files); what goes is the copy, not
the backup. A copy that is the backup's last readable one is never removed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..audit import Actor
from ..errors import BackupError, Busy
from ..models import Status
from ..prune import candidate, file_exists
from ..retention import RetentionPolicy
from . import s3
from .copies import OK

if TYPE_CHECKING:
    from ..service import BackupService


def prune_destination(service: BackupService, actor: Actor, name: str, policy: RetentionPolicy, *,
                      dry_run: bool = True) -> dict[str, Any]:
    """Preview (dry_run) or delete the copies at one destination that the policy does not keep."""
    try:
        target = service.destinations.target(name)
    except BackupError as exc:
        service.audit.record(actor, "prune.copies", str(name)[:63], "refused", exc.message)
        raise
    copies = {c.backup_id: c for c in service.copies.all() if c.destination == name and c.status == OK}
    records = [r for r in service.catalogue.all() if r.id in copies and r.status == Status.COMPLETED]
    # every candidate is "at" the destination: the rules count this destination's copies only
    plan = service.rotation.plan(policy, [replace(candidate(r, exists=True), place=f"s3:{name}", location=name)
                                          for r in records])
    result: dict[str, Any] = {**plan.as_dict(), "destination": name, "policy": policy.as_dict(), "deleted": [],
                              "skipped": []}
    if dry_run:
        return result
    service.audit.record(actor, "prune.copies", name, "started", f"{len(plan.forget)} copies planned to go")
    by_id = {r.id: r for r in records}
    for decision in plan.forget:
        bid = decision.backup.id
        record = by_id[bid]
        others = [c for c in service.copies.rows(bid) if c.destination != name and c.status == OK]
        if not file_exists(record) and not others:
            result["skipped"].append({"id": bid, "reason": "its last readable copy"})
            continue
        try:
            lock = service._backup_lock(bid, exclusive=True).acquire(f"a rotation at {name} removing {bid}")
        except Busy as exc:
            result["skipped"].append({"id": bid, "reason": exc.message})
            continue
        try:
            s3.delete(target, target.key_for(bid))
            service.copies.forget(bid, name)
        except BackupError as exc:
            result["skipped"].append({"id": bid, "reason": exc.message})
            service.audit.record(actor, "prune.copies", f"{name}:{bid}", "failed", exc.message)
            continue
        finally:
            lock.release()
        result["deleted"].append(bid)
        service.audit.record(actor, "prune.copies", f"{name}:{bid}", "ok", decision.reasons[0])
    service.audit.record(actor, "prune.copies", name, "ok", f"{len(result['deleted'])} copies deleted, "
                                                            f"{len(result['skipped'])} skipped")
    return result
