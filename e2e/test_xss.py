"""Untrusted names reach the page as text: hostile folder names run no script in a real browser."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from .conftest import ADMIN_PW, Server
from .test_journeys import login

PAYLOADS = ['a" :data-x="window.__pwned=1"', "b' :title='window.__pwned=2'", 'c :class="window.__pwned=3"',
            "d=1 :e=window.__pwned=4", "<img src=x onerror=window.__pwned=5>", 'f" @click="window.__pwned=6"',
            "g` ${window.__pwned=7}"]


def test_hostile_folder_names_are_shown_as_text_and_run_nothing(page: Page, server: Server, shot) -> None:
    home = Path(server.env["HOME"])
    for name in PAYLOADS:
        (home / "hostile" / name).mkdir(parents=True, exist_ok=True)
    login(page, server, "alice", ADMIN_PW, "/admin/backup")
    title = page.title()
    page.get_by_test_id("location").get_by_role("combobox").click()
    page.get_by_role("option", name="Custom").click()
    page.get_by_label("Folder (absolute path)").fill(str(home / "hostile"))
    page.get_by_test_id("browse").click()
    expect(page.get_by_test_id("browse-path")).to_have_text(str(home / "hostile"))
    page.wait_for_timeout(500)
    assert page.evaluate("window.__pwned") is None  # a name turned into a :prop would have run by now
    for name in PAYLOADS:
        button = page.get_by_test_id(f"dir-{name}")
        expect(button).to_be_visible()
        expect(button).to_contain_text(name)
        button.hover()
    shot("12-hostile-folder-names")
    page.get_by_test_id(f"dir-{PAYLOADS[-2]}").click()  # clicking one navigates, runs nothing
    expect(page.get_by_test_id("browse-path")).to_have_text(str(home / "hostile" / PAYLOADS[-2]))
    assert page.evaluate("window.__pwned") is None
    assert page.title() == title
    assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
