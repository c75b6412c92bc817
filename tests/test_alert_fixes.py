# ruff: noqa: F811  (pytest fixtures imported from test_alerts are redefined as parameters)
"""Review fixes of the alerts: a webhook URL with a bad port or host, a broken channel that must not stop the
others, alerts about databases that are not backed up here, the audit chain's cost, and header injection."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from ehr_backup.alerts import secrets as alert_secrets
from ehr_backup.alerts.channels import Message, send_email
from ehr_backup.alerts.service import _context
from ehr_backup.alerts.state import Condition
from ehr_backup.alerts.tables import AlertChannel
from ehr_backup.catalogue import utcnow
from ehr_backup.config import Settings
from ehr_backup.errors import BackupError, InvalidInput
from ehr_backup.models import Status
from ehr_backup.pg import ConnInfo
from ehr_backup.service import BackupService

from .alert_servers import smtp_server, webhook_receiver
from .conftest import ACTOR, cli_env, metadata_sql
from .test_alerts import SECRET, alert_env, alerting, delays, fail_a_backup, failing  # noqa: F401 - fixtures

BAD_URL = "http://127.0.0.1:abc/x"


def store_as_an_older_version_did(service: BackupService, url: str = BAD_URL) -> int:
    """A webhook row with a URL the old check let through (as an older version stored it)."""
    channel = AlertChannel(kind="webhook", target=url, created_at=utcnow(), created_by="old")
    channel.secret = alert_secrets.seal(service.keyring(), SECRET, _context(channel))
    with service.db.writing() as s:
        s.add(channel)
        s.flush()
        assert channel.id is not None
        return channel.id


@pytest.mark.parametrize("url", [BAD_URL, "http://127.0.0.1:99999/x", "http://127.0.0.1:0/x", "http://[::1/x",
                                 "https://exa%0Ample.org/x", "http://user@:80/x"])
def test_a_webhook_url_with_a_bad_port_or_host_is_refused_clearly(alerting: BackupService, url: str) -> None:
    with pytest.raises(InvalidInput, match="host|port"):
        alerting.alerts.add_webhook(ACTOR, url, SECRET)
    assert alerting.alerts.channels() == []
    assert alerting.alerts.add_webhook(ACTOR, "https://[::1]:8443/hook", SECRET)["target"] == "https://::1:8443/hook"


def test_a_stored_bad_url_is_shown_and_fails_alone_while_the_others_get_the_alert(
        alerting: BackupService, failing: BackupService, caplog: pytest.LogCaptureFixture) -> None:
    bad = store_as_an_older_version_did(alerting)
    listed = alerting.alerts.channels()
    assert listed[0]["id"] == bad and "invalid webhook URL" in listed[0]["target"]
    with webhook_receiver(SECRET) as hook:
        alerting.alerts.add_webhook(ACTOR, hook.url, SECRET)
        tested = alerting.alerts.test(ACTOR)
        assert (tested["sent"], tested["failed"]) == (1, 1)
        fail_a_backup(failing)
        with caplog.at_level(logging.WARNING, logger="ehr_backup.alerts"):
            result = alerting.alerts.check()
        assert (result["sent"], result["failed"]) == (1, 1)
        assert hook.events() == [("test", "test"), ("backup.failed", "new")]
    failed = [h for h in alerting.alerts.history() if h["outcome"] == "failed"]
    assert [h["channelId"] for h in failed] == [bad, bad] and all("not valid" in h["error"] for h in failed)
    assert any(r.levelno == logging.WARNING and f"alert channel {bad}" in r.getMessage() for r in caplog.records)


def test_a_channel_that_raises_anything_is_a_failed_delivery_and_the_others_still_get_it(
        alerting: BackupService, failing: BackupService, monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_receiver(SECRET) as first, webhook_receiver(SECRET) as second:
        broken = alerting.alerts.add_webhook(ACTOR, first.url, SECRET)["id"]
        alerting.alerts.add_webhook(ACTOR, second.url, SECRET)
        deliver = alerting.alerts._deliver

        def flaky(channel: AlertChannel, message: Message):  # a bug in one channel's code path
            if channel.id == broken:
                raise RuntimeError("boom")
            return deliver(channel, message)

        monkeypatch.setattr(alerting.alerts, "_deliver", flaky)
        fail_a_backup(failing)
        result = alerting.alerts.check()
        assert (result["sent"], result["failed"]) == (1, 1) and second.events() == [("backup.failed", "new")]
        assert first.got == []
    assert [(h["channelId"], h["outcome"], h["error"]) for h in alerting.alerts.history()][-1] == \
        (broken, "failed", "internal error: RuntimeError")


def test_the_cli_commands_succeed_with_a_bad_channel_stored(alert_env: dict[str, str],
                                                            alerting: BackupService,
                                                            failing: BackupService) -> None:
    store_as_an_older_version_did(alerting)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *args], capture_output=True, text=True, check=False,
                              env=cli_env(alert_env), timeout=180)

    made = cli("create", "--description", "with a broken channel")
    assert made.returncode == 0 and "Traceback" not in made.stderr, made.stderr
    listed, tested = cli("alerts", "list"), cli("alerts", "test")
    assert listed.returncode == 0 and "invalid webhook URL" in listed.stdout, listed.stderr
    assert "Traceback" not in tested.stderr and "FAILED" in tested.stdout and "invalid webhook URL" in tested.stdout
    fail_a_backup(failing)
    checked = cli("alerts", "check")
    assert checked.returncode == 0 and "0 sent, 1 failed" in checked.stdout, checked.stderr


# ----- M5: which databases' failures count ----------------------------------------------------------------
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def attempt(database: str, status: str, hours_ago: float, kind: str = "manual") -> SimpleNamespace:
    at = NOW - timedelta(hours=hours_ago)
    return SimpleNamespace(id=f"{database}-{hours_ago}", database=database, status=status, kind=kind,
                           finished_at=at, created_at=at, step="", error="failed", location="default")


def test_failures_count_for_the_configured_database_and_databases_backed_up_before() -> None:
    from ehr_backup.alerts.conditions import failed_backups
    records = [attempt("nosuch", Status.FAILED, 1), attempt("ehr", Status.FAILED, 2),
               attempt("old", Status.FAILED, 3), attempt("old", Status.COMPLETED, 30)]
    assert [c.key for c in failed_backups(records, "ehr", NOW)] == ["backup.failed:ehr", "backup.failed:old"]
    assert [c.key for c in failed_backups(records, "nosuch", NOW)] == ["backup.failed:nosuch", "backup.failed:old"]


def test_another_databases_failure_stops_counting_after_a_week_the_configured_ones_does_not() -> None:
    from ehr_backup.alerts.conditions import failed_backups
    records = [attempt("old", Status.FAILED, 8 * 24), attempt("ehr", Status.FAILED, 9 * 24),
               attempt("old", Status.COMPLETED, 30 * 24), attempt("ehr", Status.COMPLETED, 31 * 24)]
    assert [c.key for c in failed_backups(records, "ehr", NOW)] == ["backup.failed:ehr"]
    assert [c.key for c in failed_backups(records, "ehr", NOW, timedelta(days=10))] == \
        ["backup.failed:old", "backup.failed:ehr"]


def test_a_backup_of_a_mistyped_database_url_does_not_stay_open(alert_env: dict[str, str],
                                                                 alerting: BackupService) -> None:
    url = alert_env["DATABASE_URL"]
    typo = url.rsplit("/", 1)[0] + "/nosuch"
    mistyped = BackupService(Settings.from_env({**alert_env, "DATABASE_URL": typo}))
    try:
        with pytest.raises(BackupError):
            mistyped.create(ACTOR, description="typo")
        assert "backup.failed:nosuch" in [c.key for c in mistyped.alerts.collector.collect(utcnow())]
    finally:
        mistyped.db.dispose()
    assert ConnInfo.parse(url).dbname != "nosuch"
    assert [c.key for c in alerting.alerts.collector.collect(utcnow()) if c.event == "backup.failed"] == []


# ----- L8b: the audit chain is re-read at most hourly -------------------------------------------------------
def test_the_audit_chain_is_verified_at_most_hourly_and_tampering_is_still_found(
        alerting: BackupService, alert_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    verify = alerting.verify_audit
    monkeypatch.setattr(alerting, "verify_audit", lambda: calls.append(1) or verify())
    collect = alerting.alerts.collector.audit
    now = utcnow()
    alerting.audit.record(ACTOR, "something", "x")
    alerting.audit.record(ACTOR, "something", "y")
    assert collect(now) == [] and collect(now + timedelta(minutes=5)) == [] and collect(now + timedelta(minutes=59)) == []
    assert len(calls) == 1
    metadata_sql(alert_env, "UPDATE audit SET detail = 'nothing happened' WHERE seq = 2")
    assert [c.key for c in collect(now + timedelta(minutes=61))] == ["audit.broken"]
    assert [c.key for c in collect(now + timedelta(minutes=62))] == ["audit.broken"]  # broken: re-read each time
    assert len(calls) == 3
    assert [c.key for c in collect(now - timedelta(hours=1))] == ["audit.broken"]


# ----- L8c: CR/LF in a header field -------------------------------------------------------------------------
def test_a_database_name_with_a_line_break_still_sends_the_email_with_one_subject_line() -> None:
    cond = Condition("backup.failed:x", "backup.failed", "backup failed:\r\nsecond line", utcnow(),
                     database="ehr\r\nBcc: evil@example.org", location="default\n")
    message = Message("new", cond, utcnow(), "https://backup.example.org/admin/backup")
    with smtp_server("plain") as (inbox, port):
        outcome = send_email("127.0.0.1", port, "none", "", None, "ehr-backup@example.org", ["ops@example.org"],
                             message)
        assert outcome.ok, outcome.error
        assert inbox.received.wait(10)
    mail = inbox.messages[0]
    assert mail["Bcc"] is None and mail["Subject"] == "[EHR Backup] Backup failed: ehr Bcc: evil@example.org"
    assert inbox.envelopes[0][1] == ["ops@example.org"] and "Database: ehr Bcc: evil@example.org" in str(mail)
