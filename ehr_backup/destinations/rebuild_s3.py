"""S3 destinations as catalogue rebuild sources (rebuild_source.Source), and the copies a rebuild finds there.

`install(service)` registers both on service.catalogue_rebuild: a provider (one S3Source per destination) and an
applier that writes a BackupCopy row for every S3 place an accepted backup's identical bytes were found, and
marks missing the copies recorded at a destination that was listed and no longer holds them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ..audit import Actor
from ..errors import BackupError, NotFound
from ..rebuild import Plan
from ..rebuild_source import MAX_SIDECAR, Entry, Source
from ..storage import ID_RE, LOCATIONS, MAX_ID, SIDECAR_SUFFIX
from . import s3
from .copies import FAILED, MISSING, OK
from .store import Target

if TYPE_CHECKING:
    from ..service import BackupService

log = logging.getLogger("ehr_backup.rebuild")
ACTION = "catalogue.rebuild"


def directory_of(target: Target) -> str:
    """What BackupRecord.directory records for a backup whose primary is at this destination."""
    return f"s3://{target.settings.bucket}/{target.settings.prefix}"


def backup_names(keys: list[dict[str, Any]], prefix: str) -> list[tuple[str, int]]:
    """Pure: (backup id, size) of the objects directly under the prefix whose names are backup ids."""
    out = []
    for obj in keys:
        name = obj["key"][len(prefix):] if obj["key"].startswith(prefix) else ""
        if "/" not in name and len(name) <= MAX_ID and ID_RE.fullmatch(name):
            out.append((name, int(obj["size"])))
    return sorted(out)


class S3Source:
    """One S3 destination's backups, listed once (list_objects_v2 under the prefix), read by ranged GETs."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.location = target.name
        self.directory = directory_of(target)
        self._s3 = s3.client(target)
        self._names = backup_names(s3.list_keys(target, self._s3), target.settings.prefix)  # DestinationError

    def entries(self) -> Iterator[Entry]:
        """Every backup object under the prefix (sidecars and other keys skipped)."""
        for name, size in self._names:
            yield Entry(name, size, self._opener(name))

    def _opener(self, name: str) -> Any:
        def open_binary() -> IO[bytes]:
            return s3.ObjectReader(self.target, self.target.key_for(name), self._s3)  # type: ignore[return-value]
        return open_binary

    def read_sidecar(self, name: str) -> bytes | None:
        """`<id>.verified` beside the object when a copy uploaded one (at most MAX_SIDECAR + 1 bytes), else None."""
        try:
            answer = self._s3.get_object(Bucket=self.target.settings.bucket,
                                         Key=self.target.key_for(name) + SIDECAR_SUFFIX,
                                         Range=f"bytes=0-{MAX_SIDECAR}")
            return bytes(answer["Body"].read(MAX_SIDECAR + 1))
        except (ClientError, BotoCoreError, OSError):
            return None  # none uploaded (copies do not upload it yet), or unreadable: no verification known


def provider(service: BackupService):  # noqa: ANN201 - a closure for CatalogueRebuild.providers
    """The S3 sources for a rebuild: every destination (one that cannot be listed is left out, with a warning,
    so its copies are not marked missing), or only the one named (then a listing failure refuses the rebuild)."""

    def sources(location: str | None) -> list[Source]:
        if location in LOCATIONS:
            return []
        if location is not None:
            try:
                target = service.destinations.target(location)
            except NotFound:
                return []
            return [S3Source(target)]
        out: list[Source] = []
        for row in service.destinations.all():
            try:
                out.append(S3Source(service.destinations.target(row.name)))
            except BackupError as exc:
                log.warning("catalogue rebuild: destination %s not read: %s", row.name, exc.message)
        return out

    return sources


def applier(service: BackupService):  # noqa: ANN201 - a closure for CatalogueRebuild.appliers
    """Write the S3 copies a rebuild found; mark missing the recorded copies a listed destination lacks."""

    def apply(actor: Actor, result: Plan, sources: list[Source]) -> None:
        listed = {s.location: s for s in sources if isinstance(s, S3Source)}
        found: set[tuple[str, str]] = set()
        for backup_id, places in result.copies.items():
            for location, _directory, size, sha in places:
                source = listed.get(location)
                if source is None:
                    continue  # a local folder: the backup's own record is that copy
                found.add((backup_id, location))
                uri = source.target.uri(source.target.key_for(backup_id))
                existing = [c for c in service.copies.rows(backup_id) if c.destination == location]
                if existing and existing[-1].status == OK and existing[-1].sha256 == sha:
                    continue
                service.copies.record(backup_id, location, uri, size=size, sha256=sha, error=None)
                service.audit.record(actor, ACTION, backup_id, "ok", f"copy at {location} recorded from its "
                                                                     "authenticated object")
        refused = {(r["file"], r["location"]): r["reason"] for r in result.refused}
        for copy in service.copies.all():
            key = (copy.backup_id, copy.destination)
            if copy.destination not in listed or key in found or copy.status != OK:
                continue
            if key in refused:  # there, but not the authentic bytes of this backup
                service.copies.set_status(copy, FAILED, f"catalogue rebuild: {refused[key]}"[:1000])
                service.audit.record(actor, ACTION, copy.backup_id, "failed",
                                     f"copy at {copy.destination}: {refused[key]}")
            else:
                service.copies.set_status(copy, MISSING, "missing: not found at the destination when the "
                                                         "catalogue was rebuilt")
                service.audit.record(actor, ACTION, copy.backup_id, "ok", f"copy at {copy.destination} marked missing")

    return apply


def install(service: BackupService) -> None:
    """Plug S3 destinations into the service's catalogue rebuild."""
    service.catalogue_rebuild.providers.append(provider(service))
    service.catalogue_rebuild.appliers.append(applier(service))
