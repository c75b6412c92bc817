"""Checked, not hoped: a backup made and a restore dialog opened and closed with the keyboard alone, each stop
with a visible focus ring; the backup page with its toasts and state badges passes axe-core's WCAG 2.1 AA rules."""

from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from .conftest import ADMIN_PW, Server
from .test_design import AXE_TAGS
from .test_journeys import TIMEOUT, login

REACHED = """(want) => {
    const e = document.activeElement;
    if (!e || e === document.body) return false;
    if (want.testid) {
        const host = e.closest('[data-testid]');
        return e.getAttribute('data-testid') === want.testid || (!!host && host.getAttribute('data-testid') === want.testid);
    }
    return (e.getAttribute('aria-label') || e.innerText || '').trim().startsWith(want.name);
}"""
RING = """() => {
    const s = getComputedStyle(document.activeElement);
    return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
}"""


def tab_to(page: Page, *, testid: str | None = None, name: str | None = None, limit: int = 200) -> None:
    """Press Tab until the focus is on the element (its test id, or an accessible name starting so)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(REACHED, {"testid": testid, "name": name}):
            assert page.evaluate(RING), f"no visible focus ring on {testid or name}"
            return
    raise AssertionError(f"Tab never reached {testid or name}")


def serious_violations(page: Page) -> list[tuple[str, str, list[str]]]:
    """axe-core's WCAG 2.1 AA violations of serious or critical impact, once transitions have ended."""
    page.wait_for_function("() => document.getAnimations().every((a) => a.playState !== 'running')")
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS}})
    return [(v["id"], v["help"], [n["html"][:160] for n in v["nodes"]][:5])
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def test_a_backup_and_a_restore_dialog_with_the_keyboard_alone(page: Page, server: Server) -> None:
    login(page, server, "alice", ADMIN_PW, "/admin/backup")
    expect(page.get_by_test_id("backup-table")).to_be_visible(timeout=TIMEOUT)
    page.locator("body").focus()
    tab_to(page, testid="description")
    page.keyboard.type("keyboard only")
    tab_to(page, testid="create-button")
    page.keyboard.press("Enter")
    card = page.get_by_test_id("job-create").filter(has_text="keyboard only")
    expect(card.get_by_test_id("job-status")).to_have_text("Finished successfully", timeout=TIMEOUT)
    expect(page.get_by_test_id("backup-table")).to_contain_text("verified", timeout=TIMEOUT)
    # the page with its toasts and a verified backup's badge (Quasar's own green and cyan failed here)
    expect(page.locator(".q-notification").first).to_be_visible()
    assert serious_violations(page) == []

    page.locator("body").focus()
    tab_to(page, name="Restore backup_")  # the first row's labelled Restore button
    page.keyboard.press("Enter")
    confirm = page.get_by_test_id("restore-confirm")
    expect(confirm).to_be_visible(timeout=TIMEOUT)
    tab_to(page, testid="restore-confirm")  # the dialog's own controls take the focus in turn
    tab_to(page, testid="restore-close")
    page.keyboard.press("Enter")
    expect(confirm).to_be_hidden(timeout=TIMEOUT)
