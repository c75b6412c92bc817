"""The Destinations page, driven by NiceGUI's simulated user against a real S3 server process (moto_server)."""

from __future__ import annotations

from collections.abc import Iterator

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


async def test_add_test_and_remove_a_destination_on_the_page(user: User, accounts, backups, s3_server) -> None:
    bucket = s3_server.bucket()
    key_id, secret = s3_server.keys["full"]
    await login(user, next_="/admin/destinations")
    await user.should_see(marker="no-destinations", retries=100)
    user.find(marker="dest-name").type("offsite")
    user.find(marker="dest-bucket").type(bucket)
    user.find(marker="dest-endpoint").type(s3_server.url)
    user.find(marker="dest-path-style").elements.pop().value = True
    user.find(marker="dest-key-id").type(key_id)
    user.find(marker="dest-secret").type(secret)
    user.find(marker="add-destination").click()
    await user.should_see(marker="destination-offsite", retries=100)
    await user.should_see("credentials: stored")
    assert user.find(marker="dest-secret").elements.pop().value == ""  # not kept in the page
    user.find(marker="test-offsite").click()
    await user.should_see(marker="test-result-offsite", retries=100)
    await user.should_see("all permissions present: list, write, read, delete", retries=50)
    user.find(marker="remove-offsite").click()
    await user.should_see(marker="remove-destination-dialog", retries=50)
    user.find(marker="confirm-remove").click()
    await user.should_see(marker="no-destinations", retries=100)
    await eventually(lambda: backups.destination_list() == [])
    entries = [e for e in backups.audit.entries() if e.action.startswith("destination.")]
    assert {e.action for e in entries} == {"destination.add", "destination.test", "destination.remove"}
    assert all(secret not in (e.detail or "") for e in entries) and {e.actor for e in entries} == {"alice"}


async def test_a_missing_bucket_is_named_on_the_page(user: User, accounts, backups, s3_server) -> None:
    backups.destination_add(ACTOR, "nobucket", s3_server.keys["full"], bucket="no-such-bucket-page",
                            endpoint_url=s3_server.url, path_style=True)
    await login(user, next_="/admin/destinations")
    await user.should_see(marker="test-nobucket", retries=100)
    user.find(marker="test-nobucket").click()
    await user.should_see("the bucket no-such-bucket-page does not exist", retries=100)


async def test_the_header_links_to_destinations(user: User, accounts) -> None:
    await login(user, next_="/admin/backup")
    await user.should_see(marker="nav-destinations", retries=100)


async def test_copy_a_backup_to_a_destination_from_the_table(user: User, accounts, backups, web_env,
                                                             s3_server) -> None:
    from .conftest import run_sql
    from .table_helpers import row_action, table_row

    run_sql(web_env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 10) g;")
    bucket = s3_server.bucket()
    backups.destination_add(ACTOR, "offsite", s3_server.keys["full"], bucket=bucket, endpoint_url=s3_server.url,
                            path_style=True)
    record = backups.create(ACTOR, description="to copy")
    await login(user, next_="/admin/backup")
    await table_row(user, record.id)
    row_action(user, "copy", record.id)
    await user.should_see(marker="copy-dialog", retries=100)
    user.find(marker="copy-confirm").click()
    await eventually(lambda: s3_server.keys_in(bucket) == [record.id])
    row = await table_row(user, record.id, lambda r: "offsite ✓" in r["locationLabel"])
    assert "degraded" not in row["stateLabel"]


async def test_a_schedule_made_on_the_page_copies_to_the_destinations_chosen(user: User, accounts, backups,
                                                                             s3_server) -> None:
    backups.destination_add(ACTOR, "offsite", s3_server.keys["full"], bucket=s3_server.bucket(),
                            endpoint_url=s3_server.url, path_style=True)
    await login(user, next_="/admin/backup")
    await user.should_see(marker="schedule-new", retries=100)
    user.find(marker="schedule-new").click()
    await user.should_see(marker="schedule-dialog")
    chooser = user.find(marker="schedule-destinations").elements.pop()
    await eventually(lambda: "offsite" in str(chooser.options))  # the choices are read when the dialog opens
    user.find(marker="schedule-name").type("nightly-offsite")
    user.find(marker="schedule-cron").type("0 2 * * *")
    chooser.value = ["offsite"]
    user.find(marker="schedule-save").click()
    await eventually(lambda: [s["destinations"] for s in backups.schedule_list()] == [["offsite"]])
