"""A restore drill from the backup page in a real browser, then its evidence report page and PDF."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from .conftest import ADMIN_PW, Server
from .test_journeys import TIMEOUT, _ensure_backup, login


def test_admin_runs_a_drill_from_the_backup_page_and_opens_its_report(page: Page, server: Server, shot,
                                                                      tmp_path: Path) -> None:
    login(page, server, "alice", ADMIN_PW, "/admin/backup")
    bid = _ensure_backup(page, server, "drill journey").name
    expect(page.get_by_test_id(f"drill-{bid}")).to_be_visible(timeout=TIMEOUT)
    page.get_by_test_id(f"drill-{bid}").click()
    expect(page.get_by_test_id("job-drill").last).to_be_visible(timeout=TIMEOUT)
    link = page.get_by_test_id("drill-report-link").last
    expect(link).to_contain_text("(passed)", timeout=TIMEOUT)
    shot("20-drill-finished")
    link.click()
    page.wait_for_url(lambda url: "/admin/backup/drill/" in url)
    expect(page.get_by_test_id("drill-outcome")).to_have_text("PASSED", timeout=TIMEOUT)
    expect(page.get_by_test_id("drill-tables")).to_contain_text("public.patients")
    expect(page.get_by_test_id("drill-tables")).to_contain_text("300")
    expect(page.get_by_test_id("drill-facts")).to_contain_text(bid)
    shot("21-drill-report")
    with page.expect_download() as info:
        page.get_by_test_id("drill-download-pdf").click()
    saved = tmp_path / "report.pdf"
    info.value.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF")
    # the report reads on a phone too: facts stack label above value, nothing scrolls sideways
    page.set_viewport_size({"width": 390, "height": 900})
    page.reload()
    expect(page.get_by_test_id("drill-outcome")).to_have_text("PASSED", timeout=TIMEOUT)
    page.wait_for_timeout(300)
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"the drill report at 390 px is {scroll} px wide"
    shot("22-drill-report-390")
