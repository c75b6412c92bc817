"""The audit page's chain check shows how the log is protected, and why a tampered log is broken."""

from __future__ import annotations

from pathlib import Path

from nicegui.testing import User

from .conftest import metadata_sql
from .web_helpers import eventually, login


async def test_check_chain_shows_the_key_and_the_anchors(user: User, accounts) -> None:
    await login(user, next_="/admin/audit")
    user.find(marker="check-chain").click()
    await user.should_see("Chain intact")
    notes = user.find(marker="chain-notes").elements.pop()
    await eventually(lambda: "keyed: entries 1-" in notes.text and "anchors:" in notes.text, timeout=10)


async def test_check_chain_reports_removed_entries_and_a_missing_head(user: User, accounts,
                                                                      web_env: dict[str, str]) -> None:
    await login(user, next_="/admin/audit")
    data = Path(web_env["EHR_BACKUP_DATA_DIR"])
    metadata_sql(web_env, "DELETE FROM audit WHERE seq > 2")
    (data / "audit-head.json").unlink()
    user.find(marker="check-chain").click()
    await user.should_see("CHAIN BROKEN")
    result = user.find(marker="chain-result").elements.pop()
    assert "audit-head.json" in result.text and "missing" in result.text
