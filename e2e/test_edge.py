"""The network edge in a real browser: a forged X-Forwarded-For does not change the audited address."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import Server


def test_a_forged_forwarded_for_does_not_change_the_address_of_a_login_attempt(browser: Browser,
                                                                                server: Server) -> None:
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": "6.6.6.6"})
    try:
        page = context.new_page()
        page.goto(server.url + "/login")
        page.get_by_label("Username").fill("bob")
        page.get_by_label("Password").fill("not bob's password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_test_id("login-error")).to_contain_text("wrong user name or password")
    finally:
        context.close()
    service = BackupService(Settings.from_env(server.env))
    try:
        failed = [e for e in service.audit.entries(action="login") if e.actor == "bob" and e.outcome == "failed"]
    finally:
        service.db.dispose()
    assert failed and {e.address for e in failed} == {"127.0.0.1"}
