"""The alerts page and REST routes, driven by NiceGUI's simulated user against real local receivers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .alert_servers import smtp_server, webhook_receiver
from .conftest import ACTOR
from .web_helpers import eventually, login

API = "/api/admin/backup"
SECRET = "page-test-secret-0123456789abcdef"


@pytest.fixture
def backups(web_env: dict[str, str]) -> Iterator[BackupService]:
    svc = BackupService(Settings.from_env(web_env))
    yield svc
    svc.db.dispose()


async def test_the_send_test_alert_button_reaches_the_channels_and_the_history_shows_it(
        user: User, accounts, backups: BackupService) -> None:
    with webhook_receiver(SECRET) as hook, smtp_server("plain") as (inbox, port):
        backups.alerts.add_webhook(ACTOR, hook.url, SECRET)
        await login(user, next_="/admin/alerts")
        await user.should_see(marker="send-test-alert", retries=100)
        await user.should_see("secret: set")
        user.find(marker="email-recipients").type("ops@example.org")
        user.find(marker="email-host").type("127.0.0.1")
        user.find(marker="email-port").elements.pop().value = port
        user.find(marker="email-security").elements.pop().value = "none"
        user.find(marker="add-email").click()
        await user.should_see("password: not needed", retries=100)
        user.find(marker="send-test-alert").click()
        await eventually(lambda: len(hook.got) == 1 and len(inbox.messages) == 1)
        assert hook.got[0].signed and hook.got[0].json["event"] == "test" and "alice" in hook.got[0].json["message"]
        await user.should_see("Test alert: 2 sent, 0 failed", retries=100)
        await user.should_see(marker="history", retries=50)
    assert [h["outcome"] for h in backups.alerts.history()] == ["sent", "sent"]
    assert backups.audit.entries(action="alert-test", limit=1)[0].actor == "alice"


async def test_the_backup_page_header_links_to_alerts(user: User, accounts) -> None:
    await login(user, next_="/admin/backup")
    await user.should_see(marker="nav-alerts", retries=100)


async def test_alerts_through_the_api(user: User, accounts, backups: BackupService) -> None:
    auth = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}
    http = user.http_client
    with webhook_receiver(SECRET) as hook:
        made = await http.post(f"{API}/alerts/webhooks", json={"url": hook.url}, headers=auth)
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        hook.secret = secret
        listed = (await http.get(f"{API}/alerts", headers=auth)).json()
        assert [c["secret"] for c in listed["channels"]] == ["set"] and secret not in str(listed)
        assert listed["thresholds"]["repeatHours"] == 24
        tested = await http.post(f"{API}/alerts/test", headers=auth)
        assert tested.status_code == 200 and tested.json()["sent"] == 1 and hook.got[0].signed
        history = (await http.get(f"{API}/alerts/history", headers=auth)).json()["history"]
        assert history[0]["event"] == "test" and history[0]["outcome"] == "sent"
        checked = await http.post(f"{API}/alerts/check", headers=auth)
        assert checked.status_code == 200 and (await http.get(f"{API}/alerts/open", headers=auth)).json() == {
            "open": checked.json()["open"]}
    bad = await http.post(f"{API}/alerts/emails", json={"recipients": ["not an address"], "smtpHost": "h"},
                          headers=auth)
    assert bad.status_code == 422 and "email addresses" in bad.json()["error"]
    assert (await http.delete(f"{API}/alerts/channels/{made.json()['id']}", headers=auth)).status_code == 200
    assert (await http.delete(f"{API}/alerts/channels/999", headers=auth)).status_code == 404
    bob = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'bob')}"}
    assert (await http.get(f"{API}/alerts", headers=bob)).status_code == 403
    assert (await http.get(f"{API}/alerts/history")).status_code == 401


async def test_a_bad_stored_webhook_url_neither_breaks_the_api_nor_blocks_the_event_loop(
        user: User, accounts, backups: BackupService, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from ehr_backup.audit import AuditLog

    from .test_alert_fixes import BAD_URL, store_as_an_older_version_did
    on_loop: list[str] = []
    record = AuditLog.record

    def watched(self, actor, action, *args, **kwargs):  # where each audit write runs
        try:
            asyncio.get_running_loop()
            if action.startswith("alert"):
                on_loop.append(action)
        except RuntimeError:
            pass
        return record(self, actor, action, *args, **kwargs)

    monkeypatch.setattr(AuditLog, "record", watched)
    auth = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}
    http = user.http_client
    store_as_an_older_version_did(backups)
    listed = await http.get(f"{API}/alerts", headers=auth)
    assert listed.status_code == 200 and "invalid webhook URL" in listed.json()["channels"][0]["target"]
    tested = await http.post(f"{API}/alerts/test", headers=auth)
    assert tested.status_code == 200 and tested.json()["failed"] == 1
    assert (await http.post(f"{API}/alerts/check", headers=auth)).status_code == 200
    refused = await http.post(f"{API}/alerts/webhooks", json={"url": BAD_URL}, headers=auth)
    assert refused.status_code == 422 and "port" in refused.json()["error"]
    assert on_loop == []
    errors = [h["error"] for h in backups.alerts.history()]
    assert errors and all("webhook URL is not valid" in e for e in errors)
