"""The list's rotation plan and the storage and dashboard figures are reused until the catalogue changes,
whichever process changes it."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from ehr_backup.audit import Actor
from ehr_backup.change_memo import ChangeMemo
from ehr_backup.config import Settings
from ehr_backup.db import Database
from ehr_backup.service import BackupService

from .catalogue_fill import fill


def kept(service: BackupService, backup_id: str) -> list[str]:
    return {b["id"]: b for b in service.list_page(limit=20)["backups"]}[backup_id]["keptBy"]


def test_a_pin_made_by_another_process_shows_in_the_next_page_at_once(service: BackupService, env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    ids = fill(service, 40, directory=tmp_path / "backups", files=40)
    assert "pinned" not in kept(service, ids[5])  # the server has planned rotation and keeps the plan
    other = BackupService(Settings.from_env(env))  # the command line, a cron job: its own catalogue object
    try:
        other.pin(Actor("cli"), ids[5], "legal hold")
    finally:
        other.db.dispose()
    assert "pinned" in kept(service, ids[5])  # not after the plan's time bound


def test_the_change_counter_moves_with_every_insert_update_and_delete_of_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = Database(path)
    db.dispose()
    con = sqlite3.connect(path, isolation_level=None)  # plain SQL, as any other writer would

    def counter() -> int:
        return int(con.execute("SELECT n FROM catalogue_changes").fetchone()[0])

    before = counter()
    con.execute("INSERT INTO backups (id, location, directory, description, kind, status, compression, database, "
                "created_at, created_by, origin, pinned) VALUES ('b1', 'default', '/x', '', 'manual', 'completed', "
                "'gzip', 'ehr', '2026-01-01 00:00:00', 't', 'catalogue', 0)")
    assert counter() == before + 1
    con.execute("UPDATE backups SET pinned = 1 WHERE id = 'b1'")
    assert counter() == before + 2
    con.execute("DELETE FROM backups WHERE id = 'b1'")
    assert counter() == before + 3
    con.execute("CREATE TABLE other (x)")
    con.execute("INSERT INTO other VALUES (1)")  # writes to other tables (audit, sessions) do not count
    assert counter() == before + 3
    con.close()


def test_an_older_catalogue_gets_the_change_counter(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    Database(path).dispose()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("DROP TRIGGER backups_changed_update")
    con.execute("DROP TABLE catalogue_changes")
    con.close()
    Database(path).dispose()  # opening it again, as a new version would
    con = sqlite3.connect(path)
    assert con.execute("SELECT n FROM catalogue_changes").fetchone() == (0,)
    assert {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")} >= {
        "backups_changed_insert", "backups_changed_update", "backups_changed_delete"}
    con.close()


def test_storage_and_dashboard_figures_follow_backups_added_by_another_process(service: BackupService,
                                                                              env: dict[str, str],
                                                                              tmp_path: Path) -> None:
    fill(service, 30, directory=tmp_path / "backups")
    counted = sum(d["backups"] for d in service.status(points=10)["databases"])  # read, and kept
    cards = {c["database"]: c for c in service.dashboard()}
    other = BackupService(Settings.from_env(env))  # the command line: its own catalogue object
    try:
        new = fill(other, 3, directory=tmp_path / "backups", start=datetime(2026, 12, 1, tzinfo=UTC))
    finally:
        other.db.dispose()
    assert sum(d["backups"] for d in service.status(points=10)["databases"]) == counted + 3  # all 3 completed
    now = {c["database"]: c for c in service.dashboard()}
    assert cards["ehr"]["lastGoodId"] != new[0] and now["ehr"]["lastGoodId"] == new[0]


def test_a_memo_recomputes_only_when_the_counter_moves() -> None:
    class Counter:
        n = 0

        def changes(self) -> int:
            return self.n

    counter, made = Counter(), []
    memo = ChangeMemo(counter)

    def make() -> int:
        made.append(counter.n)
        return counter.n * 10

    assert memo.get("k", make) == 0 and memo.get("k", make) == 0 and made == [0]
    counter.n = 1
    assert memo.get("k", make) == 10 and made == [0, 1]
    assert memo.get(("other", 1), make) == 10 and made == [0, 1, 1]  # keys are kept apart


def test_requests_arriving_together_after_a_change_plan_each_database_once(service: BackupService,
                                                                          tmp_path: Path) -> None:
    ids = fill(service, 2000, directory=tmp_path / "backups", files=20)
    service.list_page(limit=10)  # planned and kept
    service.pin(Actor("t"), ids[0], "legal hold")  # a change: the next page plans again
    plans = []
    real = service.rotation.plan

    def counted(*args, **kwargs):  # the real planner, counted
        plans.append(1)
        return real(*args, **kwargs)

    service.rotation.plan = counted  # type: ignore[method-assign]
    with ThreadPoolExecutor(10) as pool:
        pages = list(pool.map(lambda _: service.list_page(limit=10), range(10)))
    assert len(plans) == 2  # one per database on the page (ehr, rh), not one per request
    assert all("pinned" in {b["id"]: b for b in p["backups"]}[ids[0]]["keptBy"] for p in pages)
