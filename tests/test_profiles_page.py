"""The backups page with database profiles: the database Create backs up, the list filter, the restore target."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import ACTOR, query, run_sql
from .table_helpers import backup_table, row_action, table_row
from .web_helpers import eventually, login


async def test_create_backs_up_the_chosen_profile_and_restore_targets_its_own(
        user: User, accounts, web_env: dict[str, str], make_db: Callable[[str], str]) -> None:
    other = make_db(f"prof_page_{uuid.uuid4().hex[:10]}")
    run_sql(other, "CREATE TABLE visits AS SELECT g FROM generate_series(1, 30) g")
    svc = BackupService(Settings.from_env(web_env))
    try:
        svc.database_add(ACTOR, "site-b", other)
    finally:
        svc.db.dispose()
    await login(user, next_="/admin/backup")
    chooser = user.find(marker="create-database").elements.pop()
    await eventually(lambda: "site-b" in chooser.options)
    chooser.value = "site-b"
    user.find(marker="description").type("of site b")
    user.find(marker="create-button").click()

    def made() -> list[dict]:
        svc = BackupService(Settings.from_env(web_env))
        try:
            return svc.list(database="site-b")
        finally:
            svc.db.dispose()

    await eventually(lambda: [b["status"] for b in made()] == ["completed"], timeout=90)
    [backup] = made()
    other_db = other.rsplit("/", 1)[1]
    assert backup["database"] == other_db and backup["profile"] == "site-b"
    await table_row(user, backup["id"], lambda r: r["database"] == f"{other_db} (site-b)")
    # the list's database filter offers the profiles
    database_filter = user.find(marker="filter-database").elements.pop()
    assert {"default", "site-b"} <= set(database_filter.options)

    run_sql(other, "DELETE FROM visits")
    row_action(user, "restore", backup["id"])
    await user.should_see(marker="restore-warning")
    warning = user.find(marker="restore-warning").elements.pop()
    assert other_db in warning.text  # its own profile's database, not DATABASE_URL's
    target = user.find(marker="restore-profile").elements.pop()
    assert target.value == "site-b"
    default_db = web_env["DATABASE_URL"].rsplit("/", 1)[1]
    target.value = "default"  # another target changes the name to type ...
    await eventually(lambda: default_db in warning.text)
    target.value = "site-b"  # ... and back
    await eventually(lambda: other_db in warning.text)
    user.find(marker="restore-confirm").type(other_db)
    user.find(marker="restore-start").click()
    await user.should_see("Row counts match the backup", retries=200)
    assert query(other, "SELECT count(*) FROM visits") == [(30,)]
    assert backup_table(user) is not None


async def test_a_schedule_made_on_the_page_backs_up_the_chosen_profile(user: User, accounts,
                                                                      web_env: dict[str, str]) -> None:
    svc = BackupService(Settings.from_env(web_env))
    try:
        svc.database_add(ACTOR, "site-b", "postgresql://backup@db-b.example.org/ehr")
    finally:
        svc.db.dispose()
    await login(user, next_="/admin/backup")
    await user.should_see(marker="schedule-new")
    user.find(marker="schedule-new").click()
    await user.should_see(marker="schedule-database")
    chooser = user.find(marker="schedule-database").elements.pop()
    await eventually(lambda: "site-b" in chooser.options)
    chooser.value = "site-b"
    user.find(marker="schedule-name").type("nightly-b")
    user.find(marker="schedule-cron").type("30 2 * * *")
    user.find(marker="schedule-save").click()

    def saved() -> str | None:
        svc = BackupService(Settings.from_env(web_env))
        try:
            return next((s["database"] for s in svc.schedule_list() if s["name"] == "nightly-b"), None)
        finally:
            svc.db.dispose()

    await eventually(lambda: saved() == "site-b")
    await user.should_see("backs up site-b")
