"""The audit page: a coloured badge for every outcome the log records (one vocabulary), and an empty state."""

from __future__ import annotations

import re
from pathlib import Path

from ehr_backup.audit import FINAL
from pages.theme import BADGES

ROOT = Path(__file__).resolve().parent.parent / "ehr_backup"


def test_each_outcome_written_anywhere_has_a_badge_colour() -> None:
    written = set()
    for path in ROOT.rglob("*.py"):  # outcomes are literal strings at the call sites of audit.record
        written |= set(re.findall(r'\.record\([^()]*?,\s*"(ok|started|failed|refused|throttled|cancelled|'
                                  r'interrupted|recovered|[a-z]+ed)"', path.read_text(), flags=re.S))
    assert {"ok", "failed", "refused", "recovered"} <= written  # the scan finds what it should
    missing = (written | set(FINAL) | {"started", "throttled"}) - set(BADGES)
    assert missing == set()
    assert BADGES["interrupted"] == BADGES["failed"]  # a crash mid-operation reads as a failure


async def test_the_audit_table_says_when_nothing_matches(user, accounts) -> None:
    from .web_helpers import eventually, login
    await login(user, next_="/admin/audit")
    table = user.find(marker="audit-table").elements.pop()
    assert table.props["no-data-label"] == "No audit entry matches the filter."
    user.find(marker="filter-user").type("nobody-at-all")
    user.find(marker="filter-apply").click()
    await eventually(lambda: table.rows == [], timeout=10)
    assert user.find(marker="audit-error").elements.pop().text == ""
