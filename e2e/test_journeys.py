"""What an administrator does in a real browser: sign in, reach backups from EH and RH, create, download,
restore; and what a non-admin is refused."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import Page, expect

from tests.conftest import query

from .conftest import ADMIN_PW, USER_PW, Server

TIMEOUT = 60_000


def login(page: Page, server: Server, name: str, password: str, path: str = "/eh") -> None:
    page.goto(server.url + path)
    expect(page.get_by_label("Username")).to_be_visible()
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: urlparse(url).path == path)


def test_admin_creates_a_backup_from_the_purple_eh_card(page: Page, server: Server, shot) -> None:
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server.url + "/eh")
    expect(page.get_by_test_id("login-button")).to_be_visible()
    shot("01-login")
    login(page, server, "alice", ADMIN_PW)
    card = page.get_by_test_id("backup-card")
    expect(card).to_be_visible()
    assert "rgb(126, 34, 206)" == card.evaluate("e => getComputedStyle(e).backgroundColor")  # purple
    shot("02-eh-modules")
    card.click()
    page.wait_for_url("**/admin/backup?from=eh")
    expect(page.get_by_test_id("back-link")).to_have_attribute("href", "/eh")
    page.get_by_label("Description").fill("E2E nightly")
    page.get_by_test_id("create-button").click()
    expect(page.get_by_test_id("job-status")).to_have_text("Finished successfully", timeout=TIMEOUT)
    files = list(server.backups_dir.glob("*_e2e_nightly.sql.gz.enc"))
    assert len(files) == 1
    expect(page.get_by_test_id(f"status-{files[0].name}")).to_have_text(re.compile("^(completed|verified)$"),
                                                                          timeout=TIMEOUT)
    shot("03-backup-created")
    assert csp_errors == []


def test_the_yellow_rh_card_opens_backups_and_leads_back_to_rh(page: Page, server: Server, shot) -> None:
    login(page, server, "alice", ADMIN_PW, "/rh")
    card = page.get_by_test_id("backup-card")
    assert "rgb(250, 204, 21)" == card.evaluate("e => getComputedStyle(e).backgroundColor")  # yellow
    shot("04-rh-dashboard")
    card.click()
    page.wait_for_url("**/admin/backup?from=rh")
    back = page.get_by_test_id("back-link")
    expect(back).to_have_attribute("href", "/rh")
    shot("05-backups-from-rh")
    back.click()
    page.wait_for_url(lambda url: urlparse(url).path == "/rh")


def _ensure_backup(page: Page, server: Server, description: str) -> Path:
    page.goto(server.url + "/admin/backup")
    page.get_by_label("Description").fill(description)
    page.get_by_test_id("create-button").click()
    expect(page.get_by_test_id("job-status").last).to_have_text("Finished successfully", timeout=TIMEOUT)
    slug = description.lower().replace(" ", "_")
    return next(server.backups_dir.glob(f"*_{slug}.sql.gz.enc"))


def test_download_gives_the_exact_bytes_of_the_file(page: Page, server: Server, tmp_path: Path) -> None:
    login(page, server, "alice", ADMIN_PW)
    path = _ensure_backup(page, server, "for download")
    button = page.get_by_test_id(f"download-{path.name}")
    expect(button).to_be_visible(timeout=TIMEOUT)
    with page.expect_download() as info:
        button.click()
    download = info.value
    assert download.suggested_filename == path.name
    saved = tmp_path / "downloaded.enc"
    download.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_restore_from_the_page_shows_the_success_report(page: Page, server: Server, shot) -> None:
    login(page, server, "alice", ADMIN_PW)
    path = _ensure_backup(page, server, "before damage")
    query(server.db_url, "DELETE FROM patients WHERE id > 100 RETURNING 1")
    page.get_by_test_id(f"restore-{path.name}").click()
    expect(page.get_by_test_id("restore-warning")).to_contain_text(server.db_name)
    expect(page.get_by_test_id("restore-start")).to_be_disabled()
    page.get_by_test_id("restore-confirm").fill(server.db_name)
    expect(page.get_by_test_id("restore-start")).to_be_enabled()
    shot("06-restore-confirm")
    page.get_by_test_id("restore-start").click()
    expect(page.get_by_test_id("restore-result")).to_contain_text("Row counts match", timeout=TIMEOUT)
    shot("07-restore-report")
    assert query(server.db_url, "SELECT count(*) FROM patients") == [(300,)]


def test_audit_and_users_pages_render(page: Page, server: Server, shot) -> None:
    login(page, server, "alice", ADMIN_PW)
    page.goto(server.url + "/admin/audit")
    expect(page.get_by_test_id("audit-table")).to_contain_text("login")
    shot("08-audit")
    page.goto(server.url + "/admin/users")
    expect(page.get_by_test_id("user-list")).to_contain_text("bob")
    shot("09-users")


def test_a_non_admin_sees_no_card_and_is_refused(page: Page, server: Server, shot) -> None:
    login(page, server, "bob", USER_PW)
    expect(page.get_by_test_id("no-modules")).to_be_visible()
    expect(page.get_by_test_id("backup-card")).to_have_count(0)
    shot("10-non-admin-eh")
    response = page.goto(server.url + "/admin/backup")
    assert response is not None and response.status == 403
    expect(page.get_by_test_id("forbidden")).to_be_visible()
    shot("11-non-admin-403")
