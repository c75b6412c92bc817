"""The paged backup list: cursors walk every backup once, totals, filters, search and sort in SQLite, API and CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.db import Database
from ehr_backup.errors import InvalidInput
from ehr_backup.models import Drill
from ehr_backup.service import BackupService

from .catalogue_fill import fill
from .conftest import cli_env

API = "/api/admin/backup"


def walk(service: BackupService, **query) -> list[dict]:
    seen, cursor = [], None
    while True:
        page = service.list_page(**query, cursor=cursor)
        seen += page["backups"]
        cursor = page["nextCursor"]
        if cursor is None:
            return seen


def test_a_cursor_walk_sees_every_backup_once_in_order_with_the_total(service: BackupService, tmp_path: Path) -> None:
    ids = fill(service, 253, directory=tmp_path / "backups")
    first = service.list_page(limit=40)
    assert first["total"] == 253 and len(first["backups"]) == 40 and first["nextCursor"]
    seen = walk(service, limit=40)
    assert [b["id"] for b in seen] == ids  # newest first, each once
    oldest = walk(service, limit=100, descending=False)
    assert [b["id"] for b in oldest] == ids[::-1]


def test_sorting_by_a_column_with_empty_values_and_ties_still_walks_every_backup_once(service: BackupService,
                                                                                      tmp_path: Path) -> None:
    ids = fill(service, 120, directory=tmp_path / "backups")
    for sort in ("size", "description", "status", "kind", "database", "createdBy"):
        for descending in (True, False):
            seen = [b["id"] for b in walk(service, sort=sort, descending=descending, limit=17)]
            assert sorted(seen) == sorted(ids) and len(set(seen)) == len(ids), sort
    sizes = [b["size"] if b["size"] is not None else -1 for b in walk(service, sort="size", limit=50)]
    assert sizes == sorted(sizes, reverse=True)


def test_filters_and_search_run_in_the_query_and_the_total_counts_the_matches(service: BackupService,
                                                                             tmp_path: Path) -> None:
    fill(service, 60, directory=tmp_path / "backups")
    page = service.list_page(database="rh", kind="safety", limit=500)
    assert page["total"] == len(page["backups"]) == 10
    assert all(b["database"] == "rh" and b["kind"] == "safety" for b in page["backups"])
    urgent = service.list_page(search="urgent", limit=5)
    assert urgent["total"] == 9 and all("urgent" in b["description"] for b in urgent["backups"])
    by_id = service.list_page(search="_n17.sql", limit=5)  # the id is searched too
    assert [b["description"] for b in by_id["backups"]] == ["nightly 17 of rh"]
    assert service.list_page(search="100%_", limit=5)["total"] == 0  # LIKE wildcards are literal text
    assert service.list_page(status="failed", limit=500)["total"] == 12
    verified = service.list_page(status="verified", limit=500)
    assert verified["total"] == 20 and all(b["verifyOk"] for b in verified["backups"])


def test_bad_parameters_are_refused_with_a_reason(service: BackupService, tmp_path: Path) -> None:
    fill(service, 5, directory=tmp_path / "backups")
    for bad in ({"limit": 0}, {"limit": 501}, {"sort": "id; drop"}, {"location": "moon"}, {"kind": "x"},
                {"status": "nope"}, {"cursor": "not-a-cursor"}):
        with pytest.raises(InvalidInput):
            service.list_page(**bad)
    cursor = service.list_page(limit=2)["nextCursor"]
    with pytest.raises(InvalidInput, match="another sort order"):
        service.list_page(limit=2, cursor=cursor, sort="size")


def test_a_page_reads_drills_and_rotation_for_its_rows_only(service: BackupService, tmp_path: Path) -> None:
    ids = fill(service, 30, directory=tmp_path / "backups", files=30)
    with service.db.writing() as s:
        s.add(Drill(backup_id=ids[3], started_at=datetime(2026, 1, 1, tzinfo=UTC),
                    finished_at=datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
                    outcome="passed", recovery_s=2.5))
    page = {b["id"]: b for b in service.list_page(limit=10)["backups"]}
    whole = {b["id"]: b for b in service.list()}
    assert page[ids[3]]["lastDrill"]["outcome"] == "passed" and page[ids[3]]["lastDrill"]["recoverySeconds"] == 2.5
    for bid, b in page.items():  # the page's keptBy is what planning over everything says
        assert b["keptBy"] == whole[bid]["keptBy"] and b["lastDrill"] == whole[bid]["lastDrill"]
    service.pin(Actor("t"), ids[5], "legal hold")  # a change shows at once, not after the plan's few seconds
    assert "pinned" in {b["id"]: b for b in service.list_page(limit=10)["backups"]}[ids[5]]["keptBy"]


def test_an_older_catalogue_gets_the_new_indexes(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    Database(path).dispose()
    con = sqlite3.connect(path)
    con.execute("DROP INDEX ix_backups_database")
    con.commit()
    con.close()
    Database(path).dispose()
    names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"ix_backups_database", "ix_backups_kind", "ix_backups_size"} <= names
    plan = sqlite3.connect(path).execute("EXPLAIN QUERY PLAN SELECT count(*) FROM backups WHERE database='x'")
    plan = plan.fetchall()
    assert "ix_backups_database" in str(plan)


async def test_the_api_pages_with_limit_and_cursor_and_streams_everything_without(user: User, accounts,
                                                                                   web_env, tmp_path: Path) -> None:
    service = BackupService(Settings.from_env(web_env))  # the app's catalogue, filled from here
    ids = fill(service, 230, directory=Path(web_env["EHR_BACKUP_DEFAULT_DIR"]))
    token = accounts.create_token(Actor("t"), "alice")
    h = {"Authorization": f"Bearer {token}"}
    seen, cursor, totals = [], None, set()
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        r = await user.http_client.get(f"{API}/list", params=params, headers=h)
        assert r.status_code == 200
        body = r.json()
        totals.add(body["total"])
        seen += [b["id"] for b in body["backups"]]
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert seen == ids and totals == {230}
    r = await user.http_client.get(f"{API}/list", params={"limit": 5, "search": "urgent", "database": "ehr",
                                                           "sort": "size", "order": "asc"}, headers=h)
    body = r.json()
    sizes = [-1 if b["size"] is None else b["size"] for b in body["backups"]]
    assert body["total"] == 17 and sizes == sorted(sizes)
    everything = await user.http_client.get(f"{API}/list", headers=h)
    assert [b["id"] for b in everything.json()["backups"]] == ids and "total" not in everything.json()
    one_place = await user.http_client.get(f"{API}/list", params={"location": "desktop"}, headers=h)
    assert one_place.json() == {"backups": []}
    for bad in ({"limit": 0}, {"sort": "nope"}, {"cursor": "zzz"}, {"location": "moon"}):
        r = await user.http_client.get(f"{API}/list", params=bad, headers=h)
        assert r.status_code == 422 and "error" in r.json(), bad
    service.db.dispose()


def test_the_cli_pages_with_limit_and_cursor(env: dict[str, str], service: BackupService) -> None:
    ids = fill(service, 25, directory=Path(env["EHR_BACKUP_DEFAULT_DIR"]))
    run = [sys.executable, "-m", "ehr_backup.cli"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*run, *args], env=cli_env(env), capture_output=True, text=True, timeout=120)

    seen, cursor = [], None
    while True:
        out = cli("list", "--limit", "10", "--json", *(["--cursor", cursor] if cursor else []))
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        assert body["total"] == 25
        seen += [b["id"] for b in body["backups"]]
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert seen == ids
    human = cli("list", "--limit", "3", "--search", "urgent")
    assert "3 of 4 backups; next page: --cursor " in human.stdout
    assert cli("list", "--limit", "0").returncode == 2
