"""GET /metrics: Prometheus text read at scrape time, parsed with the official parser; who may read it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nicegui.testing import User
from prometheus_client.parser import text_string_to_metric_families

from ehr_backup import __version__, metrics
from ehr_backup.audit import Actor
from ehr_backup.catalogue import as_utc
from ehr_backup.errors import BackupError
from ehr_backup.metrics import Facts, Run
from ehr_backup.service import BackupService

from .conftest import ACTOR, USER_PW, run_sql
from .test_api import api_routes, bearer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


async def test_metrics_after_real_backups_verifications_and_failures(user: User, accounts, service: BackupService,
                                                                     web_env, make_db) -> None:
    main = service.connection().dbname
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 300) g;")
    good = service.create(ACTOR, description="good")
    rotten = service.create(ACTOR, description="rotten")
    _flip_a_byte(Path(rotten.directory) / rotten.id)
    with pytest.raises(BackupError):
        service.verify(ACTOR, rotten.id)
    other_url = make_db()
    other = other_url.rsplit("/", 1)[1]
    from ehr_backup.pg import ConnInfo
    other_ok = service.create(ACTOR, description="other", conn=ConnInfo.parse(other_url))
    run_sql(web_env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres", f'DROP DATABASE "{other}" WITH (FORCE)')
    with pytest.raises(BackupError):
        service.create(ACTOR, description="gone", conn=ConnInfo.parse(other_url))
    service.schedule_create(ACTOR, "nightly", cron="30 2 * * *", description="Nightly {date}")
    token = accounts.create_token(Actor("t"), "alice", "prometheus", scope="metrics")

    r = await user.http_client.get("/metrics", headers=bearer(token))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = parse(r.text)
    assert value(s, "ehr_backup_info", version=__version__) == 1
    # the newest good backup is the first one: the second failed its read-back
    good_row = service.get(good.id)
    assert value(s, "ehr_backup_last_success_timestamp_seconds", database=main) == \
        as_utc(good_row.finished_at).timestamp()
    assert value(s, "ehr_backup_last_success_size_bytes", database=main) == good_row.size
    assert value(s, "ehr_backup_last_success_duration_seconds", database=main) == good_row.duration_s
    assert value(s, "ehr_backup_last_backup_success", database=main) == 0
    assert value(s, "ehr_backup_backups_total", database=main, outcome="completed") == 2
    assert value(s, "ehr_backup_backups_total", database=main, outcome="failed") == 0
    assert value(s, "ehr_backup_verifications", database=main, outcome="ok") == 1
    assert value(s, "ehr_backup_verifications", database=main, outcome="failed") == 1
    assert value(s, "ehr_backup_last_verification_success", database=main) == 0
    assert value(s, "ehr_backup_last_verification_timestamp_seconds", database=main) == \
        as_utc(service.get(rotten.id).verified_at).timestamp()
    # the other database: one good backup, then a failed one (its database was dropped)
    assert value(s, "ehr_backup_backups_total", database=other, outcome="completed") == 1
    assert value(s, "ehr_backup_backups_total", database=other, outcome="failed") == 1
    assert value(s, "ehr_backup_last_backup_success", database=other) == 0
    assert value(s, "ehr_backup_last_success_timestamp_seconds", database=other) == \
        as_utc(service.get(other_ok.id).finished_at).timestamp()
    # storage, jobs, schedules, and every source read
    sizes = sum(service.get(i).size or 0 for i in (good.id, rotten.id, other_ok.id))
    assert value(s, "ehr_backup_location_used_bytes", location="default") == sizes
    assert value(s, "ehr_backup_location_free_bytes", location="default") > 0
    assert value(s, "ehr_backup_location_backups", location="default") == 3
    assert value(s, "ehr_backup_jobs_running", kind="create") == 0
    assert value(s, "ehr_backup_schedules", state="enabled") == 1
    assert value(s, "ehr_backup_schedules_failing") == 0
    assert value(s, "ehr_backup_schedule_failing", schedule="nightly", kind="backup") == 0
    assert value(s, "ehr_backup_schedule_next_run_timestamp_seconds", schedule="nightly") > datetime.now().timestamp()
    assert {value(s, "ehr_backup_metrics_source_up", source=x) for x in ("catalogue", "storage", "jobs",
                                                                          "schedules")} == {1}
    if getattr(service, "drills", None) is None:
        assert not any(n.startswith("ehr_backup_last_drill") for n in names(s))

    # rotation or delete never make a counter go down
    service.delete(ACTOR, good.id)
    after = parse((await user.http_client.get("/metrics", headers=bearer(token))).text)
    assert value(after, "ehr_backup_backups_total", database=main, outcome="completed") == 2
    assert value(after, "ehr_backup_last_success_timestamp_seconds", database=main) is None  # none good left


async def test_an_admin_token_or_session_may_read_metrics_others_may_not(user: User, accounts) -> None:
    admin = accounts.create_token(Actor("t"), "alice")
    bobs = accounts.create_token(Actor("t"), "bob")
    assert (await user.http_client.get("/metrics", headers=bearer(admin))).status_code == 200
    _, session = accounts.login("alice", "correct-horse-battery", "127.0.0.1")
    assert (await user.http_client.get("/metrics", cookies={"ehr_session": session})).status_code == 200
    _, bob_session = accounts.login("bob", USER_PW, "127.0.0.1")
    for kwargs in ({"headers": bearer(bobs)}, {"cookies": {"ehr_session": bob_session}}):
        r = await user.http_client.get("/metrics", **kwargs)
        assert r.status_code == 403 and set(r.json()) == {"error"}
    anon = await user.http_client.get("/metrics")
    assert anon.status_code == 401 and anon.headers["www-authenticate"] == "Bearer"  # not a redirect to /login
    assert "token" in anon.json()["error"]
    bad = await user.http_client.get("/metrics", headers=bearer("ehrb_not-a-real-token"))
    assert bad.status_code == 401
    refused = {(e.actor, e.detail) for e in accounts._audit.entries(action="access") if e.outcome == "refused"}
    assert ("bob", "administrators or metrics tokens only") in refused
    # a disabled user's metrics token stops working, as any of their tokens
    metrics_of_bob = accounts.create_token(Actor("t"), "bob", scope="metrics")
    assert (await user.http_client.get("/metrics", headers=bearer(metrics_of_bob))).status_code == 200
    accounts.update_user(Actor("alice"), "bob", disabled=True)
    assert (await user.http_client.get("/metrics", headers=bearer(metrics_of_bob))).status_code == 401


async def test_a_metrics_token_is_refused_403_by_every_admin_route(user: User, accounts) -> None:
    token = accounts.create_token(Actor("t"), "alice", "prometheus", scope="metrics")  # even an admin's
    routes = api_routes()
    assert len(routes) >= 10
    for method, path in routes:
        r = await user.http_client.request(method, path, json={}, headers=bearer(token))
        assert r.status_code == 403, (method, path)
        assert r.json() == {"error": "this token may only read /metrics"}
    # pages take no tokens at all: the login page, never the page
    page = await user.http_client.get("/admin/users", headers=bearer(token), follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_an_unknown_token_scope_is_refused(accounts) -> None:
    with pytest.raises(BackupError, match="scope"):
        accounts.create_token(Actor("t"), "alice", scope="everything")


def test_the_cli_makes_a_metrics_token_that_reads_metrics_only(env: dict[str, str], service: BackupService) -> None:
    from ehr_backup.auth import AuthService

    from .test_cli import cli
    assert cli(env, "user", "add", "alice", "--admin", input_="correct-horse-battery\n").returncode == 0
    made = cli(env, "token", "create", "alice", "--scope", "metrics", "--label", "prometheus")
    assert made.returncode == 0, made.stderr
    assert "for GET /metrics only" in made.stdout
    token = made.stdout.strip().splitlines()[-1]
    listed = json.loads(cli(env, "token", "list", "--json").stdout)["tokens"]
    assert [(t["scope"], t["label"]) for t in listed] == [("metrics", "prometheus")]
    principal = AuthService(service.db, service.audit, service.settings).token(token)
    assert principal.scope == "metrics"
    assert cli(env, "token", "create", "alice", "--scope", "root").returncode == 2
    assert "--scope" in cli(env, "token", "create", "--help").stdout


@pytest.fixture
def public_metrics(web_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_BACKUP_METRICS_PUBLIC", "1")


async def test_metrics_are_open_without_a_token_only_when_configured(public_metrics, user: User, accounts) -> None:
    r = await user.http_client.get("/metrics")
    assert r.status_code == 200 and "ehr_backup_info" in r.text
    # the admin API is not opened by it
    assert (await user.http_client.get("/api/admin/backup/list")).status_code == 401


# ----- a source that cannot be read (the real drills are tested in tests/test_drills.py) --------------

def test_a_source_that_fails_is_reported_and_the_rest_still_scraped(service: BackupService,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def latest(self) -> list[dict[str, Any]]:
            raise RuntimeError("drills table missing")

    service.drills = Broken()  # type: ignore[attr-defined]
    s = parse(metrics.render(metrics.make_registry(service, lambda: ["create"])).decode())
    assert value(s, "ehr_backup_metrics_source_up", source="drills") == 0
    assert value(s, "ehr_backup_metrics_source_up", source="catalogue") == 1
    assert value(s, "ehr_backup_jobs_running", kind="create") == 1
    assert "cannot read drills" in caplog.text and all(r.levelname == "WARNING" for r in caplog.records
                                                       if "drills" in r.getMessage())


# ----- the pure part --------------------------------------------------------------------------------------

def test_families_from_facts_alone() -> None:
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    runs = [Run("ehr", "completed", finished_at=t, duration_s=3.5, size=1000, verified_at=t, verify_ok=True),
            Run("ehr", "failed", created_at=t.replace(hour=5)),
            Run("ehr", "running", created_at=t.replace(hour=6)),
            Run("", "discovered", origin="discovered", created_at=t)]
    facts = Facts(version="9.9", runs=runs, outcomes={("ehr", "completed"): 4, ("ehr", "failed"): 1},
                  locations=[{"key": "default", "path": "/b", "freeBytes": 10, "usedBytes": 1000, "backups": 1,
                              "fullAt": "2026-02-01T00:00:00Z"},
                             {"key": "custom", "path": "/mnt/x", "freeBytes": None, "usedBytes": 0, "backups": 0,
                              "fullAt": None}],
                  jobs=["restore"], schedules=[{"name": "n", "kind": "backup", "enabled": True, "failing": True,
                                                "nextRuns": []}, {"name": "off", "kind": "verify", "enabled": False}])
    s = parse(_expose(metrics.families(facts)))
    assert value(s, "ehr_backup_info", version="9.9") == 1
    assert value(s, "ehr_backup_last_success_timestamp_seconds", database="ehr") == t.timestamp()
    assert value(s, "ehr_backup_last_backup_success", database="ehr") == 0  # the newest finished run failed
    assert value(s, "ehr_backup_backups_total", database="ehr", outcome="cancelled") == 0
    assert value(s, "ehr_backup_backups_total", database="ehr", outcome="completed") == 4
    assert value(s, "ehr_backup_verifications", database="unknown", outcome="never") == 1
    assert value(s, "ehr_backup_location_free_bytes", location="custom:/mnt/x") is None
    assert value(s, "ehr_backup_location_full_timestamp_seconds", location="default") == \
        datetime(2026, 2, 1, tzinfo=UTC).timestamp()
    assert value(s, "ehr_backup_jobs_running", kind="restore") == 1
    assert value(s, "ehr_backup_schedules_failing") == 1 and value(s, "ehr_backup_schedules", state="disabled") == 1
    assert not any(n.startswith("ehr_backup_last_drill") for n in names(s))  # no drills part: no drill metrics


def _expose(families: list) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    class Fixed:
        def collect(self):
            return families

    registry = CollectorRegistry()
    registry.register(Fixed())
    return generate_latest(registry).decode()


def test_tokens_made_before_scopes_existed_keep_their_full_rights(tmp_path: Path) -> None:
    import sqlite3

    from ehr_backup.db import Database
    path = tmp_path / "catalogue.sqlite3"
    Database(path).dispose()
    with sqlite3.connect(path) as conn:  # the table as an older version made it, with one token
        conn.execute("ALTER TABLE api_tokens DROP COLUMN scope")
        conn.execute("INSERT INTO users (username, password_hash, is_admin, disabled, created_at) "
                     "VALUES ('alice', '', 1, 0, '2025-01-01 00:00:00')")
        conn.execute("INSERT INTO api_tokens (user_id, label, token_hash, prefix, created_at) "
                     "VALUES (1, 'old', 'h', 'ehrb_x', '2025-01-01 00:00:00')")
    db = Database(path)
    try:
        from sqlmodel import select

        from ehr_backup.models import ApiToken
        with db.reading() as s:
            assert [t.scope for t in s.exec(select(ApiToken)).all()] == ["admin"]
    finally:
        db.dispose()
