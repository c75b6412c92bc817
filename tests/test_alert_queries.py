"""The alert check reads what it needs through SQLite, and concludes what reading every backup concluded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ehr_backup.alerts.conditions import Collector, failed_backups
from ehr_backup.models import Status
from ehr_backup.service import BackupService

from .catalogue_fill import fill


def test_the_newest_attempts_give_the_same_failed_backup_conditions_as_every_backup(service: BackupService,
                                                                                  tmp_path: Path) -> None:
    ids = fill(service, 200, directory=tmp_path / "backups", databases=("ehr", "rh", "old", "never"))
    service.catalogue.update(ids[1], status=Status.FAILED, error="disk full")  # rh's newest attempt failed
    for i, bid in enumerate(ids):  # "never" has no good backup at all: its failures do not count
        if i % 4 == 3:
            service.catalogue.update(bid, status=Status.FAILED, error="no such database")
    now = datetime(2026, 11, 2, tzinfo=UTC)
    collector = Collector(service)
    for configured in ("ehr", "rh", "never", None):
        every = failed_backups(service.catalogue.all(), configured, now)
        chosen = failed_backups(collector.newest_attempts(), configured, now)
        assert [(c.key, c.message) for c in chosen] == [(c.key, c.message) for c in every]
    assert "backup.failed:rh" in {c.key for c in failed_backups(collector.newest_attempts(), "ehr", now)}
    assert len(collector.newest_attempts()) <= 4 + 4  # one attempt and one marker per database at most
