"""Schedules in a real browser: create one with its live preview, see it listed, run it now, find its backup."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from .conftest import ADMIN_PW, Server
from .test_journeys import TIMEOUT, login


def ready(page: Page) -> None:
    """Wait for the page's socket and its schedules: a click before the handshake reaches no handler."""
    page.wait_for_function("() => window.did_handshake === true", timeout=TIMEOUT)
    expect(page.locator('[data-testid="no-schedules"], [data-testid^="schedule-row-"]').first) \
        .to_be_visible(timeout=TIMEOUT)


def test_admin_creates_a_schedule_previews_its_runs_and_runs_it_now(page: Page, server: Server, shot) -> None:
    login(page, server, "alice", ADMIN_PW, "/admin/backup")
    ready(page)
    page.get_by_test_id("schedule-new").click()
    expect(page.get_by_test_id("schedule-timezone")).not_to_have_value("", timeout=TIMEOUT)  # the server's zone
    page.get_by_test_id("schedule-name").fill("e2e-nightly")
    page.get_by_test_id("schedule-cron").fill("61 * * * *")
    expect(page.get_by_test_id("schedule-preview-error")).to_contain_text("invalid cron expression",
                                                                          timeout=TIMEOUT)
    page.get_by_test_id("schedule-timezone").fill("Europe/Berlin")
    page.get_by_test_id("schedule-cron").fill("30 2 * * *")
    expect(page.get_by_test_id("schedule-reading")).to_have_text("At 02:30, every day (Europe/Berlin)",
                                                                 timeout=TIMEOUT)
    expect(page.get_by_test_id("schedule-preview-error")).to_have_text("")
    runs = page.locator('[data-testid^="schedule-next-run-"]')
    expect(runs).to_have_count(5)
    for n in range(5):
        expect(page.get_by_test_id(f"schedule-next-run-{n}")).to_contain_text(re.compile(r" 02:30 CES?T$"))
    page.get_by_test_id("schedule-description").fill("E2E {schedule} {weekday}")
    expect(page.get_by_test_id("schedule-example")).to_contain_text(re.compile(r"^Example: E2E name \w+day$"),
                                                                    timeout=TIMEOUT)
    shot("16-new-schedule-preview")
    page.get_by_test_id("schedule-save").click()

    row = page.get_by_test_id("schedule-row-e2e-nightly")
    expect(row).to_be_visible(timeout=TIMEOUT)
    expect(page.get_by_test_id("schedule-dialog")).to_have_count(0)
    expect(row).to_contain_text("At 02:30, every day")
    expect(row).to_contain_text("30 2 * * * · Europe/Berlin")
    expect(page.get_by_test_id("schedule-next-e2e-nightly")).to_contain_text("02:30")
    expect(page.get_by_test_id("schedule-outcome-e2e-nightly")).to_contain_text("not run yet")
    shot("17-schedule-listed")

    page.get_by_test_id("schedule-run-e2e-nightly").click()
    expect(page.get_by_test_id("job-status").last).to_have_text("Finished successfully", timeout=TIMEOUT)
    made = page.locator('[data-testid^="from-schedule-"]', has_text="schedule e2e-nightly")
    expect(made).to_have_count(1, timeout=TIMEOUT)  # the list reloaded when the job finished
    bid = (made.get_attribute("data-testid") or "").removeprefix("from-schedule-")
    expect(page.get_by_test_id(f"row-{bid}")).to_contain_text(re.compile(r"^E2E e2e-nightly \w+day$"))
    expect(page.get_by_test_id(f"status-{bid}")).to_have_text(re.compile("^(completed|verified)$"))
    expect(page.get_by_test_id("schedule-outcome-e2e-nightly")).to_contain_text("succeeded", timeout=TIMEOUT)
    expect(page.get_by_test_id("schedule-outcome-e2e-nightly")).to_contain_text("(manual)")
    assert (server.backups_dir / bid).is_file()
    shot("18-scheduled-backup-made")
