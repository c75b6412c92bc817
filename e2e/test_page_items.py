"""In a real browser: a token made with an expiry says when it stops working; an ended job's card folds away."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from .conftest import ADMIN_PW, Server
from .test_journeys import TIMEOUT, login


def test_a_token_made_for_90_days_says_when_it_expires(page: Page, server: Server, shot) -> None:
    login(page, server, "alice", ADMIN_PW, "/admin/users")
    page.get_by_test_id("token-user").click()
    page.get_by_role("option", name="alice", exact=True).click()
    page.get_by_test_id("token-label").fill("e2e expiring")
    page.get_by_test_id("token-expiry").click()
    page.get_by_role("option", name="90 days").click()
    page.get_by_test_id("create-token").click()
    expect(page.get_by_test_id("token-dialog")).to_be_visible(timeout=TIMEOUT)
    expect(page.get_by_test_id("token-value")).to_have_value(re.compile(r"^ehrb_"))
    expect(page.get_by_test_id("token-copy")).to_be_visible()
    expect(page.get_by_test_id("token-expires-note")).to_have_text(
        re.compile(r"^It is refused from \d{4}-\d\d-\d\d \d\d:\d\d UTC on\.$"))
    shot("30-token-with-expiry")
    page.get_by_role("button", name="Done").click()
    row = page.get_by_test_id("token-list")
    expect(row).to_contain_text("e2e expiring")
    expect(row).to_contain_text(re.compile(r"expires \d{4}-\d\d-\d\d \d\d:\d\d UTC"))


def test_an_ended_jobs_card_folds_into_recent_activity_by_itself(page: Page, server: Server, shot) -> None:
    login(page, server, "alice", ADMIN_PW, "/admin/backup")
    page.get_by_test_id("description").fill("folds away")
    page.get_by_test_id("create-button").click()
    card = page.get_by_test_id("job-create").filter(has_text="folds away")
    expect(card).to_be_visible(timeout=TIMEOUT)
    expect(card.get_by_test_id("job-status")).to_have_text("Finished successfully", timeout=TIMEOUT)
    expect(card).to_have_count(0, timeout=30_000)  # nobody clicked: it went by itself
    expect(page.get_by_test_id("recent-activity")).to_contain_text("Create: folds away")
    shot("31-recent-activity")


def test_a_toast_never_covers_a_control_once_the_page_is_scrolled_to_its_end(page: Page, server: Server) -> None:
    login(page, server, "alice", ADMIN_PW, "/admin/backup")
    for width, height in ((1366, 768), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(server.url + "/admin/backup")
        expect(page.get_by_test_id("backup-table")).to_be_visible(timeout=TIMEOUT)
        page.get_by_test_id("description").fill("toast check")
        page.get_by_test_id("create-button").click()
        toast = page.locator(".q-notification").first
        expect(toast).to_be_visible(timeout=TIMEOUT)
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        covered = page.evaluate("""() => {
            const t = document.querySelector('.q-notification').getBoundingClientRect();
            const hit = (r) => r.width > 0 && r.height > 0 && r.left < t.right && r.right > t.left
                               && r.top < t.bottom && r.bottom > t.top;
            return [...document.querySelectorAll('button, a, input, [role=button], .q-pagination, .q-select')]
                .filter((e) => !e.closest('.q-notification') && hit(e.getBoundingClientRect()))
                .map((e) => e.outerHTML.slice(0, 120));
        }""")
        assert covered == [], (width, covered)
