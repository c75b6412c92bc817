"""Database profiles: names, URLs without passwords, password sources, and backups of several databases."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.errors import Busy, ConfigError, InvalidInput, NotFound
from ehr_backup.profiles import check_env_name, check_name, db_key, parse_url, split_key
from ehr_backup.retention import RetentionPolicy
from ehr_backup.scheduler import Scheduler
from ehr_backup.service import BackupService

from .conftest import ACTOR, Cluster, cli_env, drop_databases, query, run_sql, url_for


# ----- pure decisions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["site-b", "a", "ward_7", "x" * 40, "0clinic"])
def test_profile_names_of_the_allowed_characters_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Site", "-x", "a b", "a@b", "a/b", "x" * 41, "ä", "a\nb", "a'b", "..", 7])
def test_other_profile_names_are_refused_with_what_is_allowed(name: object) -> None:
    with pytest.raises(InvalidInput, match="lower-case letters a-z, digits"):
        check_name(name)


def test_a_url_holding_a_password_is_refused_and_the_message_says_how_to_give_it() -> None:
    for url in ("postgresql://u:s3cret@db.example.org/ehr", "host=db user=u password=s3cret dbname=ehr"):
        with pytest.raises(InvalidInput, match="--password-env VAR or --password-stdin") as info:
            parse_url(url)
        assert "s3cret" not in info.value.message
    assert parse_url("postgresql://u@db.example.org:5433/ehr").display == "u@db.example.org:5433/ehr"
    with pytest.raises(InvalidInput, match="must name a database"):
        parse_url("postgresql://u@db.example.org")


def test_password_variables_may_not_be_our_own_secrets() -> None:
    assert check_env_name("SITE_B_PGPASSWORD") == "SITE_B_PGPASSWORD"
    for name in ("BACKUP_ENCRYPTION_KEY", "EHR_BACKUP_AUDIT_KEY", "backup_encryption_old_keys", "DATABASE_URL"):
        with pytest.raises(InvalidInput, match="own settings or keys"):
            check_env_name(name)
    with pytest.raises(InvalidInput):
        check_env_name("A-B")


def test_rotation_keys_keep_two_profiles_databases_of_one_name_apart() -> None:
    assert db_key("ehr", None) == db_key("ehr", "default") == "ehr"
    assert db_key("ehr", "site-b") == "ehr@site-b" != db_key("ehr", "site-c")
    assert split_key("ehr@site-b") == ("ehr", "site-b")
    assert split_key("ehr") == ("ehr", None)
    assert split_key("we@ird") == ("we", "ird")  # profile-shaped tails are profiles: names never hold '@'
    assert split_key("odd@Name") == ("odd@Name", None)


# ----- profiles in the metadata database ----------------------------------------------------------------
def test_profiles_are_listed_after_the_implicit_default_and_never_show_a_password(
        service: BackupService, monkeypatch: pytest.MonkeyPatch) -> None:
    view = service.database_add(ACTOR, "site-b", "postgresql://backup@db.example.org:5433/ehr",
                                password="pw-that-must-not-leak")
    assert view["passwordSource"] == "stored encrypted"
    service.database_add(ACTOR, "site-c", "postgresql://backup@db.example.org/ehr", password_env="SITE_C_PW")
    service.database_add(ACTOR, "site-d", "postgresql://backup@db.example.org/ehr")
    listed = service.database_list()
    assert [p["name"] for p in listed] == ["default", "site-b", "site-c", "site-d"]
    assert listed[0]["implicit"] and listed[0]["passwordSource"] == "DATABASE_URL"
    assert [p["passwordSource"] for p in listed[1:]] == ["stored encrypted", "environment variable SITE_C_PW",
                                                          "libpq (.pgpass or service file)"]
    everything = json.dumps(listed) + "".join(e.detail + e.target for e in service.audit.entries())
    assert "pw-that-must-not-leak" not in everything
    if service.settings.metadata_url:  # EHR_TEST_METADATA=pg: every stored row as text
        raw = repr(query(service.settings.metadata_url, "SELECT * FROM database_profiles")).encode()
    else:
        raw = (service.settings.data_dir / "catalogue.sqlite3").read_bytes()
    assert b"pw-that-must-not-leak" not in raw  # stored sealed, not as text
    assert service.profiles.connection("site-b").params["password"] == "pw-that-must-not-leak"
    with pytest.raises(ConfigError, match="SITE_C_PW, which is not set"):
        service.profiles.connection("site-c")
    monkeypatch.setenv("SITE_C_PW", "from-the-env")
    assert service.profiles.connection("site-c").params["password"] == "from-the-env"
    assert "password" not in service.profiles.connection("site-d").params
    outcomes = [(e.target, e.outcome) for e in service.audit.entries(action="database.add")]
    assert {("site-b", "ok"), ("site-c", "ok"), ("site-d", "ok")} <= set(outcomes)


def test_duplicate_reserved_and_unknown_profiles_are_refused_and_audited(service: BackupService) -> None:
    service.database_add(ACTOR, "site-b", "postgresql://backup@db.example.org/ehr")
    with pytest.raises(InvalidInput, match="exists already"):
        service.database_add(ACTOR, "site-b", "postgresql://backup@db.example.org/other")
    with pytest.raises(InvalidInput, match="DATABASE_URL's database"):
        service.database_add(ACTOR, "default", "postgresql://backup@db.example.org/ehr")
    with pytest.raises(InvalidInput, match="one way"):
        service.database_add(ACTOR, "site-x", "postgresql://b@h/ehr", password_env="X", password="y")
    with pytest.raises(NotFound, match="known: default, site-b"):
        service.prepare_create(ACTOR, description="x", database="nowhere")
    refused = [e for e in service.audit.entries() if e.outcome == "refused"]
    assert {e.action for e in refused} >= {"database.add", "create"}
    service.database_remove(ACTOR, "site-b")
    assert [p["name"] for p in service.database_list()] == ["default"]


def test_a_profile_a_schedule_backs_up_cannot_be_removed(service: BackupService) -> None:
    service.database_add(ACTOR, "site-b", "postgresql://backup@db.example.org/ehr")
    service.schedule_create(ACTOR, "nightly-b", cron="30 2 * * *", description="b {date}", database="site-b")
    assert service.schedule_get("nightly-b")["database"] == "site-b"
    with pytest.raises(InvalidInput, match="nightly-b back up database profile site-b"):
        service.database_remove(ACTOR, "site-b")
    with pytest.raises(NotFound):
        service.schedule_create(ACTOR, "other", cron="30 2 * * *", database="gone")


# ----- backups of several databases on real PostgreSQL ------------------------------------------------------
@pytest.fixture
def two_databases() -> Iterator[tuple[str, str]]:
    """Two databases (prefix prof_) with a table each; dropped afterwards."""
    names = [f"prof_a_{uuid.uuid4().hex[:10]}", f"prof_b_{uuid.uuid4().hex[:10]}"]
    for i, name in enumerate(names):
        run_sql(url_for("postgres"), f'CREATE DATABASE "{name}"')
        run_sql(url_for(name), f"CREATE TABLE patients (id int primary key, name text);"
                               f"INSERT INTO patients SELECT g, 'p' || g FROM generate_series(1, {500 * (i + 1)}) g")
    yield names[0], names[1]
    drop_databases(names)


def test_two_profiles_back_up_in_parallel_and_one_database_twice_is_busy(
        service: BackupService, two_databases: tuple[str, str]) -> None:
    a, b = two_databases
    service.database_add(ACTOR, "site-a", url_for(a))
    service.database_add(ACTOR, "site-b", url_for(b))
    task_a = service.prepare_create(ACTOR, description="site a", database="site-a")
    task_b = service.prepare_create(ACTOR, description="site b", database="site-b")  # both locks held at once
    with pytest.raises(Busy):
        service.prepare_create(ACTOR, description="site a again", database="site-a")
    results: dict[str, object] = {}
    threads = [threading.Thread(target=lambda t=t: results.__setitem__(t.backup_id, t.run())) for t in (task_a, task_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ra, rb = results[task_a.backup_id], results[task_b.backup_id]
    assert (ra.status, ra.profile, ra.database) == ("completed", "site-a", a)  # type: ignore[attr-defined]
    assert (rb.status, rb.profile, rb.database) == ("completed", "site-b", b)  # type: ignore[attr-defined]
    assert json.loads(rb.table_counts) == {"public.patients": 1000}  # type: ignore[attr-defined]
    page = service.list_page(database="site-b")
    assert [x["id"] for x in page["backups"]] == [task_b.backup_id] and page["backups"][0]["profile"] == "site-b"
    assert [x["id"] for x in service.list(database="site-a")] == [task_a.backup_id]
    assert service.list(database="default") == []
    assert [x["id"] for x in service.list(database=b)] == [task_b.backup_id]  # a database's own name, as before
    status = service.status(database="site-a")
    assert [d["database"] for d in status["databases"]] == [f"{a}@site-a"]
    # rotation of one profile: its own backups only, under the lock of its own database
    newer = service.create(ACTOR, description="site b newer", database="site-b")
    policy = RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0)
    preview = service.prune(ACTOR, database="site-b", policy=policy, dry_run=True)
    assert [f["id"] for f in preview["forget"]] == [task_b.backup_id]
    assert {k["id"] for k in preview["keep"]} == {newer.id}
    done = service.prune(ACTOR, database="site-b", policy=policy, dry_run=False)
    assert done["deleted"] == [task_b.backup_id]
    assert [x["id"] for x in service.list(database="site-a")] == [task_a.backup_id]  # the other profile untouched
    # /metrics: each profile's database is a series of its own, and the deleted run still counts
    from ehr_backup.metrics import make_registry, render

    text = render(make_registry(service, lambda: [])).decode()
    assert f'ehr_backup_last_backup_success{{database="{a}@site-a"}} 1.0' in text
    assert f'ehr_backup_backups_total{{database="{b}@site-b",outcome="completed"}} 2.0' in text


def test_same_named_databases_on_two_servers_stay_apart_and_restore_goes_to_their_own_server(
        service: BackupService, env: dict[str, str], cluster: Cluster) -> None:
    default_db = env["DATABASE_URL"].rsplit("/", 1)[1]
    run_sql(env["DATABASE_URL"], "CREATE TABLE t (v text); INSERT INTO t VALUES ('main server')")
    run_sql(cluster.url(), f'CREATE DATABASE "{default_db}"')  # the same name on another server
    other = cluster.url(default_db)
    run_sql(other, "CREATE TABLE t (v text); INSERT INTO t VALUES ('second server')")
    service.database_add(ACTOR, "second", other)
    own = service.create(ACTOR, description="main")
    theirs = service.create(ACTOR, description="second", database="second")
    assert (own.database, own.profile) == (default_db, None)
    assert (theirs.database, theirs.profile) == (default_db, "second")
    assert [b["id"] for b in service.list_page(database="default")["backups"]] == [own.id]
    assert [b["id"] for b in service.list_page(database="second")["backups"]] == [theirs.id]
    # rotation sees two databases, not one: each one's newest backup is kept by its own plan
    plan = service.prune(ACTOR, dry_run=True)
    kept = {k["id"]: k["reasons"] for k in plan["keep"]}
    assert own.id in kept and theirs.id in kept
    # a restore of the second server's backup goes to the second server by default
    run_sql(other, "UPDATE t SET v = 'changed after the backup'")
    run_sql(env["DATABASE_URL"], "UPDATE t SET v = 'main, changed'")
    report = service.restore(ACTOR, theirs.id, safety_backup=False).as_dict()
    assert report["rowCountsMatch"]
    assert query(other, "SELECT v FROM t") == [("second server",)]
    assert query(env["DATABASE_URL"], "SELECT v FROM t") == [("main, changed",)]  # untouched
    assert service.status(database="second")["databases"][0]["profile"] == "second"
    # the rollback and the start-up clean-up work on the profile's server too
    with pytest.raises(NotFound):
        service.rollback(ACTOR)  # nothing was replaced on DATABASE_URL's server
    back = service.rollback(ACTOR, profile="second")
    assert query(other, "SELECT v FROM t") == [("changed after the backup",)]
    undone = back["undoneKeptAs"]
    assert query(cluster.url(), f"SELECT count(*) FROM pg_database WHERE datname = '{undone}'") == [(1,)]
    later = BackupService(Settings.from_env({**env, "EHR_BACKUP_KEEP_PREVIOUS_HOURS": "0"}))
    try:
        assert later.reconcile()["droppedExpired"] >= 1
    finally:
        later.db.dispose()
    assert query(cluster.url(), f"SELECT count(*) FROM pg_database WHERE datname = '{undone}'") == [(0,)]


def test_a_schedule_backs_up_its_own_profile(service: BackupService, two_databases: tuple[str, str]) -> None:
    a, _ = two_databases
    service.database_add(ACTOR, "site-a", url_for(a))
    service.schedule_create(ACTOR, "nightly-a", cron="30 2 * * *", description="{database} {date}",
                            database="site-a")
    started = Scheduler(service).run_now(Actor("alice"), "nightly-a")
    assert started.task is not None
    [backup] = service.list(database="site-a")
    assert (backup["kind"], backup["schedule"], backup["profile"], backup["database"]) == (
        "scheduled", "nightly-a", "site-a", a)
    assert backup["description"].startswith(a)


def test_backups_made_before_profiles_belong_to_the_default_profile(env: dict[str, str]) -> None:
    data = Path(env["EHR_BACKUP_DATA_DIR"])
    svc = BackupService(Settings.from_env(env))
    svc.db.dispose()
    with sqlite3.connect(data / "catalogue.sqlite3") as db:  # the catalogue as an older version left it
        db.execute("DROP INDEX ix_backups_profile")
        db.execute("ALTER TABLE backups DROP COLUMN profile")
        db.execute("ALTER TABLE schedules DROP COLUMN database")
        db.execute("INSERT INTO backups (id, location, directory, description, kind, status, compression, "
                   "database, created_at, created_by, origin, pinned) VALUES ('old.sql.gz.enc', 'default', '/x', "
                   "'old', 'manual', 'failed', 'gzip', 'ehr', '2026-01-01 00:00:00', 'x', 'catalogue', 0)")
    svc = BackupService(Settings.from_env(env))
    try:
        page = svc.list_page(database="default")
        assert [(b["id"], b["profile"]) for b in page["backups"]] == [("old.sql.gz.enc", "default")]
        assert svc.database_list()[0]["backups"] == 1
    finally:
        svc.db.dispose()


# ----- the command line ------------------------------------------------------------------------------------
def _cli(env: dict[str, str], *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *argv], input=stdin, capture_output=True,
                          check=False, text=True, env=cli_env(env), timeout=120)


def test_cli_adds_lists_tests_and_removes_profiles(env: dict[str, str],
                                                   make_db: Callable[[str], str]) -> None:
    url = make_db(f"prof_cli_{uuid.uuid4().hex[:10]}")
    refused = _cli(env, "database", "add", "site-b", "--url", url.replace("postgres@", "postgres:hunter22@"))
    assert refused.returncode == 2 and "the URL holds a password" in refused.stderr
    assert "hunter22" not in refused.stderr + refused.stdout
    added = _cli(env, "database", "add", "site-b", "--url", url, "--password-stdin", "--json", stdin="hunter22\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["passwordSource"] == "stored encrypted"
    listed = _cli(env, "database", "list", "--json")
    assert [p["name"] for p in json.loads(listed.stdout)["databases"]] == ["default", "site-b"]
    assert "hunter22" not in listed.stdout
    tested = _cli(env, "database", "test", "site-b")
    assert tested.returncode == 0 and "connected to" in tested.stdout, tested.stderr
    created = _cli(env, "create", "--description", "cli b", "--database", "site-b", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["profile"] == "site-b"
    only = _cli(env, "list", "--database", "site-b", "--json")
    assert [b["profile"] for b in json.loads(only.stdout)["backups"]] == ["site-b"]
    unknown = _cli(env, "create", "--description", "x", "--database", "nowhere")
    assert unknown.returncode == 1 and "no database profile named 'nowhere'" in unknown.stderr
    assert _cli(env, "database", "remove", "site-b").returncode == 0
    assert "site-b" not in _cli(env, "database", "list").stdout


def test_a_profile_is_overdue_by_its_own_schedule_and_does_not_make_the_default_one_overdue(
        service: BackupService) -> None:
    from datetime import timedelta

    from ehr_backup.alerts.conditions import Collector
    from ehr_backup.catalogue import utcnow

    service.database_add(ACTOR, "site-b", "postgresql://backup@db-b.example.org/ehr")
    service.schedule_create(ACTOR, "hourly-b", cron="0 * * * *", description="b {date}", database="site-b")
    found = Collector(service).overdue(utcnow() + timedelta(hours=5))
    assert [c.key for c in found] == ["backup.overdue:ehr@site-b"]
    assert "no successful backup of ehr@site-b" in found[0].message
    cards = {c["database"]: c for c in service.dashboard()}
    default_db = service.connection().dbname
    assert set(cards) == {default_db, "ehr@site-b"}
    assert "no backup schedule" in cards[default_db]["measuredAgainst"]  # default has no schedule of its own
    assert cards[default_db]["nextRun"] is None
    site_b = cards["ehr@site-b"]
    assert (site_b["profile"], site_b["status"], site_b["lastGoodAt"]) == ("site-b", "red", None)
    assert site_b["measuredAgainst"] == "its schedule (every 1 hours)" and site_b["nextRun"]
