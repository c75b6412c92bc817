"""Open a backup from the first copy that authenticates: the local file, else each good S3 copy in turn.

Restore, verify and download read the whole copy through the MAC (and compare it with the catalogue) before
anything else happens, so a local file that is missing, corrupt or swapped is passed over for a good S3 copy
and never reaches a database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BackupError, Cancelled, KeyNotAvailable, NotFound
from ..fileformat import OpenedFile
from ..models import BackupRecord
from . import s3
from .copies import OK, remote_primary

if TYPE_CHECKING:
    from ..service import BackupService


def _openers(service: BackupService, record: BackupRecord) -> list[tuple[str, Callable[[], Any]]]:
    """Pure order of the places to try: (what it is called, how to open it)."""
    from pathlib import Path

    from .. import storage

    out: list[tuple[str, Callable[[], Any]]] = []
    if not remote_primary(record):
        out.append((f"the local file in {record.location}", lambda: storage.open_in(Path(record.directory), record.id)))
    for row in service.copies.rows(record.id):
        if row.status == OK:
            def remote(dest: str = row.destination) -> Any:
                target = service.destinations.target(dest)
                return s3.ObjectReader(target, target.key_for(record.id))
            out.append((f"the copy at {row.destination}", remote))
    return out


def open_authenticated(service: BackupService, record: BackupRecord, progress: Any = None,
                       check: Callable[[BackupRecord, OpenedFile, dict[str, Any]], None] | None = None,
                       ) -> tuple[OpenedFile, dict[str, Any], list[str]]:
    """(opened, trailer, problems): the first copy whose every byte authenticates and that `check` accepts
    (the catalogue's SHA-256 and row counts), left open for reading; `problems` says what was wrong with each
    copy passed over. With no good copy, the first copy's own error is raised (missing: NotFound)."""
    problems: list[str] = []
    first: BackupError | None = None
    for name, opener in _openers(service, record):
        opened = None
        try:
            fh = opener()
            try:
                opened = OpenedFile(fh, service.keyring())
                trailer = opened.authenticate(progress)
                if check is not None:
                    check(record, opened, trailer)
            except BaseException:
                fh.close()
                raise
            return opened, trailer, problems
        except (Cancelled, KeyNotAvailable):
            raise  # the same for every copy: no other copy would do better
        except BackupError as exc:
            first = first or exc
            problems.append(f"{name}: {exc.message}")
    if first is None:
        raise NotFound(f"backup {record.id} has no copy to read")
    if len(problems) > 1:
        first.message = f"{first.message} (and no other copy was good: {'; '.join(problems[1:])})"
        first.args = (first.message,)
    raise first
