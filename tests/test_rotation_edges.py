"""Rotation and pins through the command line and the REST API, as an administrator or a script uses them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.catalogue import utcnow
from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import ACTOR, run_sql
from .test_api import API, bearer
from .test_cli import cli

ONLY_DAILY_2 = ("--keep-daily", "2", "--keep-weekly", "0", "--keep-monthly", "0", "--keep-yearly", "0",
                "--timezone", "UTC")


def history(env: dict[str, str], days: tuple[int, ...] = (0, 1, 2, 3, 4)) -> list[str]:
    """Real, verified backups recorded as made that many days ago (newest first)."""
    run_sql(env["DATABASE_URL"], "CREATE TABLE IF NOT EXISTS notes AS SELECT g FROM generate_series(1, 9) g;")
    service = BackupService(Settings.from_env(env))
    ids = []
    try:
        for n in days:
            record = service.create(ACTOR, description=f"day {n}")
            service.verify(ACTOR, record.id)
            service.catalogue.update(record.id, created_at=utcnow() - timedelta(days=n))
            ids.append(record.id)
    finally:
        service.db.dispose()
    return ids


def test_cli_prune_dry_run_then_prune_deletes_what_it_showed(env: dict[str, str]) -> None:
    ids = history(env)
    res = cli(env, "prune", "--dry-run", "--json", *ONLY_DAILY_2)
    assert res.returncode == 0, res.stderr
    preview = json.loads(res.stdout)
    assert {k["id"]: k["reasons"] for k in preview["keep"]} == {ids[0]: ["daily", "newest-good"], ids[1]: ["daily"]}
    assert [f["id"] for f in preview["forget"]] == ids[2:]
    assert preview["forget"][0]["reason"] == "not kept by the policy (2 daily)" and preview["deleted"] == []
    human = cli(env, "prune", "--dry-run", *ONLY_DAILY_2)
    assert f"forget  {ids[2]}  not kept by the policy (2 daily)" in human.stdout
    assert "2 kept, 3 would go (dry run: nothing deleted)" in human.stdout
    assert all((Path(env["EHR_BACKUP_DEFAULT_DIR"]) / i).exists() for i in ids)
    done = json.loads(cli(env, "prune", "--json", *ONLY_DAILY_2).stdout)
    assert done["deleted"] == ids[2:]
    assert sorted(p.name for p in Path(env["EHR_BACKUP_DEFAULT_DIR"]).iterdir()) == sorted(
        ids[:2] + [i + ".verified" for i in ids[:2]])  # a backup's verification record goes with it
    listed = json.loads(cli(env, "list", "--json").stdout)["backups"]
    assert [(b["id"], b["keptBy"], b["verification"]) for b in listed] == [
        (ids[0], ["daily", "weekly", "monthly", "yearly", "newest-good"], "ok"),
        (ids[1], ["daily", "weekly", "monthly", "yearly"], "ok")]  # the oldest, while counts are left


def test_cli_pin_and_unpin(env: dict[str, str]) -> None:
    ids = history(env, (0, 1, 2, 3))
    res = cli(env, "pin", ids[3], "--reason", "legal hold, case 114")
    assert res.returncode == 0 and res.stdout.strip() == f"pinned {ids[3]}: legal hold, case 114"
    done = json.loads(cli(env, "prune", "--json", *ONLY_DAILY_2).stdout)
    assert done["deleted"] == [ids[2]] and {k["id"]: k["reasons"] for k in done["keep"]}[ids[3]] == ["pinned"]
    listed = {b["id"]: b for b in json.loads(cli(env, "list", "--json").stdout)["backups"]}
    assert listed[ids[3]]["pinned"] is True and listed[ids[3]]["pinReason"] == "legal hold, case 114"
    assert "PINNED: legal hold, case 114" in cli(env, "list").stdout
    refused = cli(env, "delete", ids[3], "--yes")
    assert refused.returncode == 1 and "is pinned (legal hold, case 114); unpin it first" in refused.stderr
    assert json.loads(cli(env, "unpin", ids[3], "--json").stdout)["pinned"] is False
    assert json.loads(cli(env, "prune", "--json", *ONLY_DAILY_2).stdout)["deleted"] == [ids[3]]


@pytest.mark.parametrize(("args", "message"), [
    (("prune", "--keep-daily", "-1"), "keep-daily must be a whole number from 0 to 10000"),
    (("prune", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0", "--keep-yearly", "0"),
     "this policy keeps nothing"),
    (("prune", "--timezone", "Mars/Olympus_Mons"), "unknown time zone 'Mars/Olympus_Mons'"),
    (("prune", "--database", "no_such_db"), "no backups of a database named 'no_such_db'"),
    (("pin", "../../etc/passwd", "--reason", "x"), "invalid backup id"),
    (("unpin", "backup_2025-08-22T15-07-19-123Z_x.sql.gz.enc"), "no backup with id"),
])
def test_cli_rotation_errors_are_one_line(env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    res = cli(env, *args)
    assert res.returncode in (1, 2) and res.stdout == ""
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr


@pytest.fixture
def admin(accounts) -> Iterator[dict[str, str]]:
    yield bearer(accounts.create_token(Actor("t"), "alice"))


async def test_rest_prune_previews_unless_apply_is_true(user: User, admin, web_env) -> None:
    ids = history(web_env)
    policy = {"daily": 2, "weekly": 0, "monthly": 0, "yearly": 0, "timezone": "UTC"}
    r = await user.http_client.post(f"{API}/prune", json={"policy": policy}, headers=admin)
    assert r.status_code == 200 and r.json()["dryRun"] is True
    assert [f["id"] for f in r.json()["forget"]] == ids[2:] and r.json()["deleted"] == []
    assert (await user.http_client.post(f"{API}/prune", headers=admin)).json()["dryRun"] is True  # no body at all
    assert all((Path(web_env["EHR_BACKUP_DEFAULT_DIR"]) / i).exists() for i in ids)
    shown = [f["id"] for f in r.json()["forget"]]
    r = await user.http_client.post(f"{API}/prune", json={"policy": policy, "apply": True, "forget": shown[:2]},
                                    headers=admin)
    assert r.status_code == 200 and r.json()["deleted"] == shown[:2]  # only what the caller saw and named
    listed = (await user.http_client.get(f"{API}/list", headers=admin)).json()["backups"]
    assert [b["id"] for b in listed] == [*ids[:2], ids[4]]


async def test_rest_pin_unpin_and_a_pinned_backup_cannot_be_deleted(user: User, admin, web_env) -> None:
    bid = history(web_env, (0,))[0]
    r = await user.http_client.post(f"{API}/pin", json={"backupId": bid, "reason": "legal hold"}, headers=admin)
    assert r.status_code == 200 and r.json()["pinned"] is True and "pinned" in r.json()["keptBy"]
    r = await user.http_client.request("DELETE", f"{API}/delete", json={"backupId": bid}, headers=admin)
    assert r.status_code == 409 and "pinned" in r.json()["error"]
    r = await user.http_client.post(f"{API}/unpin", json={"backupId": bid}, headers=admin)
    assert r.status_code == 200 and r.json()["pinned"] is False and r.json()["pinReason"] is None
    r = await user.http_client.post(f"{API}/unpin", json={"backupId": bid}, headers=admin)
    assert r.status_code == 422 and r.json() == {"error": f"backup {bid} is not pinned"}


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/prune", {"policy": {"daily": -1}}, 422, ""),
    ("/prune", {"policy": {"daily": True}}, 422, ""),
    ("/prune", {"policy": {"daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}}, 422, "keeps nothing"),
    ("/prune", {"policy": {"timezone": "Nowhere/City"}}, 422, "unknown time zone"),
    ("/prune", {"location": "moon"}, 422, ""),
    ("/prune", {"database": "nope"}, 404, "no backups of a database named 'nope'"),
    ("/prune", {"apply": True, "forget": ["../../etc/passwd"]}, 422, "invalid backup id"),
    ("/prune", {"unexpected": 1}, 422, ""),
    ("/pin", {"backupId": "backup_2025-08-22T15-07-19-123Z_x.sql.gz.enc", "reason": "x"}, 404, "no backup"),
    ("/pin", {"backupId": "../../etc/passwd", "reason": "x"}, 422, "invalid backup id"),
    ("/pin", {"backupId": "backup_2025-08-22T15-07-19-123Z_x.sql.gz.enc"}, 422, ""),
    ("/pin", {"backupId": "backup_2025-08-22T15-07-19-123Z_x.sql.gz.enc", "reason": "x" * 501}, 422, ""),
])
async def test_rest_rotation_bad_input_is_a_clear_4xx(user: User, admin, path, body, status, message) -> None:
    r = await user.http_client.post(API + path, json=body, headers=admin)
    assert r.status_code == status and set(r.json()) == {"error"} and message in r.json()["error"], r.text
