"""One design: accent contrast, the audit filter's dates, the Users page's safeguards, 403/404 pages, folder browser."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import Request
from nicegui import ui
from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.service import BackupService
from pages.audit import local_equals_utc, parse_day
from pages.theme import ACCENTS, BADGES

from .conftest import USER_PW
from .web_helpers import eventually, login


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_white_on_the_old_yellow_measures_what_the_issue_says() -> None:
    assert round(contrast("#ffffff", "#eab308"), 2) == 1.92


@pytest.mark.parametrize("origin", sorted(ACCENTS))
def test_every_accent_pair_meets_wcag_aa(origin: str) -> None:
    a = ACCENTS[origin]
    assert contrast(a["on"], a["bg"]) >= 4.5  # primary buttons, the module card
    assert contrast(a["on"], a["header"]) >= 4.5  # the header
    assert contrast(a["text"], "#ffffff") >= 4.5  # links and icons on the light page
    assert contrast(a["text_dark"], "#1f2937") >= 4.5  # ... and on a dark card
    assert contrast(a["card"].split("color: ")[-1], a["card"].split("background-color: ")[1][:7]) >= 4.5


def test_badges_are_readable() -> None:
    assert all(contrast(bg, fg) >= 4.5 for bg, fg in BADGES.values())


def test_audit_dates_are_iso_days_and_anything_else_is_explained() -> None:
    assert parse_day("2026-11-29", "From") == (datetime(2026, 11, 29).date(), "")
    assert parse_day("  ", "From") == (None, "")
    day, why = parse_day("29/11/2026", "From")
    assert day is None and "29/11/2026 is not understood" in why and "2026-11-29" in why
    assert parse_day("2026-02-30", "To")[1] == "To: 2026-02-30 is not a day of the calendar"
    assert "not understood" in parse_day("yesterday", "To")[1]


def test_the_local_time_column_is_needed_only_away_from_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = [datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC)]
    for tz, same in (("UTC", True), ("Europe/London", False), ("Asia/Kolkata", False)):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        assert local_equals_utc(stamp) is same, tz
    monkeypatch.delenv("TZ")
    time.tzset()


async def test_a_date_the_filter_does_not_understand_is_said_and_changes_nothing(user: User, accounts) -> None:
    await login(user, next_="/admin/audit")
    table = user.find(marker="audit-table").elements.pop()
    before = list(table.rows)
    user.find(marker="filter-from").type("29/11/2026")
    user.find(marker="filter-apply").click()
    await user.should_see("29/11/2026 is not understood")
    assert table.rows == before and before
    user.find(marker="filter-from").clear()
    user.find(marker="filter-from").type("2999-01-01")  # understood: nothing is that new
    user.find(marker="filter-apply").click()
    await eventually(lambda: table.rows == [])
    assert user.find(marker="filter-error").elements.pop().text == ""


async def test_the_audit_table_shows_the_export_and_the_chain_check_without_a_reload(user: User, accounts) -> None:
    await login(user, next_="/admin/audit")
    table = user.find(marker="audit-table").elements.pop()
    user.find(marker="export-csv").click()
    await user.download.next(timeout=10)
    await eventually(lambda: any(r["action"] == "audit.export" for r in table.rows), timeout=10)
    names = {c["name"] for c in table.columns}
    local_is_utc = datetime.now().astimezone().utcoffset() == timedelta(0)
    assert ("local" in names) is not local_is_utc


async def test_the_users_page_offers_no_self_lockout_and_confirms_a_revoke(user: User, accounts) -> None:
    token = accounts.create_token(Actor("test-setup"), "alice", "nightly")
    accounts.token(token)  # used once: "last used" shows a time
    await login(user, next_="/admin/users")
    await user.should_see(marker="self-alice")
    await user.should_not_see(marker="toggle-disabled-alice")
    await user.should_not_see(marker="toggle-admin-alice")
    await user.should_see(marker="toggle-disabled-bob")
    prefix = accounts.tokens()[0].prefix
    assert "never" not in user.find(marker=f"used-{prefix}").elements.pop().text
    user.find(marker=f"revoke-{prefix}").click()
    await user.should_see(marker="revoke-dialog")
    assert accounts.tokens()[0].revoked_at is None  # asked, not done
    user.find(marker="revoke-confirm").click()
    await eventually(lambda: accounts.tokens()[0].revoked_at is not None, timeout=10)


async def test_a_token_for_a_non_admin_is_warned_about_and_can_be_copied(user: User, accounts) -> None:
    await login(user, next_="/admin/users")
    user.find(marker="token-user").elements.pop().value = "bob"
    await user.should_see("bob is not an administrator")
    user.find(marker="token-user").elements.pop().value = "alice"
    await eventually(lambda: user.find(marker="token-warning").elements.pop().text == "")
    user.find(marker="create-token").click()
    await user.should_see(marker="token-copy")


async def test_403_and_404_pages_are_styled_and_api_404s_stay_json(user: User, accounts) -> None:
    await login(user, "bob", USER_PW)
    forbidden = await user.http_client.get("/admin/users")
    assert forbidden.status_code == 403 and "<style>" in forbidden.text and 'name="viewport"' in forbidden.text
    await login(user)
    missing = await user.http_client.get("/eh/no-such-page")
    assert missing.status_code == 404 and "Page not found" in missing.text and "--ehr-accent-bg" in missing.text
    api = await user.http_client.get("/api/admin/backup/backups/no-such-backup")
    assert api.status_code in (404, 422) and "Page not found" not in api.text  # the API answers for itself


async def test_the_folder_browser_opens_at_an_allowed_folder_and_marks_what_cannot_be_chosen(
        user: User, accounts, web_env, tmp_path: Path) -> None:
    from pages.folder_browser import DirectoryBrowser
    from pages.frame import admin_page

    home = tmp_path  # the test installation's only custom root
    (home / "fine").mkdir(mode=0o700)
    (home / 'bad"name').mkdir()
    chosen: list[str] = []
    service = BackupService(Settings.from_env(web_env))
    ctx = SimpleNamespace(auth=accounts, service=service)  # what a page session uses of the web context

    @ui.page("/admin/test-folder-browser")
    async def page(request: Request) -> None:  # the browser as the backups page opens it
        ps = admin_page(ctx, request, "test")  # type: ignore[arg-type]
        browser = DirectoryBrowser(ps, chosen.append)
        ui.button("open", on_click=lambda: browser.open_at("/etc")).mark("open")

    await login(user)
    await user.open("/admin/test-folder-browser")
    user.find(marker="open").click()
    await eventually(lambda: user.find(marker="browse-path").elements.pop().text == os.path.realpath(home),
                     timeout=10, state=lambda: [e.text for e in user.find(marker="browse-note").elements]
                     + [e.text for e in user.find(marker="browse-path").elements])
    assert "outside" in user.find(marker="browse-note").elements.pop().text  # said why it opened elsewhere
    marks = [e.text for e in user.find(marker="unusable-dir").elements]
    assert len(marks) == 1 and marks[0].startswith('bad"name cannot be chosen')
    reason = user.find(marker="browse-reason").elements.pop().text
    assert user.find(marker="browse-choose").elements.pop().enabled is (reason == ""), reason
    user.find(marker="dir-fine").click()
    await eventually(lambda: user.find(marker="browse-path").elements.pop().text.endswith("/fine"), timeout=10)
    assert user.find(marker="browse-reason").elements.pop().text == ""
    user.find(marker="browse-choose").click()
    assert chosen == [os.path.realpath(home / "fine")]
    service.db.dispose()
