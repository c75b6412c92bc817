# ruff: noqa: F811  (pytest fixtures imported from test_alerts are redefined as parameters)
"""Alert thresholds stored in the metadata database (over the environment's) and used by real checks; channels
switched off receive nothing; an email channel's recipients edited with its sealed password still working."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from ehr_backup.alerts.thresholds import effective, validate
from ehr_backup.catalogue import utcnow
from ehr_backup.config import Settings
from ehr_backup.errors import InvalidInput, NotFound
from ehr_backup.service import BackupService

from .alert_servers import self_signed, smtp_server, webhook_receiver
from .conftest import ACTOR, cli_env
from .test_alerts import PASSWORD, SECRET, alert_env, alerting, delays, fail_a_backup, failing  # noqa: F401

HUGE = 10**9  # MB: more free space than any test machine has


def test_effective_thresholds_a_stored_value_wins_and_each_says_where_it_comes_from() -> None:
    settings = Settings.from_env({"EHR_BACKUP_MIN_FREE_MB": "0"})
    t = effective(settings, {"repeatHours": 2})
    assert (t.alert_repeat_hours, t.min_free_mb, t.fill_warn_days, t.max_backup_age_hours) == (2, 0, 14, 0)
    assert dict(t.sources) == {"repeatHours": "stored", "minFreeMb": "environment", "fillWarnDays": "default",
                               "maxBackupAgeHours": "default"}


@pytest.mark.parametrize(("changes", "message"), [
    ({"minFreeMb": -1}, "minFreeMb is a whole number of MB from 0 to 1000000000"),
    ({"minFreeMb": 10**10}, "minFreeMb is a whole number of MB from 0 to 1000000000"),
    ({"repeatHours": 0}, "repeatHours is a whole number of hours from 1 to 8760"),
    ({"fillWarnDays": 1.5}, "fillWarnDays is a whole number of days"),
    ({"fillWarnDays": "soon"}, "fillWarnDays is a whole number of days"),
    ({"maxBackupAgeHours": True}, "maxBackupAgeHours is a whole number of hours"),
    ({"checkMinutes": 5}, "unknown threshold 'checkMinutes'"),
    ({}, "give at least one of repeatHours"),
])
def test_thresholds_out_of_range_are_refused_with_the_field_and_its_range(changes: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        validate(changes)


def test_a_refused_change_stores_nothing_and_is_audited(alerting: BackupService) -> None:
    with pytest.raises(InvalidInput):
        alerting.alert_thresholds.update(ACTOR, {"repeatHours": 2, "minFreeMb": -5})
    assert alerting.alert_thresholds.stored() == {}
    entry = alerting.audit.entries(action="alert-settings", limit=1)[0]
    assert entry.outcome == "refused" and "minFreeMb" in entry.detail


def test_a_stored_free_space_threshold_opens_storage_low_and_lowering_it_resolves_it(
        alerting: BackupService) -> None:
    with webhook_receiver(SECRET) as hook:
        alerting.alerts.add_webhook(ACTOR, hook.url, SECRET)
        assert alerting.alerts.check()["open"] == []  # the environment says 0 MB: never low
        view = alerting.alert_thresholds.update(ACTOR, {"minFreeMb": HUGE})
        assert view["minFreeMb"] == {**view["minFreeMb"], "value": HUGE, "source": "stored", "environment": 0,
                                     "updatedBy": ACTOR.name}
        assert any(f"less than {HUGE} MB free" in w for loc in alerting.status()["locations"] for w in loc["warnings"])
        assert all(loc["lowSpace"] for loc in alerting.locations() if loc["freeBytes"] is not None)
        opened = alerting.alerts.check()
        assert "storage.low:default" in [a["key"] for a in opened["open"]]
        assert ("storage.low", "new") in hook.events()
        alerting.alert_thresholds.update(ACTOR, {"minFreeMb": None})  # back to the environment's 0
        assert alerting.alert_thresholds.view()["minFreeMb"]["source"] == "environment"
        assert alerting.alerts.check()["open"] == []
        assert ("resolved", "resolved") in hook.events()
        assert next(h.json.get("resolves") for h in hook.got if h.json["event"] == "resolved") == "storage.low"
    details = [e.detail for e in alerting.audit.entries(action="alert-settings", limit=5)]
    assert f"minFreeMb 0 -> {HUGE} (stored)" in details and f"minFreeMb {HUGE} -> 0 (environment)" in details


def test_a_stored_repeat_interval_decides_when_an_open_alert_is_sent_again(
        alerting: BackupService, failing: BackupService) -> None:
    alerting.alert_thresholds.update(ACTOR, {"repeatHours": 2})
    with webhook_receiver(SECRET) as hook:
        alerting.alerts.add_webhook(ACTOR, hook.url, SECRET)
        fail_a_backup(failing)
        t0 = utcnow()
        alerting.alerts.check(t0)
        alerting.alerts.check(t0 + timedelta(hours=1))
        assert hook.events() == [("backup.failed", "new")]
        alerting.alerts.check(t0 + timedelta(hours=2, minutes=1))  # the environment's 24 h would stay quiet
        assert hook.events() == [("backup.failed", "new"), ("backup.failed", "repeat")]


def test_a_stored_maximum_backup_age_makes_a_backup_overdue(alerting: BackupService) -> None:
    good = alerting.create(ACTOR, description="first")
    later = utcnow() + timedelta(hours=5)
    assert [c.event for c in alerting.alerts.collector.collect(later)] == []
    alerting.alert_thresholds.update(ACTOR, {"maxBackupAgeHours": 4})
    (late,) = alerting.alerts.collector.collect(later)
    assert late.key == f"backup.overdue:{good.database}" and "4.0 hours" in late.message


def test_a_disabled_channel_receives_nothing_and_enabling_it_again_restores_it(
        alerting: BackupService, failing: BackupService) -> None:
    with webhook_receiver(SECRET) as on, webhook_receiver(SECRET) as off:
        alerting.alerts.add_webhook(ACTOR, on.url, SECRET)
        second = alerting.alerts.add_webhook(ACTOR, off.url, SECRET)
        assert alerting.alerts.set_enabled(ACTOR, second["id"], False)["enabled"] is False
        assert [c["enabled"] for c in alerting.alerts.channels()] == [True, False]
        assert alerting.alerts.test(ACTOR)["sent"] == 1
        fail_a_backup(failing)
        assert alerting.alerts.check()["sent"] == 1
        assert [e for e, _ in on.events()] == ["test", "backup.failed"] and off.got == []
        alerting.alerts.set_enabled(ACTOR, second["id"], True)
        assert alerting.alerts.test(ACTOR)["sent"] == 2 and [e for e, _ in off.events()] == ["test"]
    with pytest.raises(NotFound):
        alerting.alerts.set_enabled(ACTOR, 999, False)
    actions = [(e.action, e.outcome) for e in alerting.audit.entries(limit=50) if "enable" in e.action
               or "disable" in e.action]
    assert ("alert-channel-disable", "ok") in actions and ("alert-channel-enable", "ok") in actions
    assert ("alert-channel-disable", "refused") in actions


def test_new_recipients_get_the_mail_and_the_sealed_password_still_opens(
        alerting: BackupService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    with smtp_server("starttls", cert, login=("alerts", PASSWORD)) as (inbox, port):
        channel = alerting.alerts.add_email(ACTOR, "ops@example.org", smtp_host="127.0.0.1", smtp_port=port,
                                            smtp_user="alerts", password=PASSWORD, sender="backup@example.org")
        changed = alerting.alerts.set_recipients(ACTOR, channel["id"], "night@example.org, dba@example.org")
        assert changed["recipients"] == ["night@example.org", "dba@example.org"] and changed["password"] == "set"
        assert alerting.alerts.test(ACTOR)["sent"] == 1
        assert inbox.envelopes == [("backup@example.org", ["night@example.org", "dba@example.org"])]
    with pytest.raises(InvalidInput, match="email addresses"):
        alerting.alerts.set_recipients(ACTOR, channel["id"], "not an address")
    hook = alerting.alerts.add_webhook(ACTOR, "https://example.org/hook", SECRET)
    with pytest.raises(InvalidInput, match="only an email channel"):
        alerting.alerts.set_recipients(ACTOR, hook["id"], "ops@example.org")
    entries = alerting.audit.entries(action="alert-channel-recipients", limit=5)
    assert sorted(e.outcome for e in entries) == ["ok", "refused", "refused"]
    assert "ops@example.org -> night@example.org,dba@example.org" in next(e.detail for e in entries if e.outcome == "ok")


def test_the_cli_shows_stores_and_resets_thresholds_and_switches_channels(alert_env: dict[str, str]) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ehr_backup.cli", "alerts", *args], check=False,
                              capture_output=True, text=True, env=cli_env(alert_env), timeout=120)

    shown = cli("settings")
    assert shown.returncode == 0 and "from EHR_BACKUP_MIN_FREE_MB" in shown.stdout
    assert "default (EHR_BACKUP_ALERT_REPEAT_HOURS not set)" in shown.stdout
    stored = json.loads(cli("settings", "--min-free-mb", "5000", "--fill-warn-days", "30", "--json").stdout)
    assert stored["thresholds"]["minFreeMb"]["value"] == 5000 and stored["thresholds"]["fillWarnDays"]["source"] == \
        "stored"
    bad = cli("settings", "--repeat-hours", "0")
    assert bad.returncode == 2 and "repeatHours is a whole number of hours from 1 to 8760" in bad.stderr
    reset = json.loads(cli("settings", "--reset", "minFreeMb", "--json").stdout)["thresholds"]
    assert reset["minFreeMb"]["source"] == "environment" and reset["fillWarnDays"]["value"] == 30
    with webhook_receiver(SECRET) as hook:
        assert cli("add-webhook", hook.url, "--secret", SECRET).returncode == 0
        off = cli("disable", "1")
        assert off.returncode == 0 and "alert channel 1 off" in off.stdout
        assert "OFF" in cli("list").stdout
        refused = cli("test")
        assert refused.returncode == 2 and "switch one on" in refused.stderr and hook.got == []
        assert cli("enable", "1").returncode == 0 and cli("test").returncode == 0 and len(hook.got) == 1
    assert cli("disable", "7").returncode != 0
