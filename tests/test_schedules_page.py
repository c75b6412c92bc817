"""The Schedules section of the backup page, driven by NiceGUI's simulated user against a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from nicegui.testing import User

from ehr_backup.catalogue import utcnow
from ehr_backup.config import Settings
from ehr_backup.models import ScheduleRun
from ehr_backup.service import BackupService

from .conftest import ACTOR, run_sql
from .table_helpers import table_row
from .web_helpers import eventually, login


@pytest.fixture
def backups(web_env: dict[str, str]) -> Iterator[BackupService]:
    """A service on the page's installation, to arrange and check what the page did."""
    svc = BackupService(Settings.from_env(web_env))
    yield svc
    svc.db.dispose()


def text(user: User, marker: str) -> str:
    return user.find(marker=marker).elements.pop().text


def outcome(user: User, name: str) -> str:
    """Everything the schedule's Last outcome cell says."""
    cell = user.find(marker=f"schedule-outcome-{name}").elements.pop()
    return " | ".join(getattr(e, "text", "") for e in cell.descendants() if getattr(e, "text", ""))


async def open_new(user: User) -> None:
    await login(user, next_="/admin/backup")
    await user.should_see(marker="schedule-new", retries=100)
    user.find(marker="schedule-new").click()
    await user.should_see(marker="schedule-dialog")
    await eventually(lambda: bool(user.find(marker="schedule-timezone").elements.pop().value))  # the server's


async def test_the_preview_reads_the_expression_and_lists_five_runs_in_its_zone(user: User, accounts,
                                                                             backups) -> None:
    await open_new(user)
    user.find(marker="schedule-timezone").clear().type("Europe/Berlin")
    user.find(marker="schedule-cron").type("30 2 * * *")
    await eventually(lambda: text(user, "schedule-reading") == "At 02:30, every day (Europe/Berlin)",
                     state=lambda: text(user, "schedule-reading"))
    runs = [text(user, f"schedule-next-run-{n}") for n in range(5)]
    assert all(" 02:30 CE" in r for r in runs), runs  # CET or CEST: Berlin's wall clock, not the server's
    assert len(set(runs)) == 5 and text(user, "schedule-preview-error") == ""
    user.find(marker="schedule-description").clear().type("Nightly {weekday} of {database}")
    dbname = backups.connection().dbname
    await eventually(lambda: text(user, "schedule-example").startswith("Example: Nightly ")
                     and text(user, "schedule-example").endswith(f" of {dbname}"))

    user.find(marker="schedule-cron").clear().type("61 * * * *")
    await eventually(lambda: "61" in text(user, "schedule-preview-error"))
    assert text(user, "schedule-preview-error").startswith("invalid cron expression '61 * * * *'")
    assert text(user, "schedule-reading") == ""
    await user.should_not_see(marker="schedule-next-run-0")
    user.find(marker="schedule-description").clear().type("Nightly {when}")
    await eventually(lambda: "unknown placeholder" in text(user, "schedule-example"))


async def test_save_creates_the_schedule_and_a_refusal_stays_in_the_dialog(user: User, accounts, backups) -> None:
    await open_new(user)
    user.find(marker="schedule-name").type("nightly")
    user.find(marker="schedule-cron").type("61 * * * *")
    user.find(marker="schedule-save").click()
    await eventually(lambda: text(user, "schedule-error").startswith("invalid cron expression"))
    assert backups.schedule_list() == []
    user.find(marker="schedule-cron").clear().type("30 2 * * 1-5")
    user.find(marker="schedule-timezone").clear().type("Europe/Berlin")
    user.find(marker="schedule-policy-daily").elements.pop().value = 3
    user.find(marker="schedule-retries").elements.pop().value = 1
    user.find(marker="schedule-save").click()
    await user.should_see(marker="schedule-row-nightly", retries=100)
    [saved] = backups.schedule_list()
    assert (saved["name"], saved["cron"], saved["timezone"], saved["retries"]) == \
        ("nightly", "30 2 * * 1-5", "Europe/Berlin", 1)
    assert saved["policy"]["daily"] == 3 and saved["policy"]["weekly"] == 4
    assert text(user, "schedule-reading-nightly") == saved["reading"]
    assert text(user, "schedule-next-nightly").endswith((" 02:30 CET", " 02:30 CEST"))

    user.find(marker="schedule-enabled-nightly").elements.pop().value = False  # the switch stores at once
    await eventually(lambda: not backups.schedule_get("nightly")["enabled"])
    await eventually(lambda: text(user, "schedule-next-nightly") == "— (disabled)")

    user.find(marker="schedule-edit-nightly").click()
    await user.should_see(marker="schedule-dialog")
    assert not user.find(marker="schedule-name").elements.pop().enabled
    user.find(marker="schedule-rotate").elements.pop().value = False  # no rotation
    user.find(marker="schedule-save").click()
    await eventually(lambda: backups.schedule_get("nightly")["policy"] is None)


async def test_a_failed_run_shows_red_until_a_later_run_succeeds(user: User, accounts, backups) -> None:
    backups.schedule_create(ACTOR, "hourly", cron="0 * * * *", timezone="UTC")
    now = utcnow()
    with backups.db.writing() as s:
        s.add(ScheduleRun(schedule="hourly", due_at=now - timedelta(hours=2), status="succeeded",
                          started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=2)))
        s.add(ScheduleRun(schedule="hourly", due_at=now - timedelta(hours=1), status="failed",
                          started_at=now - timedelta(hours=1), finished_at=now - timedelta(hours=1),
                          message="disk full <b>now</b>"))
        s.add(ScheduleRun(schedule="hourly", due_at=now, status="skipped", started_at=now, finished_at=now,
                          message="skipped: the run due earlier was still going"))
    await login(user, next_="/admin/backup")
    await user.should_see(marker="schedule-outcome-hourly", retries=100)
    said = outcome(user, "hourly")
    assert said.startswith("failed: disk full <b>now</b> | skipped | skipped: the run due earlier was still going")
    assert "last success" in said  # a skipped run neither hides the failure nor ends it; markup stays text
    [red] = [e for e in user.find(marker="schedule-outcome-hourly").elements.pop().descendants()
             if getattr(e, "text", "").startswith("failed")]
    assert red.props["color"] == "negative"
    with backups.db.writing() as s:
        s.add(ScheduleRun(schedule="hourly", due_at=now + timedelta(seconds=1), status="succeeded",
                          started_at=now, finished_at=now))
    user.find(marker="refresh").click()
    await eventually(lambda: outcome(user, "hourly").startswith("succeeded"), state=lambda: outcome(user, "hourly"))
    assert "disk full" not in outcome(user, "hourly")


async def test_delete_asks_first_and_removes_the_schedule(user: User, accounts, backups) -> None:
    backups.schedule_create(ACTOR, "weekly", cron="@weekly")
    await login(user, next_="/admin/backup")
    await user.should_see(marker="schedule-row-weekly", retries=100)
    user.find(marker="schedule-delete-weekly").click()
    await user.should_see(marker="schedule-delete-dialog")
    assert [s["name"] for s in backups.schedule_list()] == ["weekly"]  # nothing happens before the confirmation
    user.find(marker="schedule-delete-confirm").click()
    await user.should_see(marker="no-schedules", retries=100)
    assert backups.schedule_list() == []


async def test_run_now_makes_a_scheduled_backup_that_the_list_shows(user: User, accounts, backups,
                                                                    web_env) -> None:
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE notes AS SELECT g FROM generate_series(1, 50) g;")
    backups.schedule_create(ACTOR, "nightly", cron="30 2 * * *", description="Nightly {schedule} {date}",
                            policy=None)
    await login(user, next_="/admin/backup")
    await user.should_see(marker="schedule-run-nightly", retries=100)
    user.find(marker="schedule-run-nightly").click()
    await user.should_see(marker="job-status", retries=100)
    await eventually(lambda: text(user, "job-status").startswith("Finished"), state=lambda: text(user, "job-status"))
    [made] = [b for b in backups.list() if b["kind"] == "scheduled"]
    assert made["schedule"] == "nightly" and made["description"].startswith("Nightly nightly ")
    row = await table_row(user, made["id"])
    assert row["schedule"] == "nightly" and row["kind"] == "scheduled"
    await eventually(lambda: "succeeded" in outcome(user, "nightly"), state=lambda: outcome(user, "nightly"))
    assert backups.schedule_get("nightly")["lastRun"]["trigger"] == "manual"
