"""The dashboard at the top of the backup page, driven by NiceGUI's simulated user against a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import ACTOR
from .web_helpers import eventually, login


@pytest.fixture
def backups(web_env: dict[str, str]) -> Iterator[BackupService]:
    svc = BackupService(Settings.from_env(web_env))
    yield svc
    svc.db.dispose()


def text(user: User, marker: str) -> str:
    """The element's text, or "" while it is not on the page (yet)."""
    try:
        return user.find(marker=marker).elements.pop().text
    except (AssertionError, KeyError):  # find() asserts that something matched
        return ""


async def test_dashboard_shows_freshness_verification_and_next_run(user: User, accounts,
                                                                   backups: BackupService) -> None:
    database = backups.connection().dbname
    await login(user, next_="/admin/backup")
    await user.should_see(marker=f"dashboard-status-{database}", retries=600)
    assert text(user, f"dashboard-status-{database}") == "Overdue"  # nothing backed up yet
    await user.should_see("No good backup yet")

    good = backups.create(ACTOR, description="good")
    backups.schedule_create(ACTOR, "nightly", cron="30 2 * * *", timezone="UTC", description="n")
    await login(user, next_="/admin/backup")
    await eventually(lambda: text(user, f"dashboard-status-{database}") == "Up to date")
    assert text(user, f"dashboard-verify-{database}").startswith("Last verification passed")
    await user.should_see("expected its schedule (every day)")
    await user.should_see("Next scheduled backup")

    path = Path(backups.get(good.id).directory) / good.id  # the only good copy rots on the disk
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    backups.verify_all(ACTOR)
    await login(user, next_="/admin/backup")
    await eventually(lambda: text(user, f"dashboard-status-{database}") == "Overdue")
    assert text(user, f"dashboard-verify-{database}").startswith("Last verification FAILED")
