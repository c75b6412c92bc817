"""The dashboard: freshness as a pure function, and the per-database overview after real backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ehr_backup.dashboard import freshness, overview
from ehr_backup.service import BackupService

from .conftest import ACTOR

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_freshness_against_the_schedule_and_without_one() -> None:
    assert freshness(None, DAY, NOW) == "red"
    assert freshness(NOW - timedelta(hours=29), DAY, NOW) == "green"  # a day plus a quarter of it
    assert freshness(NOW - timedelta(hours=31), DAY, NOW) == "amber"
    assert freshness(NOW - timedelta(hours=55), DAY, NOW) == "red"
    hourly = timedelta(hours=1)  # grace is at least an hour
    assert freshness(NOW - timedelta(minutes=110), hourly, NOW) == "green"
    assert freshness(NOW - timedelta(minutes=170), hourly, NOW) == "amber"
    assert freshness(NOW - timedelta(hours=4), hourly, NOW) == "red"
    assert freshness(NOW - timedelta(hours=20), None, NOW) == "green"  # unscheduled: measured against a day


def test_overview_after_real_backups(service: BackupService) -> None:
    [empty] = overview(service)
    assert empty["status"] == "red" and empty["lastGoodAt"] is None and empty["nextRun"] is None
    good = service.create(ACTOR, description="good")
    service.schedule_create(ACTOR, "nightly", cron="30 2 * * *", timezone="UTC", description="n")
    [card] = overview(service)
    assert card["database"] == good.database and card["status"] == "green" and card["lastGoodId"] == good.id
    assert card["lastVerification"]["ok"] is True and card["measuredAgainst"] == "its schedule (every day)"
    assert card["nextRun"] and card["nextRun"].endswith("02:30:00+00:00")
    later = datetime.now(UTC) + timedelta(hours=31)
    assert overview(service, later)[0]["status"] == "amber"
    # a newer backup that fails verification does not count as good
    bad = service.create(ACTOR, description="rots")
    path = Path(service.get(bad.id).directory) / bad.id
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    service.verify_all(ACTOR)
    [card] = overview(service)
    assert card["lastGoodId"] == good.id and card["lastVerification"]["ok"] is False
