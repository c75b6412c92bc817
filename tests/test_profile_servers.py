"""Database profiles on servers of their own: drills and custom-location checks use the profile's server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.errors import InvalidInput
from ehr_backup.profile_dirs import is_local_host
from ehr_backup.service import BackupService

from .conftest import ACTOR, Cluster, query, run_sql


@pytest.mark.parametrize("host", [None, "", "/var/run/postgresql", "localhost", "127.0.0.1", "::1",
                                  "[::1]", "127.0.0.5,db.example.org", "myhost"])
def test_hosts_naming_this_machine_are_local(host: str | None) -> None:
    assert is_local_host(host, ("myhost",))


@pytest.mark.parametrize("host", ["db.example.org", "10.0.0.7", "2001:db8::1", "db.example.org,127.0.0.1"])
def test_other_hosts_are_not_local(host: str) -> None:
    assert not is_local_host(host, ("myhost",))


def _second(service: BackupService, env: dict[str, str], cluster: Cluster) -> str:
    """A profile `second` on the throwaway cluster, holding a database of the default one's name."""
    name = env["DATABASE_URL"].rsplit("/", 1)[1]
    run_sql(cluster.url(), f'CREATE DATABASE "{name}"')
    run_sql(cluster.url(name), "CREATE TABLE t (v text); INSERT INTO t SELECT 'row ' || g FROM generate_series(1, 9) g")
    service.database_add(ACTOR, "second", cluster.url(name))
    return name


def test_a_drill_of_a_profiles_backup_runs_on_that_profiles_server(
        service: BackupService, env: dict[str, str], cluster: Cluster) -> None:
    name = _second(service, env, cluster)
    record = service.create(ACTOR, description="second server", database="second")
    result = service.drill(ACTOR, record.id)
    assert result["outcome"] == "passed", result["message"]
    report = json.loads(Path(result["report"]["json"]).read_bytes())
    assert f"127.0.0.1:{cluster.port}" in report["server"]["display"]
    [row] = service.drill_list()
    assert row["outcome"] == "passed"
    # the scratch database was made (and dropped) on the second server: DATABASE_URL's has no table t
    assert query(cluster.url(), "SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_\\_drill\\_%'") == [(0,)]
    assert query(env["DATABASE_URL"], "SELECT count(*) FROM pg_tables WHERE tablename = 't'") == [(0,)]
    assert name


def test_a_scratch_database_left_on_a_profiles_server_is_dropped_at_the_next_start(
        service: BackupService, env: dict[str, str], cluster: Cluster) -> None:
    _second(service, env, cluster)
    record = service.create(ACTOR, description="second server", database="second")
    task = service.prepare_drill(ACTOR, record.id)  # recorded and reserved, as a crash would leave it
    [row] = service.drills.all()
    run_sql(cluster.url(), f'CREATE DATABASE "{row.scratch}"')
    for h in task._locks:
        h.release()
    later = BackupService(Settings.from_env(env))
    try:
        assert later.drills.reconcile(lambda key: False)["droppedDrillDatabases"] == 1
    finally:
        later.db.dispose()
    assert query(cluster.url(), f"SELECT count(*) FROM pg_database WHERE datname = '{row.scratch}'") == [(0,)]


def test_a_local_profile_servers_data_directory_is_no_custom_location(
        env: dict[str, str], cluster: Cluster) -> None:
    roots = f"{env['EHR_BACKUP_CUSTOM_ROOTS']}:{cluster.base.parent}"
    svc = BackupService(Settings.from_env({**env, "EHR_BACKUP_CUSTOM_ROOTS": roots}))
    try:
        svc.database_add(ACTOR, "second", cluster.url())
        assert cluster.pgdata.resolve() in [p.resolve() for p in svc.forbidden_dirs()]
        with pytest.raises(InvalidInput):
            svc.resolve_location("custom", str(cluster.pgdata / "pg_wal"))
        # a profile whose server cannot be reached now is skipped, not an error
        svc.database_add(ACTOR, "gone", "postgresql://postgres@127.0.0.1:9/nothing")
        assert cluster.pgdata.resolve() in [p.resolve() for p in svc.forbidden_dirs()]
        elsewhere = Path(env["EHR_BACKUP_CUSTOM_ROOTS"]) / "elsewhere"
        elsewhere.mkdir()
        assert svc.resolve_location("custom", str(elsewhere))[0] == "custom"
    finally:
        svc.db.dispose()


def test_a_schedules_rotation_applies_to_its_own_profiles_backups_only(
        service: BackupService, make_db) -> None:
    from ehr_backup.audit import Actor
    from ehr_backup.scheduler import Scheduler

    a, b = make_db("prof2_rot_a"), make_db("prof2_rot_b")
    for url in (a, b):
        run_sql(url, "CREATE TABLE t AS SELECT g FROM generate_series(1, 20) g")
    service.database_add(ACTOR, "site-a", a)
    service.database_add(ACTOR, "site-b", b)
    service.schedule_create(ACTOR, "nightly", cron="30 2 * * *", description="{database}", database="site-a")
    scheduler = Scheduler(service)
    for _ in range(2):  # two runs on site-a, without rotation
        assert scheduler.run_now(Actor("alice"), "nightly").task is not None
    made_on_a = {x["id"] for x in service.list(database="site-a")}
    assert len(made_on_a) == 2
    # the schedule now backs up site-b, with a rotation that keeps one backup a day
    service.schedule_update(ACTOR, "nightly", database="site-b",
                            policy={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0})
    assert scheduler.run_now(Actor("alice"), "nightly").task is not None
    assert len(service.list(database="site-b")) == 1
    assert {x["id"] for x in service.list(database="site-a")} == made_on_a  # site-a's stay


def test_a_kept_database_on_a_profiles_server_is_dropped_there_without_naming_the_profile(
        service: BackupService, env: dict[str, str], cluster: Cluster) -> None:
    name = _second(service, env, cluster)
    record = service.create(ACTOR, description="second server", database="second")
    service.restore(ACTOR, record.id, safety_backup=False)
    [kept] = service.kept_databases()
    assert kept["profile"] == "second"
    service.drop_kept(ACTOR, kept["name"])  # REST's DELETE /restore/previous names no profile
    assert query(cluster.url(), f"SELECT count(*) FROM pg_database WHERE datname = '{kept['name']}'") == [(0,)]
    assert service.kept_databases() == [] and name
