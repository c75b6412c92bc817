"""Rotation on the backup page, driven by NiceGUI's simulated user against real backups."""

from __future__ import annotations

from pathlib import Path

from nicegui.testing import User

from .table_helpers import no_row, row_action, table_row
from .test_rotation_edges import history
from .web_helpers import eventually, login


def text(user: User, marker: str) -> str:
    return user.find(marker=marker).elements.pop().text


async def test_each_backup_shows_what_keeps_it_and_can_be_pinned_with_a_reason(user: User, accounts,
                                                                               web_env) -> None:
    ids = history(web_env, (0, 1))
    await login(user, next_="/admin/backup")
    row = await table_row(user, ids[0])
    assert row["keptText"] == "kept: daily, weekly, monthly, yearly, newest good"
    await table_row(user, ids[1])
    row_action(user, "pin", ids[1])
    await user.should_see(marker="pin-dialog")
    assert not user.find(marker="pin-confirm").elements.pop().enabled  # a pin needs a reason
    user.find(marker="pin-reason").type("legal hold, case <b>114</b>")
    user.find(marker="pin-confirm").click()
    await user.should_see("Backup pinned", retries=100)  # a pin is a write: give a loaded machine time
    row = await table_row(user, ids[1], lambda r: r["pinned"])
    assert row["pinReason"] == "legal hold, case <b>114</b>"  # shown as {{ text }} by the cell, never markup
    assert "pinned" in row["keptText"]
    pins = [(e.actor, e.action, e.target, e.detail) for e in accounts._audit.entries(action="pin")]
    assert pins == [("alice", "pin", ids[1], "legal hold, case <b>114</b>")]
    row_action(user, "pin", ids[1])
    await user.should_see("Unpin this backup?")
    user.find(marker="pin-confirm").click()
    await user.should_see("Backup unpinned", retries=100)
    await table_row(user, ids[1], lambda r: not r["pinned"])
    assert [e.outcome for e in accounts._audit.entries(action="unpin")] == ["ok"]


async def test_the_rotation_preview_counts_what_stays_lists_what_goes_and_applying_deletes_exactly_that(
        user: User, accounts, web_env) -> None:
    ids = history(web_env, (0, 1, 2, 3, 4))
    await login(user, next_="/admin/backup")
    await table_row(user, ids[4])
    user.find(marker="rotation-open").click()
    await user.should_see(marker="rotation-dialog")
    for kind, value in (("daily", 2), ("weekly", 0), ("monthly", 0), ("yearly", 0)):
        user.find(marker=f"rotation-{kind}").elements.pop().value = value
    user.find(marker="rotation-timezone").type("UTC")
    user.find(marker="rotation-preview").click()
    await eventually(lambda: text(user, "rotation-summary").startswith("2 kept, 3 to delete"))
    for bid in ids[2:]:
        await user.should_see(marker=f"rotation-row-{bid}")
    for bid in ids[:2]:  # kept ones are counted, not listed (the table's Rotation column says what keeps each)
        await user.should_not_see(marker=f"rotation-row-{bid}")
    assert text(user, "rotation-count-daily") == "daily: 2" and text(user, "rotation-count-weekly") == "weekly: 0"
    assert text(user, "rotation-count-newest-good") == "newest good: 1"
    assert text(user, "rotation-count-delete") == "to delete: 3"
    await user.should_see("delete: not kept by the policy (2 daily)")
    await user.should_see("day 4")  # by description, not by id
    assert text(user, "rotation-more-count") == ""
    apply = user.find(marker="rotation-apply").elements.pop()
    assert apply.enabled and apply.text == "Delete 3 backups"
    user.find(marker="rotation-daily").elements.pop().value = 3  # a changed policy needs a new preview
    assert not apply.enabled
    user.find(marker="rotation-daily").elements.pop().value = 2
    user.find(marker="rotation-preview").click()
    await eventually(lambda: apply.enabled)
    user.find(marker="rotation-apply").click()
    await eventually(lambda: text(user, "rotation-result").startswith("Deleted 3 backups"))
    assert sorted(p.name for p in Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).iterdir()) == sorted(
        ids[:2] + [i + ".verified" for i in ids[:2]])  # a backup's verification record goes with it
    deleted = {e.target for e in accounts._audit.entries(action="prune.delete") if e.outcome == "ok"}
    assert deleted == set(ids[2:])
    await no_row(user, ids[4])


async def test_a_policy_that_keeps_nothing_is_refused_in_the_page(user: User, accounts, web_env) -> None:
    history(web_env, (0,))
    await login(user, next_="/admin/backup")
    user.find(marker="rotation-open").click()
    await user.should_see(marker="rotation-dialog")
    for kind in ("daily", "weekly", "monthly", "yearly"):
        user.find(marker=f"rotation-{kind}").elements.pop().value = 0
    user.find(marker="rotation-preview").click()
    await user.should_see("this policy keeps nothing")
    assert not user.find(marker="rotation-apply").elements.pop().enabled
