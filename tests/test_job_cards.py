"""Job cards titled by the backup's description, dismissible, listed in Recent activity; toasts bottom-right;
safety backups name the restore they protected."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.service import BackupService
from pages.backups_table import table_row
from pages.jobpanel import activity_line, job_title

from .conftest import ACTOR, run_sql
from .table_helpers import table_row as shown_row
from .web_helpers import eventually, login

PAGES = Path(__file__).resolve().parent.parent / "pages"


def test_a_job_is_titled_by_its_backups_description_and_listed_in_one_line() -> None:
    assert job_title("create", "ward export", "backup_x.ehrbak") == "Create: ward export"
    assert job_title("verify", "", "backup_x.ehrbak") == "Verify: backup_x.ehrbak"  # no description: the id
    assert activity_line("restore", "Restore: ward export", "failed", 2.04) == {
        "kind": "Restore", "what": "Restore: ward export", "outcome": "failed", "took": "2.0 s"}
    assert activity_line("create", "x", "succeeded", 125)["took"] == "2 min 5 s"


def test_every_toast_of_the_pages_goes_through_the_bottom_right_helper() -> None:
    offenders = [f"{p.name}:{n}" for p in PAGES.glob("*.py") if p.name != "theme.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bui\.notify\(", line)]
    assert offenders == []
    assert 'position=TOAST_POSITION' in (PAGES / "theme.py").read_text()


async def test_a_finished_job_card_can_be_dismissed_and_stays_in_recent_activity(
        user: User, accounts, web_env) -> None:
    await login(user, next_="/admin/backup")
    user.find(marker="description").type("ward export for audit")
    user.find(marker="create-button").click()
    await user.should_see(marker="job-create", retries=50)
    assert user.find(marker="job-title").elements.pop().text == "Create: ward export for audit"
    await user.should_see(marker="dismiss-job", retries=300)  # shown once the job has ended
    await user.should_see(marker="recent-0", retries=100)
    line = [e.text for e in user.find(marker="recent-0").elements.pop().descendants() if hasattr(e, "text")]
    assert line[:2] == ["Create", "Create: ward export for audit"] and "succeeded" in line
    assert re.fullmatch(r"\d+\.\d s", line[-1])
    user.find(marker="dismiss-job").click()
    await user.should_not_see(marker="job-create", retries=50)
    await user.should_see(marker="recent-0")  # the card went; its line stays


def test_a_safety_backup_names_the_restore_it_protected(service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, "CREATE TABLE notes AS SELECT g FROM generate_series(1, 20) g;")
    record = service.create(ACTOR, description="before the migration")
    report = service.restore(ACTOR, record.id, mode="recreate")
    safety = service.view(service.get(report.as_dict()["safetyBackup"]))
    dbname = db.rsplit("/", 1)[1]
    assert safety["kind"] == "safety" and safety["protects"] == f"{record.id} into {dbname}"
    assert f"before restoring {record.id} into {dbname}" in safety["description"]
    assert service.view(service.get(record.id))["protects"] is None
    row = table_row(safety, datetime.now(UTC))
    assert row["protects"] == f"before restoring {record.id} into {dbname}"


async def test_the_table_shows_which_restore_a_safety_backup_protected(user: User, accounts, web_env) -> None:
    service = BackupService(Settings.from_env(web_env))
    record = service.create(ACTOR, description="nightly")
    report = service.restore(ACTOR, record.id, mode="recreate")
    await login(user, next_="/admin/backup")
    row = await shown_row(user, report.as_dict()["safetyBackup"])
    assert row["kind"] == "safety" and row["protects"].startswith(f"before restoring {record.id} into ")
