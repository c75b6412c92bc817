"""The rotation dialog targets one database profile: a profile's backups apart from a same-named database's."""

from __future__ import annotations

from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.service import BackupService
from pages.rotation import database_choices

from .conftest import ACTOR, Cluster, run_sql
from .table_helpers import table_row
from .web_helpers import eventually, login


def test_the_dialog_offers_each_profile_by_its_name_and_default_databases_by_theirs() -> None:
    rows = [{"database": "ehr", "profile": "default"}, {"database": "ehr", "profile": "second"},
            {"database": "old", "profile": None}, {"database": "", "profile": "x"}]
    assert database_choices(rows) == {"ehr": "ehr", "second": "ehr (second)", "old": "old"}


async def test_rotation_of_one_profile_deletes_only_its_backups(user: User, accounts, web_env: dict[str, str],
                                                                cluster: Cluster) -> None:
    name = web_env["DATABASE_URL"].rsplit("/", 1)[1]  # the same name on both servers
    run_sql(cluster.url(), f'CREATE DATABASE "{name}"')
    run_sql(cluster.url(name), "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g")
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g")
    svc = BackupService(Settings.from_env(web_env))
    try:
        svc.database_add(ACTOR, "second", cluster.url(name))
        own = [svc.create(ACTOR, description=f"own {i}").id for i in range(2)]
        theirs = [svc.create(ACTOR, description=f"second {i}", database="second").id for i in range(2)]
    finally:
        svc.db.dispose()
    await login(user, next_="/admin/backup")
    await table_row(user, theirs[1])
    user.find(marker="rotation-open").click()
    await user.should_see(marker="rotation-dialog")
    chooser = user.find(marker="rotation-database").elements.pop()
    assert chooser.options == {"all": "All databases", name: name, "second": f"{name} (second)"}
    chooser.value = "second"
    for kind, value in (("daily", 1), ("weekly", 0), ("monthly", 0), ("yearly", 0)):
        user.find(marker=f"rotation-{kind}").elements.pop().value = value
    user.find(marker="rotation-preview").click()
    apply = user.find(marker="rotation-apply").elements.pop()
    await eventually(lambda: apply.enabled)
    assert apply.text == "Delete 1 backup"
    user.find(marker="rotation-apply").click()
    svc = BackupService(Settings.from_env(web_env))
    try:
        await eventually(lambda: [b["id"] for b in svc.list(database="second")] == [theirs[1]])
        assert sorted(b["id"] for b in svc.list(database="default")) == sorted(own)
    finally:
        svc.db.dispose()
