"""Alert thresholds of a database profile (its own maximum backup age), and failed-backup alerts grouped by
the profile's label (name@profile), through the service, the CLI, REST and the alert settings page."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from nicegui.testing import User

from ehr_backup.alerts.conditions import Collector, failed_backups
from ehr_backup.alerts.profile_thresholds import ProfileThresholds, in_force
from ehr_backup.audit import Actor
from ehr_backup.catalogue import utcnow
from ehr_backup.config import Settings
from ehr_backup.errors import InvalidInput, NotFound
from ehr_backup.models import Status
from ehr_backup.service import BackupService

from .conftest import ACTOR, cli_env
from .web_helpers import eventually, login

OTHER = "postgresql://backup@db-b.example.org/ehr"  # never connected to: thresholds need no server


def _record(rid: str, status: str, profile: str | None, at: object) -> SimpleNamespace:
    return SimpleNamespace(id=rid, database="ehr", profile=profile, status=status, kind="manual", finished_at=at,
                           created_at=at, step="", error="pg_dump: connection refused", location="default")


def test_a_failed_backup_of_a_profile_alerts_even_when_the_same_named_default_database_succeeded() -> None:
    now = utcnow()
    records = [_record("b3", Status.COMPLETED, None, now),  # newest first
               _record("b2", Status.FAILED, "site-b", now - timedelta(minutes=5)),
               _record("b1", Status.COMPLETED, "site-b", now - timedelta(days=1))]
    [failed] = failed_backups(records, "ehr", now)
    assert (failed.key, failed.database) == ("backup.failed:ehr@site-b", "ehr@site-b")
    assert "backup b2 of ehr@site-b failed" in failed.message
    # and the default database's own failure keeps its bare name
    both = failed_backups([_record("b4", Status.FAILED, None, now), *records], "ehr", now)
    assert [c.key for c in both] == ["backup.failed:ehr", "backup.failed:ehr@site-b"]


def test_a_profiles_own_value_wins_and_unset_is_the_installations() -> None:
    assert in_force({"maxBackupAgeHours": 26}, {}) == {"maxBackupAgeHours": (26, "installation")}
    assert in_force({"maxBackupAgeHours": 26}, {"maxBackupAgeHours": 2}) == {"maxBackupAgeHours": (2, "profile")}


def test_a_profile_is_overdue_by_its_own_maximum_age_and_the_others_keep_the_installations(
        service: BackupService) -> None:
    service.database_add(ACTOR, "site-b", OTHER)
    service.database_add(ACTOR, "site-c", "postgresql://backup@db-c.example.org/ehr")
    service.alert_thresholds.update(ACTOR, {"maxBackupAgeHours": 0})  # off for the installation
    own = ProfileThresholds(service)
    view = own.update(ACTOR, "site-b", {"maxBackupAgeHours": 3})
    assert view["maxBackupAgeHours"] == {**view["maxBackupAgeHours"], "value": 3, "source": "profile",
                                         "installation": 0, "updatedBy": ACTOR.name}
    later = utcnow() + timedelta(hours=4)
    overdue = Collector(service).overdue(later)
    assert [c.key for c in overdue] == ["backup.overdue:ehr@site-b"] and "3.0 hours" in overdue[0].message
    assert service.alert_thresholds.current().max_backup_age_hours == 0  # the installation's is untouched
    assert own.view("site-c")["maxBackupAgeHours"]["source"] == "installation"
    # back to the installation's: nothing overdue again
    assert own.update(ACTOR, "site-b", {"maxBackupAgeHours": None})["maxBackupAgeHours"]["source"] == "installation"
    assert Collector(service).overdue(later) == []
    with pytest.raises(InvalidInput, match="set for the whole installation"):
        own.update(ACTOR, "site-b", {"minFreeMb": 10})
    with pytest.raises(InvalidInput, match="from 0 to"):
        own.update(ACTOR, "site-b", {"maxBackupAgeHours": -1})
    with pytest.raises(NotFound):
        own.update(ACTOR, "nowhere", {"maxBackupAgeHours": 1})
    outcomes = [(e.target, e.outcome) for e in service.audit.entries(action="alert-settings", limit=10)]
    assert ("thresholds@site-b", "ok") in outcomes and ("thresholds@site-b", "refused") in outcomes
    # a removed profile's own values go with it: added again, it starts with the installation's
    own.update(ACTOR, "site-b", {"maxBackupAgeHours": 9})
    service.database_remove(ACTOR, "site-b")
    service.database_add(ACTOR, "site-b", OTHER)
    assert own.view("site-b")["maxBackupAgeHours"]["source"] == "installation"


def test_the_cli_stores_shows_and_resets_a_profiles_threshold(service: BackupService, env: dict[str, str]) -> None:
    service.database_add(ACTOR, "site-b", OTHER)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ehr_backup.cli", "alerts", "settings", *args], check=False,
                              capture_output=True, text=True, env=cli_env(env), timeout=120)

    stored = json.loads(cli("--database", "site-b", "--max-backup-age-hours", "7", "--json").stdout)
    assert stored["thresholds"]["maxBackupAgeHours"]["value"] == 7
    shown = cli("--database", "site-b")
    assert shown.returncode == 0 and "set for site-b by" in shown.stdout
    assert "maxBackupAgeHours" in cli().stdout and "set for site-b" not in cli().stdout  # the installation's
    refused = cli("--database", "site-b", "--min-free-mb", "5")
    assert refused.returncode == 2 and "set for the whole installation" in refused.stderr
    reset = json.loads(cli("--database", "site-b", "--reset", "maxBackupAgeHours", "--json").stdout)
    assert reset["thresholds"]["maxBackupAgeHours"]["source"] == "installation"
    assert "--database NAME" in cli("--help").stdout


@pytest.fixture
def backups(web_env: dict[str, str]) -> Iterator[BackupService]:
    svc = BackupService(Settings.from_env(web_env))
    svc.database_add(ACTOR, "site-b", OTHER)
    yield svc
    svc.db.dispose()


async def test_a_profiles_threshold_through_the_api(user: User, accounts, backups: BackupService) -> None:
    auth = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}
    http, api = user.http_client, "/api/admin/backup/alerts/settings"
    put = await http.put(f"{api}?database=site-b", json={"maxBackupAgeHours": 12}, headers=auth)
    assert put.status_code == 200, put.text
    assert put.json()["thresholds"]["maxBackupAgeHours"]["source"] == "profile"
    got = (await http.get(f"{api}?database=site-b", headers=auth)).json()["thresholds"]
    assert got["maxBackupAgeHours"]["value"] == 12
    assert (await http.get(api, headers=auth)).json()["thresholds"]["maxBackupAgeHours"]["source"] != "stored"
    bad = await http.put(f"{api}?database=site-b", json={"minFreeMb": 1}, headers=auth)
    assert bad.status_code == 422 and "whole installation" in bad.json()["error"]
    unknown = await http.get(f"{api}?database=nowhere", headers=auth)
    assert unknown.status_code == 404 and "error" in unknown.json()


async def test_the_page_sets_and_resets_a_profiles_maximum_backup_age(
        user: User, accounts, backups: BackupService) -> None:
    own = ProfileThresholds(backups)
    await login(user, next_="/admin/alerts")
    await user.should_see(marker="profile-threshold-save", retries=100)
    await user.should_see("the installation's value")
    user.find(marker="profile-threshold-maxBackupAgeHours").elements.pop().value = 5
    user.find(marker="profile-threshold-save").click()
    await eventually(lambda: own.view("site-b")["maxBackupAgeHours"]["value"] == 5)
    await user.should_see("set for site-b by alice", retries=100)
    user.find(marker="profile-threshold-reset").click()
    await eventually(lambda: own.view("site-b")["maxBackupAgeHours"]["source"] == "installation")


def test_a_failing_schedule_of_a_profile_alerts_under_the_profiles_label(service: BackupService) -> None:
    from ehr_backup.scheduler import Scheduler

    service.database_add(ACTOR, "down", "postgresql://postgres@127.0.0.1:9/records")  # nothing listens there
    service.schedule_create(ACTOR, "nightly-down", cron="30 2 * * *", description="{database}", database="down",
                            retries=0)
    Scheduler(service).run_now(Actor("alice"), "nightly-down")
    [failing] = Collector(service).schedules(utcnow())
    assert (failing.key, failing.database) == ("schedule.failed:nightly-down", "records@down")
