"""Alerts delivered to real local servers: a webhook receiver that checks the HMAC signature, and aiosmtpd
(plain, STARTTLS with a login, implicit TLS); de-duplicated, repeated after the interval, resolved; failures
recorded; no secret in any message, log line or stored row."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ehr_backup.alerts import secrets as alert_secrets
from ehr_backup.catalogue import utcnow
from ehr_backup.config import Settings
from ehr_backup.errors import BackupError, ConfigError, InvalidInput
from ehr_backup.keys import generate_key, load_keyring
from ehr_backup.service import BackupService

from .alert_servers import self_signed, smtp_server, webhook_receiver
from .conftest import ACTOR, cli_env, metadata_sql, query
from .test_faults import wrapper_bin

SECRET = "receiver-shared-secret-0123456789"
PASSWORD = "smtp-pass-Zq8!never-shown"
LEAK = "topsecret-db-password"


@pytest.fixture
def alert_env(env: dict[str, str]) -> dict[str, str]:
    """The installation, with the free-space warning off so only the conditions a test makes are open."""
    return {**env, "EHR_BACKUP_MIN_FREE_MB": "0", "EHR_BACKUP_PUBLIC_URL": "https://backup.example.org"}


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def alerting(alert_env: dict[str, str], delays: list[float]) -> Iterator[BackupService]:
    svc = BackupService(Settings.from_env(alert_env))
    svc.alerts.sleep = delays.append  # the webhook's backoff, recorded instead of slept
    yield svc
    svc.db.dispose()


@pytest.fixture
def failing(alert_env: dict[str, str], tmp_path: Path) -> Iterator[BackupService]:
    """The same installation, whose pg_dump fails with an error that names a URL with a password."""
    body = f"echo 'pg_dump: error: connection to postgresql://ehr:{LEAK}@db.internal/ehr failed' >&2; exit 1"
    svc = BackupService(Settings.from_env({**alert_env, "EHR_BACKUP_PG_BIN": wrapper_bin(tmp_path, body)}))
    yield svc
    svc.db.dispose()


def fail_a_backup(failing: BackupService) -> None:
    with pytest.raises(BackupError):
        failing.create(ACTOR, description="nightly")


def everything_stored(env: dict[str, str]) -> str:
    """Every row of the metadata database as text."""
    if env.get("EHR_BACKUP_METADATA_URL"):
        names = query(env["EHR_BACKUP_METADATA_URL"], "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return "\n".join(repr(row) for (t,) in names
                         for row in query(env["EHR_BACKUP_METADATA_URL"], f'SELECT * FROM "{t}"'))
    with sqlite3.connect(Path(env["EHR_BACKUP_DATA_DIR"]) / "catalogue.sqlite3") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))


def test_a_failed_backup_is_signed_sent_once_repeated_after_the_interval_and_resolved(
        alerting: BackupService, failing: BackupService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dbname = alerting.connection().dbname
    with webhook_receiver(SECRET) as hook:
        alerting.alerts.add_webhook(ACTOR, hook.url, SECRET)
        fail_a_backup(failing)
        now = utcnow()
        result = alerting.alerts.check(now)
        assert hook.events() == [("backup.failed", "new")] and result["sent"] == 1
        got = hook.got[0]
        assert got.signed and got.headers["x-ehr-backup-event"] == "backup.failed"
        body = got.json
        assert body["database"] == dbname and body["location"] == "default" and body["status"] == "open"
        assert body["link"] == "https://backup.example.org/admin/backup" and body["at"].endswith("Z")
        assert "failed" in body["message"] and "nightly" in body["message"] and LEAK not in got.body.decode()
        assert [a["event"] for a in alerting.alerts.open_alerts()] == ["backup.failed"]

        alerting.alerts.check(now + timedelta(minutes=5))
        alerting.alerts.check(now + timedelta(hours=23))
        assert len(hook.got) == 1  # de-duplicated

        alerting.alerts.check(now + timedelta(hours=24, minutes=1))
        assert hook.events() == [("backup.failed", "new"), ("backup.failed", "repeat")]

        alerting.create(ACTOR, description="good one")
        alerting.alerts.check(now + timedelta(hours=25))
        assert hook.events()[-1] == ("resolved", "resolved")
        resolved = hook.got[-1].json
        assert resolved["resolves"] == "backup.failed" and resolved["database"] == dbname and hook.got[-1].signed
        alerting.alerts.check(now + timedelta(hours=26))
        assert len(hook.got) == 3 and alerting.alerts.open_alerts() == []
    history = alerting.alerts.history()
    assert [(h["kind"], h["outcome"]) for h in history] == [("resolved", "sent"), ("repeat", "sent"), ("new", "sent")]
    assert SECRET not in caplog.text and LEAK not in caplog.text
    assert SECRET not in everything_stored(alerting_env(alerting)) and LEAK not in json.dumps(history)


def alerting_env(service: BackupService) -> dict[str, str]:
    return {"EHR_BACKUP_DATA_DIR": str(service.settings.data_dir)}


def test_a_webhook_answering_500_is_retried_with_backoff(alerting: BackupService, failing: BackupService,
                                                         delays: list[float]) -> None:
    with webhook_receiver(SECRET, statuses=[500, 502]) as hook:
        alerting.alerts.add_webhook(ACTOR, hook.url, SECRET)
        fail_a_backup(failing)
        alerting.alerts.check()
        assert [r.headers["x-answered"] for r in hook.got] == ["500", "502", "200"]
        assert all(r.signed for r in hook.got) and delays == [1.0, 2.0]
    (row,) = alerting.alerts.history()
    assert row["outcome"] == "sent" and row["attempts"] == 3


def test_an_undelivered_alert_is_recorded_logged_as_a_warning_and_tried_again(
        alerting: BackupService, failing: BackupService, delays: list[float],
        caplog: pytest.LogCaptureFixture) -> None:
    with webhook_receiver(SECRET, statuses=[503] * 4) as hook:
        alerting.alerts.add_webhook(ACTOR, hook.url, SECRET)
        fail_a_backup(failing)
        now = utcnow()
        result = alerting.alerts.check(now)
        assert result["failed"] == 1 and len(hook.got) == 4 and delays == [1.0, 2.0, 4.0]
        (row,) = alerting.alerts.history()
        assert (row["outcome"], row["attempts"], row["error"], row["event"]) == ("failed", 4, "HTTP 503",
                                                                                 "backup.failed")
        warnings = [r for r in caplog.records if "not delivered" in r.getMessage()]
        assert warnings and all(r.levelname == "WARNING" for r in warnings)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        alerting.alerts.check(now + timedelta(minutes=5))  # the receiver is back: the alert goes out now
        assert hook.events() == [("backup.failed", "new")]
    assert [h["outcome"] for h in alerting.alerts.history()] == ["sent", "failed"]


def test_a_webhook_that_refuses_a_request_is_not_retried(alerting: BackupService, delays: list[float]) -> None:
    with webhook_receiver("a-different-secret-entirely") as hook:  # it will find the signature wrong: 401
        alerting.alerts.add_webhook(ACTOR, hook.url, SECRET)
        result = alerting.alerts.test(ACTOR)
    assert len(hook.got) == 1 and not hook.got[0].signed and delays == []
    assert result["failed"] == 1 and result["deliveries"][0]["error"] == "HTTP 401"


def test_email_over_starttls_with_a_login_and_the_password_kept_encrypted(
        alerting: BackupService, failing: BackupService, alert_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cert = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))  # the test's CA: the client checks the certificate
    with smtp_server("starttls", cert, login=("alerts", PASSWORD)) as (inbox, port):
        channel = alerting.alerts.add_email(ACTOR, "ops@example.org, dba@example.org", smtp_host="127.0.0.1",
                                            smtp_port=port, smtp_user="alerts", password=PASSWORD,
                                            sender="backup@example.org")
        assert channel["password"] == "set" and channel["security"] == "starttls"
        fail_a_backup(failing)
        assert alerting.alerts.check()["sent"] == 1
        (mail,) = inbox.messages
        assert inbox.envelopes == [("backup@example.org", ["ops@example.org", "dba@example.org"])]
        assert mail["Subject"] == f"[EHR Backup] Backup failed: {alerting.connection().dbname}"
        text = mail.get_payload(decode=True).decode()
        assert "failed" in text and "https://backup.example.org/admin/backup" in text and "Location: default" in text
        assert LEAK not in text and PASSWORD not in text
    listed = json.dumps(alerting.alerts.channels())
    stored = everything_stored(alert_env)
    for place in (listed, stored, caplog.text, json.dumps(alerting.alerts.history())):
        assert PASSWORD not in place
    assert "alerts" in stored and "v1:" in stored  # kept, sealed


def test_email_over_implicit_tls_checks_the_certificate(alerting: BackupService, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cert = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    with smtp_server("tls", cert) as (inbox, port):
        alerting.alerts.add_email(ACTOR, "ops@example.org", smtp_host="127.0.0.1", smtp_port=port, security="tls")
        refused = alerting.alerts.test(ACTOR)
        assert refused["failed"] == 1 and "certificate" in refused["deliveries"][0]["error"] and not inbox.messages
        monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
        assert alerting.alerts.test(ACTOR)["sent"] == 1
        assert inbox.messages[0]["Subject"] == "[EHR Backup] Test alert"


def test_email_through_a_plain_local_relay_and_the_password_from_the_environment(
        alert_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = BackupService(Settings.from_env({**alert_env, "EHR_BACKUP_SMTP_PASSWORD": PASSWORD}))
    with smtp_server("plain") as (inbox, port):
        svc.alerts.add_email(ACTOR, "ops@example.org", smtp_host="127.0.0.1", smtp_port=port, security="none")
        assert svc.alerts.test(ACTOR)["sent"] == 1 and len(inbox.messages) == 1
    with pytest.raises(InvalidInput, match="only sent over TLS"):
        svc.alerts.add_email(ACTOR, "ops@example.org", smtp_host="127.0.0.1", smtp_user="u", security="none")
    cert = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    with smtp_server("starttls", cert, login=("alerts", PASSWORD)) as (inbox, port):
        made = svc.alerts.add_email(ACTOR, "ops@example.org", smtp_host="localhost", smtp_port=port,
                                    smtp_user="alerts")
        assert made["password"] == "from EHR_BACKUP_SMTP_PASSWORD"
        result = svc.alerts.test(ACTOR)
        # the plain relay is gone by now: that channel fails; the STARTTLS one logs in with the environment's
        assert [d["outcome"] for d in result["deliveries"]] == ["failed", "sent"] and len(inbox.messages) == 1
    svc.db.dispose()


def test_a_wrong_smtp_password_is_a_recorded_failure_that_names_no_password(
        alerting: BackupService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    with smtp_server("starttls", cert, login=("alerts", "the-right-one-xyz")) as (inbox, port):
        alerting.alerts.add_email(ACTOR, "ops@example.org", smtp_host="127.0.0.1", smtp_port=port,
                                  smtp_user="alerts", password=PASSWORD)
        result = alerting.alerts.test(ACTOR)
    (row,) = alerting.alerts.history()
    assert result["failed"] == 1 and row["outcome"] == "failed" and "refused the login" in row["error"]
    assert PASSWORD not in json.dumps(row) and not inbox.messages


def test_channel_secrets_are_sealed_under_the_master_key_and_never_listed(alerting: BackupService) -> None:
    made = alerting.alerts.add_webhook(ACTOR, "https://user:pw@hooks.example.org/services/T000/B000/XXXXXXXXXXXX")
    assert len(made["secret"]) >= 32  # made here, returned once
    (listed,) = alerting.alerts.channels()
    assert listed["secret"] == "set" and "pw@" not in listed["target"] and "XXXXXXXX" not in listed["target"]
    sealed = alert_secrets.seal(alerting.keyring(), "hello-secret", "ctx")
    assert "hello-secret" not in sealed and alert_secrets.unseal(alerting.keyring(), sealed, "ctx") == "hello-secret"
    with pytest.raises(ConfigError):
        alert_secrets.unseal(alerting.keyring(), sealed, "another channel")
    with pytest.raises(BackupError):
        alert_secrets.unseal(load_keyring(generate_key(), None), sealed, "ctx")
    with pytest.raises(InvalidInput):
        alerting.alerts.add_webhook(ACTOR, "ftp://example.org/x")
    with pytest.raises(InvalidInput):
        alerting.alerts.add_webhook(ACTOR, "https://example.org/x", "short")
    entries = " ".join(f"{e.target} {e.detail}" for e in alerting.audit.entries(action="alert-channel-add", limit=10))
    assert made["secret"] not in entries


def test_the_other_conditions(alerting: BackupService, alert_env: dict[str, str]) -> None:
    collect = alerting.alerts.collector.collect
    now = utcnow()
    assert collect(now) == []
    good = alerting.create(ACTOR, description="first")
    alerting.schedule_create(ACTOR, "nightly", cron="30 2 * * *", timezone="UTC", description="Nightly {date}")
    assert [c.event for c in collect(now)] == []
    late = collect(now + timedelta(days=3))
    assert [c.key for c in late] == [f"backup.overdue:{good.database}"] and "schedule" in late[0].message

    path = Path(good.directory) / good.id  # a bit flipped in storage: the next verification fails
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BackupError):
        alerting.verify(ACTOR, good.id)
    assert f"verify.failed:{good.id}" in [c.key for c in collect(now)]

    low = BackupService(Settings.from_env({**alert_env, "EHR_BACKUP_MIN_FREE_MB": str(10**9)}))
    assert "storage.low:default" in [c.key for c in low.alerts.collector.collect(now)]
    low.db.dispose()

    class Drills:  # the drills' interface (built elsewhere): latest() per database
        def latest(self) -> list[dict]:
            return [{"database": "ehr", "backupId": "b1", "at": "2026-03-01T02:00:00Z", "outcome": "failed",
                     "recoverySeconds": 3.5, "message": "row counts differ: patients 10 != 9"},
                    {"database": "other", "backupId": "b2", "at": "2026-03-01T02:00:00Z", "outcome": "passed"}]

    alerting.drills = Drills()  # type: ignore[attr-defined]
    drills = [c for c in collect(now) if c.event == "drill.failed"]
    assert [c.key for c in drills] == ["drill.failed:ehr"] and "row counts differ" in drills[0].message

    metadata_sql(alert_env, "UPDATE audit SET detail = 'nothing happened' WHERE seq = 2")
    assert "audit.broken" in [c.key for c in collect(now + timedelta(hours=2))]  # re-read at most hourly


def test_a_failing_schedule_is_an_alert(alerting: BackupService, failing: BackupService) -> None:
    from ehr_backup.scheduler import Scheduler
    alerting.schedule_create(ACTOR, "nightly", cron="30 2 * * *", timezone="UTC", description="Nightly {date}",
                             retries=0)
    Scheduler(failing).run_now(ACTOR, "nightly")
    keys = [c.key for c in alerting.alerts.collector.collect(utcnow())]
    assert "schedule.failed:nightly" in keys and any(k.startswith("backup.failed:") for k in keys)


def test_the_cli_adds_lists_tests_and_shows_the_history(alert_env: dict[str, str]) -> None:
    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ehr_backup.cli", "alerts", *args], input=stdin,
                              capture_output=True, text=True, env=cli_env(alert_env), timeout=120)

    with webhook_receiver(SECRET) as hook:
        added = cli("add-webhook", hook.url, "--secret", "-", stdin=SECRET + "\n")
        assert added.returncode == 0, added.stderr
        assert "added alert channel 1: webhook http://127.0.0.1" in added.stdout and SECRET not in added.stdout
        made = cli("add-webhook", hook.url + "/2", "--json")
        generated = json.loads(made.stdout)["secret"]
        listed = cli("list", "--json")
        assert generated not in listed.stdout and SECRET not in listed.stdout
        assert [c["secret"] for c in json.loads(listed.stdout)["channels"]] == ["set", "set"]
        tested = cli("test")
        assert tested.returncode == 0 and tested.stdout.count("SENT") == 1 and tested.stdout.count("FAILED") == 1
        assert hook.got[0].json["event"] == "test" and hook.got[0].signed
        history = json.loads(cli("history", "--json").stdout)["history"]
        assert sorted(h["outcome"] for h in history) == ["failed", "sent"]
        assert cli("remove", "2").returncode == 0 and cli("remove", "2").returncode == 1
        checked = cli("check")
        assert checked.returncode == 0 and "no open alerts" in checked.stdout
    refused = cli("add-email", "ops@example.org", "--smtp-host", "127.0.0.1", "--smtp-user", "u", stdin="")
    assert refused.returncode == 2 and "give the SMTP password" in refused.stderr


def test_a_job_that_ends_wakes_the_alert_loop_which_sends_at_once(alerting: BackupService,
                                                                  failing: BackupService) -> None:
    import threading
    import time

    from ehr_backup.jobs import JobManager
    with webhook_receiver(SECRET) as hook:
        alerting.alerts.add_webhook(ACTOR, hook.url, SECRET)
        stop = threading.Event()
        loop = threading.Thread(target=alerting.alerts.serve, args=(stop, 3600.0), daemon=True)
        loop.start()  # its first periodic look is 15 s away: only the poke can make it send sooner
        try:
            jobs = JobManager(after=lambda job: alerting.alerts.poke())
            job = jobs.start(failing.prepare_create(ACTOR, description="nightly"), "tester")
            assert job.done.wait(60) and job.status == "failed"
            deadline = time.monotonic() + 10
            while not hook.got and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hook.events() == [("backup.failed", "new")]
        finally:
            stop.set()
            loop.join(10)
