"""The rotation preview with thousands of backups: counts per rule, a page of deletions, "and N more"."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.service import BackupService
from pages.rotation import LABELS
from pages.rotation_preview import PAGE, bucket_counts, more_text

from .catalogue_fill import fill
from .web_helpers import eventually, login


def test_counts_name_every_gfs_bucket_and_each_other_rule_that_keeps_something() -> None:
    plan = {"keep": [{"reasons": ["daily", "weekly", "newest-good"]}, {"reasons": ["daily"]},
                     {"reasons": ["pinned"]}, {"reasons": ["unverified"]}], "forget": [{}, {}]}
    assert bucket_counts(plan, LABELS) == [
        ("daily", "daily", 2), ("weekly", "weekly", 1), ("monthly", "monthly", 0), ("yearly", "yearly", 0),
        ("pinned", "pinned", 1), ("newest-good", "newest good", 1), ("unverified", "not verified yet", 1)]
    assert more_text(25, 9_975 + 25) == "and 9,975 more"
    assert more_text(3, 3) == "" and more_text(0, 0) == ""


def _text(user: User, marker: str) -> str:
    return user.find(marker=marker).elements.pop().text


async def test_thousands_of_backups_preview_as_counts_and_a_page_of_what_goes(user: User, accounts,
                                                                              web_env) -> None:
    service = BackupService(Settings.from_env(web_env))
    directory = Path(web_env["EHR_BACKUP_DEFAULT_DIR"])
    ids = fill(service, 3000, directory=directory, files=3000, start=datetime.now(UTC))
    service.db.dispose()
    await login(user, next_="/admin/backup")
    await user.should_see(marker="backup-table", retries=100)
    user.find(marker="rotation-open").click()
    await user.should_see(marker="rotation-dialog")
    for kind, value in (("daily", 7), ("weekly", 4), ("monthly", 0), ("yearly", 0)):
        user.find(marker=f"rotation-{kind}").elements.pop().value = value
    user.find(marker="rotation-preview").click()
    await user.should_see(marker="rotation-count-delete", retries=300)
    summary = _text(user, "rotation-summary")
    found = re.match(r"([\d,]+) kept, ([\d,]+) to delete", summary)
    assert found, summary
    kept, going = (int(n.replace(",", "")) for n in found.groups())
    assert kept + going == 3000 and going > 1000
    assert _text(user, "rotation-count-delete") == f"to delete: {going:,}"
    assert _text(user, "rotation-count-daily").startswith("daily: ") and int(
        _text(user, "rotation-count-daily").split(": ")[1]) > 0
    for bucket in ("weekly", "monthly", "yearly", "pinned"):
        await user.should_see(marker=f"rotation-count-{bucket}")
    def rows() -> list:
        return [m for m in user.find(marker="rotation-going").elements.pop().descendants()
                if any(str(x).startswith("rotation-row-") for x in m._markers)]

    # the page of what goes is drawn after the counts (its descriptions are read for that page only)
    await eventually(lambda: len(rows()) >= PAGE, state=lambda: len(rows()))
    shown = rows()
    assert len(shown) == PAGE  # a page, not thousands of rows
    assert _text(user, "rotation-more-count") == f"and {going - PAGE:,} more"
    listed = [e.text for row in shown for e in row.descendants() if hasattr(e, "text")]
    assert any(re.fullmatch(r"nightly \d+ of (ehr|rh)( urgent)?", t) for t in listed)  # descriptions,
    assert not any(t.startswith("backup_") for t in listed)  # never a raw id
    user.find(marker="rotation-more").click()
    await eventually(lambda: _text(user, "rotation-more-count") == f"and {going - 2 * PAGE:,} more",
                     timeout=20)
    apply = user.find(marker="rotation-apply").elements.pop()
    assert apply.enabled and apply.text == f"Delete {going} backups"
    assert len(ids) == 3000
