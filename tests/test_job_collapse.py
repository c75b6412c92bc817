"""A finished job's card folds into Recent activity by itself; a running one stays; what it said stays too."""

from __future__ import annotations

from pathlib import Path

from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.service import BackupService
from pages.jobpanel import COLLAPSE_SECONDS, collapse_due

from .conftest import ACTOR
from .table_helpers import row_action, table_row
from .web_helpers import eventually, login


def test_a_card_folds_only_once_its_ended_job_was_shown_long_enough() -> None:
    assert not collapse_due(None, 1000.0, 8)  # still running: stays
    assert not collapse_due(995.0, 1000.0, 8)
    assert collapse_due(992.0, 1000.0, 8)
    assert not collapse_due(0.0, 1000.0, None)  # a card that never folds (the restore dialog's)
    assert 3 <= COLLAPSE_SECONDS <= 15  # "a few seconds": long enough to read the outcome


def _texts(user: User, marker: str) -> list[str]:
    return [e.text for e in user.find(marker=marker).elements]


async def test_a_finished_backup_card_folds_into_recent_activity_by_itself(user: User, accounts) -> None:
    await login(user, next_="/admin/backup")
    user.find(marker="description").type("folds by itself")
    user.find(marker="create-button").click()
    await user.should_see(marker="job-create", retries=50)
    await user.should_see(marker="recent-0", retries=300)  # the job ended: its line is there
    # nobody clicks: the card goes by itself
    await user.should_not_see(marker="job-create", retries=int((COLLAPSE_SECONDS + 20) / 0.1))
    line = [e.text for e in user.find(marker="recent-0").elements.pop().descendants() if hasattr(e, "text")]
    assert "Create: folds by itself" in line and "succeeded" in line


async def test_a_failed_jobs_reason_stays_in_recent_activity_after_its_card_folds(
        user: User, accounts, web_env) -> None:
    service = BackupService(Settings.from_env(web_env))
    record = service.create(ACTOR, description="rotten on disk")
    path = Path(service.view(service.get(record.id))["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # a bit flipped on the disk
    path.write_bytes(bytes(data))
    service.db.dispose()
    await login(user, next_="/admin/backup")
    await table_row(user, record.id)
    row_action(user, "verify", record.id)
    await user.should_see(marker="job-verify", retries=100)
    await user.should_see(marker="recent-error-0", retries=600)
    assert "not authentic" in _texts(user, "recent-error-0")[0]
    await user.should_not_see(marker="job-verify", retries=int((COLLAPSE_SECONDS + 20) / 0.1))
    assert "failed" in [e.text for e in user.find(marker="recent-0").elements.pop().descendants()
                        if hasattr(e, "text")]
    await eventually(lambda: "not authentic" in _texts(user, "recent-error-0")[0], timeout=5)
