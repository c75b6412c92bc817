"""Which copies a new backup gets: the local location (the primary file) and the S3 destinations named."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import InvalidInput
from ..models import Status
from ..storage import ID_RE, LOCATIONS
from .fanout import S3Sink, SinkResult
from .store import Target

if TYPE_CHECKING:
    from ..service import BackupService


def split(names: Sequence[str], location: str) -> tuple[str, list[str]]:
    """Pure: (the local location, the S3 destination names) from --destination names; a local key among them
    is the location of the primary file (at most one), the others are S3 destinations, each named once."""
    local = [n for n in names if n in LOCATIONS]
    remote = [n for n in names if n not in LOCATIONS]
    if len(set(local)) > 1:
        raise InvalidInput(f"a backup is written to one local location; {', '.join(sorted(set(local)))} were named")
    if len(set(remote)) != len(remote):
        raise InvalidInput("a destination was named twice")
    if local and location not in ("default", local[0]):
        raise InvalidInput(f"--location {location} and --destination {local[0]} name two local locations")
    return (local[0] if local else location), remote


def targets(service: BackupService, names: Sequence[str]) -> list[Target]:
    """The named S3 destinations, resolved before the backup starts (an unknown name refuses it)."""
    return [service.destinations.target(n) for n in names]


def start_sinks(service: BackupService, targets: Sequence[Target], backup_id: str, part_size: int) -> list[S3Sink]:
    """One upload per destination, fed as the backup is written; each first aborts uploads left by a crash."""

    def stale(target: Target) -> Callable[[str], bool]:
        def check(key: str) -> bool:  # ours by name, and its backup is not running: nothing will finish it
            name = key[len(target.settings.prefix):]
            if name == backup_id or not ID_RE.fullmatch(name):
                return False
            record = service.catalogue.get(name)
            return record is None or record.status != Status.RUNNING
        return check

    return [S3Sink(t, t.key_for(backup_id), part_size, stale(t)) for t in targets]


def finish_sinks(service: BackupService, backup_id: str, sinks: Sequence[S3Sink]) -> list[SinkResult]:
    """Wait for every upload and record each copy's outcome; return the results."""
    results = [sink.finish() for sink in sinks]
    for r in results:
        service.copies.record(backup_id, r.destination, r.uri, size=r.size if not r.error else None,
                              sha256=r.sha256, error=r.error)
    return results


def abort_sinks(sinks: Sequence[S3Sink]) -> None:
    """The backup failed: no copy of it may remain anywhere."""
    for sink in sinks:
        sink.abort()
