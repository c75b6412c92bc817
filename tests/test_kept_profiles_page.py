"""Previous databases of a database profile on another server: the page's Roll back and Drop act there."""

from __future__ import annotations

import psycopg
from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.kept_profiles import server_profiles
from ehr_backup.service import BackupService

from .conftest import ACTOR, Cluster, query, run_sql
from .web_helpers import eventually, login


def _service(env: dict[str, str]) -> BackupService:
    return BackupService(Settings.from_env(env))


def _value(url: str) -> str | None:
    """t's value, or None while a rollback renames the database under us."""
    try:
        return str(query(url, "SELECT v FROM t")[0][0])
    except psycopg.Error:
        return None


def _kept_on(cluster: Cluster, name: str) -> int:
    return int(query(cluster.url(), f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")[0][0])


async def test_previous_databases_of_a_profile_on_another_server_roll_back_and_drop_there(
        user: User, accounts, web_env: dict[str, str], cluster: Cluster) -> None:
    name = web_env["DATABASE_URL"].rsplit("/", 1)[1]  # the same name on both servers
    run_sql(cluster.url(), f'CREATE DATABASE "{name}"')
    other = cluster.url(name)
    run_sql(other, "CREATE TABLE t (v text); INSERT INTO t VALUES ('at backup time')")
    svc = _service(web_env)
    try:
        svc.database_add(ACTOR, "second", other)
        backup = svc.create(ACTOR, description="second", database="second")
        run_sql(other, "UPDATE t SET v = 'changed later'")
        svc.restore(ACTOR, backup.id, safety_backup=False)
        [kept] = svc.kept_databases()
        assert kept["profile"] == "second"
        assert set(server_profiles(svc).values()) == {None, "second"}
    finally:
        svc.db.dispose()
    assert query(other, "SELECT v FROM t") == [("at backup time",)]

    await login(user, next_="/admin/backup")
    await user.should_see(marker=f"rollback-{kept['name']}", retries=100)
    user.find(marker=f"rollback-{kept['name']}").click()
    user.find(marker="kept-confirm").type(name)
    user.find(marker="kept-go").click()
    await eventually(lambda: _value(other) == "changed later")

    svc = _service(web_env)
    try:
        undone = next(k for k in svc.kept_databases() if k["kind"] != "previous")
    finally:
        svc.db.dispose()
    assert undone["profile"] == "second" and _kept_on(cluster, undone["name"]) == 1
    await user.should_see(marker=f"drop-kept-{undone['name']}", retries=100)
    user.find(marker=f"drop-kept-{undone['name']}").click()
    user.find(marker="kept-confirm").type(name)
    user.find(marker="kept-go").click()
    await eventually(lambda: _kept_on(cluster, undone["name"]) == 0)
