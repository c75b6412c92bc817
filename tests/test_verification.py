"""Every backup is proven right after it is written, and stored backups are re-read against media rot."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ehr_backup.service import BackupService
from ehr_backup.verification import Stored, due_for_reverify

from .conftest import ACTOR, run_sql
from .test_cli import cli

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)


def test_a_new_backup_is_read_back_at_once_and_the_outcome_kept(service: BackupService, env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 500) g;")
    record = service.create(ACTOR, description="proven")
    view = service.view(service.get(record.id))
    assert view["verifyOk"] is True and view["verifiedAt"] and "500" not in (view["verifyMessage"] or "x500")
    assert service.get(record.id).verify_duration_s is not None
    assert [e.outcome for e in service.audit.entries(action="verify")] == ["ok"]


def test_verify_all_catches_a_corrupted_file_records_it_and_fails(env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 2000) g;")
    made = [json.loads(cli(env, "create", "--description", f"b{i}", "--json").stdout) for i in range(3)]
    rotten = Path(made[1]["path"])
    data = bytearray(rotten.read_bytes())
    data[len(data) // 2] ^= 0x40  # a bit flipped on the disk
    rotten.write_bytes(bytes(data))
    res = cli(env, "verify", "--all", "--json")
    assert res.returncode == 1 and "1 of 3 backups failed verification" in res.stderr
    out = json.loads(res.stdout)
    assert out["verified"] == 2 and out["failed"] == 1
    assert [r["backupId"] for r in out["results"] if not r["ok"]] == [made[1]["id"]]
    listed = {b["id"]: b for b in json.loads(cli(env, "list", "--json").stdout)["backups"]}
    assert listed[made[1]["id"]]["verifyOk"] is False and "not authentic" in listed[made[1]["id"]]["verifyMessage"]
    assert listed[made[0]["id"]]["verifyOk"] is True
    future = cli(env, "verify", "--all", "--since", "2099-01-01", "--json")
    assert future.returncode == 0 and json.loads(future.stdout)["verified"] == 0
    assert cli(env, "verify", "--all", "--since", "29/11/2026").returncode == 2
    assert cli(env, "verify").returncode == 2


def _stored(n: int, verified_days_ago: list[int | None]) -> list[Stored]:
    return [Stored(f"b{i:03d}", NOW - timedelta(days=n - i),
                   None if ago is None else NOW - timedelta(days=ago)) for i, ago in enumerate(verified_days_ago)]


def test_tonights_share_spreads_the_rereads_over_the_window() -> None:
    backups = _stored(60, [i % 30 for i in range(60)])  # verified 0..29 days ago, two of each
    tonight = due_for_reverify(backups, NOW, 30)
    assert len(tonight) == 2  # 60 backups over 30 nights
    assert {b.verified_at for b in backups if b.id in tonight} == {NOW - timedelta(days=29)}


def test_never_verified_and_overdue_backups_go_first_and_all_of_them() -> None:
    backups = _stored(10, [None, 40, 35, 1, 2, 3, 4, 5, 6, 7])
    assert due_for_reverify(backups, NOW, 30) == ["b000", "b001", "b002"]
    assert due_for_reverify(backups, NOW, 1) == [b.id for b in sorted(
        backups, key=lambda b: (b.verified_at or datetime.min.replace(tzinfo=timezone.utc), b.created_at))]
    assert due_for_reverify([], NOW, 30) == []


def test_the_nightly_share_is_verified_and_recorded(env: dict[str, str]) -> None:
    for i in range(3):
        assert cli(env, "create", "--description", f"n{i}").returncode == 0
    env = {**env, "EHR_BACKUP_REVERIFY_DAYS": "3"}
    first = json.loads(cli(env, "verify", "--due", "--json").stdout)
    assert first["verified"] == 1 and first["failed"] == 0
