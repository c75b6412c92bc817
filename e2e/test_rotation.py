"""Rotation in a real browser: verify backups, pin one with a reason, preview rotation, apply it."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from .conftest import ADMIN_PW, Server
from .test_journeys import TIMEOUT, _ensure_backup, login


def test_admin_pins_a_backup_previews_rotation_and_applies_it(page: Page, server: Server, shot) -> None:
    login(page, server, "alice", ADMIN_PW, "/admin/backup")
    oldest, middle, newest = (_ensure_backup(page, server, f"rotation {n}").name for n in ("one", "two", "three"))
    expect(page.get_by_test_id(f"kept-{newest}")).to_be_visible(timeout=TIMEOUT)  # the list has reloaded
    for bid in (oldest, middle, newest):  # only backups proven intact count for rotation
        page.get_by_test_id(f"verify-{bid}").click()
        expect(page.get_by_test_id(f"verified-{bid}")).to_contain_text("verified 20", timeout=TIMEOUT)
    expect(page.get_by_test_id(f"kept-{newest}")).to_contain_text("newest good")

    page.get_by_test_id(f"pin-{oldest}").click()
    expect(page.get_by_test_id("pin-confirm")).to_be_disabled()
    page.get_by_test_id("pin-reason").fill("legal hold, case 2026-114")
    shot("13-pin-a-backup")
    page.get_by_test_id("pin-confirm").click()
    expect(page.get_by_test_id(f"pin-reason-{oldest}")).to_have_text("Pinned: legal hold, case 2026-114",
                                                                      timeout=TIMEOUT)
    expect(page.get_by_test_id(f"kept-{oldest}")).to_contain_text("pinned")

    page.get_by_test_id("rotation-open").click()
    for kind, value in (("daily", "1"), ("weekly", "0"), ("monthly", "0"), ("yearly", "0")):
        page.get_by_test_id(f"rotation-{kind}").fill(value)
    page.get_by_test_id("rotation-preview").click()
    # kept backups are counted per rule; those that go are listed by description, a page at a time
    expect(page.get_by_test_id(f"rotation-row-{middle}")).to_contain_text("delete: not kept by the policy (1 daily)",
                                                                          timeout=TIMEOUT)
    expect(page.get_by_test_id(f"rotation-row-{middle}")).to_contain_text("rotation two")
    expect(page.get_by_test_id(f"rotation-row-{newest}")).to_have_count(0)
    expect(page.get_by_test_id(f"rotation-row-{oldest}")).to_have_count(0)
    expect(page.get_by_test_id("rotation-count-daily")).to_contain_text(re.compile(r"daily: [1-9]"))
    expect(page.get_by_test_id("rotation-count-pinned")).to_contain_text(re.compile(r"pinned: [1-9]"))
    expect(page.get_by_test_id("rotation-apply")).to_be_enabled()
    # earlier journeys in this session made backups too: the preview's count is what must go
    going = int(page.get_by_test_id("rotation-summary").inner_text().split(" to delete")[0].split(", ")[-1])
    assert going >= 1
    # the button's text starts with its icon's ligature (delete_sweep): match the words at its end
    expect(page.get_by_test_id("rotation-apply")).to_have_text(
        re.compile(f"Delete {going} backup{'s' if going != 1 else ''}$"))
    shot("14-rotation-preview")
    assert (server.backups_dir / middle).exists()
    page.get_by_test_id("rotation-apply").click()
    expect(page.get_by_test_id("rotation-result")).to_contain_text(
        f"Deleted {going} backup{'s' if going != 1 else ''}", timeout=TIMEOUT)
    shot("15-rotation-applied")
    assert not (server.backups_dir / middle).exists()
    assert (server.backups_dir / oldest).exists() and (server.backups_dir / newest).exists()
