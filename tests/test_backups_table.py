"""The backups table on /admin/backup: one page at a time from the service, search, filters, sort, states."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nicegui import Client, ui
from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.service import BackupService
from pages.backups_table import ago, table_row

from .catalogue_fill import fill
from .table_helpers import backup_table
from .web_helpers import eventually, login


def request(user: User, **pagination) -> None:
    """What Quasar sends when a page, a page size or a column header is clicked."""
    base = {"page": 1, "rowsPerPage": 25, "sortBy": "createdAt", "descending": True}
    user.find(marker="backup-table").trigger("request", {"pagination": {**base, **pagination}})


async def test_the_table_pages_searches_filters_and_sorts_in_the_service(user: User, accounts, web_env) -> None:
    service = BackupService(Settings.from_env(web_env))
    ids = fill(service, 240, directory=Path(web_env["EHR_BACKUP_DEFAULT_DIR"]), files=5)
    await login(user, next_="/admin/backup")
    await eventually(lambda: backup_table(user).pagination.get("rowsNumber") == 240)
    table = backup_table(user)
    assert [r["id"] for r in table.rows] == ids[:25]  # newest first, one page only
    assert table.rows[0]["sizeText"] == "1000 B" and table.rows[0]["createdAgo"].endswith("ago")
    assert next(c for c in table.columns if c["name"] == "size")["align"] == "right"

    request(user, page=3, rowsPerPage=50)
    await eventually(lambda: [r["id"] for r in backup_table(user).rows] == ids[100:150])
    request(user, sortBy="createdAt", descending=False, rowsPerPage=10)
    await eventually(lambda: [r["id"] for r in backup_table(user).rows] == ids[::-1][:10])
    request(user, sortBy="size", descending=True)
    await eventually(lambda: backup_table(user).pagination["sortBy"] == "size")
    sizes = [r["size"] for r in backup_table(user).rows]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] is not None

    user.find(marker="search").type("urgent")
    await eventually(lambda: backup_table(user).pagination["rowsNumber"] == 35)
    assert all("urgent" in r["description"] for r in backup_table(user).rows)
    user.find(marker="filter-database").elements.pop().value = "rh"
    await eventually(lambda: backup_table(user).pagination["rowsNumber"] == 17)
    user.find(marker="filter-kind").elements.pop().value = "safety"
    await eventually(lambda: backup_table(user).pagination["rowsNumber"] == 5)
    assert {(r["database"], r["kind"]) for r in backup_table(user).rows} == {("rh", "safety")}
    user.find(marker="search").clear()
    user.find(marker="filter-kind").elements.pop().value = "all"
    user.find(marker="filter-status").elements.pop().value = "failed"
    await eventually(lambda: backup_table(user).pagination["rowsNumber"] == 24)
    user.find(marker="search").type("no such backup")
    await eventually(lambda: backup_table(user).pagination["rowsNumber"] == 0)
    assert backup_table(user).props["no-data-label"] == "No backup matches the search and filters."
    service.db.dispose()


async def test_an_empty_catalogue_says_so_and_columns_can_be_hidden(user: User, accounts) -> None:
    await login(user, next_="/admin/backup")
    await eventually(lambda: backup_table(user).props.get("loading") is False)
    table = backup_table(user)
    assert table.rows == [] and table.props["no-data-label"].startswith("No backups yet")
    user.find(marker="columns").elements.pop().value = ["status", "createdAt"]
    assert table.props["visible-columns"] == ["description", "status", "createdAt", "actions"]


def test_a_row_shows_states_kinds_sizes_and_times_for_people() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    base = {"id": "b1", "description": "x", "status": "completed", "verifyOk": True,
            "verifiedAt": "2026-11-30T09:00:00Z",
            "verifyMessage": None, "origin": "catalogue", "kind": "safety", "createdAt": "2026-11-30T09:00:00.000Z",
            "size": 5 * 1024 * 1024, "location": "custom", "path": "/srv/nas/b1", "database": "ehr", "createdBy": "al",
            "keptBy": [], "pinned": False, "pinReason": None, "schedule": None, "lastDrill": None}
    row = table_row(base, now)
    assert (row["stateLabel"], row["kindLabel"], row["sizeText"], row["createdAgo"]) == ("verified", "safety", "5.0 MB",
                                                                                        "3 h ago")
    assert row["locationPath"] == "/srv/nas" and row["createdUtc"] == "2026-11-30 09:00:00"
    assert {a["label"] for a in row["actions"]} >= {"Restore", "Delete"}
    failed = table_row({**base, "status": "failed", "verifyOk": None, "origin": "discovered"}, now)
    assert failed["stateLabel"] == "failed" and failed["kindLabel"] == "discovered"
    assert [a["name"] for a in failed["actions"] if a["enabled"]] == ["delete"]
    assert table_row({**base, "status": "missing"}, now)["stateColor"] == "brown-8"
    assert ago("2026-11-28T12:00:00Z", now) == "2 d ago"
    assert ago((now - timedelta(seconds=5)).isoformat(), now) == "just now"


async def test_a_client_that_never_connects_costs_no_catalogue_read(user: User, accounts, web_env) -> None:
    service = BackupService(Settings.from_env(web_env))
    fill(service, 50, directory=Path(web_env["EHR_BACKUP_DEFAULT_DIR"]))
    await login(user, next_="/eh")
    calls = []
    original = BackupService.list_page
    BackupService.list_page = lambda self, **kw: calls.append(kw) or original(self, **kw)  # type: ignore[method-assign]
    try:
        response = await user.http_client.get("/admin/backup")  # a script: the HTML, no websocket
        # the frame and a "Loading…" status only: the body is built once a browser connects (pages/deferred.py)
        assert response.status_code == 200 and "page-loading" in response.text
        assert "backup-table" not in response.text and "create-button" not in response.text
        client_id = re.search(r"'client_id': '([0-9a-f-]+)'", response.text).group(1)  # type: ignore[union-attr]
        assert len(Client.instances[client_id].elements) < 60  # the header's; with the body about 110
        assert calls == []
    finally:
        BackupService.list_page = original  # type: ignore[method-assign]
    service.db.dispose()
    assert ui is not None


def test_the_storage_status_gives_a_chart_a_few_hundred_points_over_the_whole_span(env, tmp_path: Path) -> None:
    service = BackupService(Settings.from_env(env))
    fill(service, 3000, directory=tmp_path / "many")
    full, few = service.status(), service.status(points=100)
    for whole, thin in zip(full["databases"], few["databases"], strict=True):
        assert whole["backups"] == thin["backups"] == len(whole["history"]) == 900  # completed ones of each
        assert len(thin["history"]) <= 101 and thin["history"][0] == whole["history"][0]
        assert thin["history"][-1] == whole["history"][-1] == thin["latest"]
        times = [h["at"] for h in thin["history"]]
        assert times == sorted(times)
    service.db.dispose()
