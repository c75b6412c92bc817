"""The Alerts page's thresholds form and channel controls, and the REST routes, driven by NiceGUI's simulated
user against real local receivers."""

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


async def test_the_page_stores_thresholds_says_where_they_come_from_and_resets_them(
        user: User, accounts, backups: BackupService) -> None:
    store = backups.alert_thresholds
    await login(user, next_="/admin/alerts")
    await user.should_see(marker="save-thresholds", retries=100)
    await user.should_see("default (EHR_BACKUP_MIN_FREE_MB not set)")
    user.find(marker="threshold-minFreeMb").elements.pop().value = 2048
    user.find(marker="save-thresholds").click()
    await eventually(lambda: "minFreeMb" in store.stored())
    assert store.current().min_free_mb == 2048 and store.stored()["minFreeMb"].updated_by == "alice"
    await user.should_see("stored by alice", retries=100)
    user.find(marker="threshold-repeatHours").elements.pop().value = 0
    user.find(marker="save-thresholds").click()
    await user.should_see("repeatHours is a whole number of hours from 1 to 8760", retries=100)
    assert "repeatHours" not in store.stored()
    user.find(marker="threshold-reset-minFreeMb").click()
    await eventually(lambda: store.stored() == {})
    await user.should_see("default (EHR_BACKUP_MIN_FREE_MB not set)", retries=100)
    assert [e.outcome for e in backups.audit.entries(action="alert-settings", limit=5)].count("ok") == 2


async def test_the_switch_turns_a_channel_off_and_the_recipients_can_be_edited(
        user: User, accounts, backups: BackupService) -> None:
    with webhook_receiver(SECRET) as hook, smtp_server("plain") as (inbox, port):
        hooked = backups.alerts.add_webhook(ACTOR, hook.url, SECRET)
        mailed = backups.alerts.add_email(ACTOR, "ops@example.org", smtp_host="127.0.0.1", smtp_port=port,
                                          security="none")
        await login(user, next_="/admin/alerts")
        await user.should_see(marker=f"channel-enabled-{hooked['id']}", retries=100)
        user.find(marker=f"channel-enabled-{hooked['id']}").click()
        await eventually(lambda: [c["enabled"] for c in backups.alerts.channels()] == [False, True])
        user.find(marker=f"channel-recipients-{mailed['id']}").elements.pop().value = "night@example.org"
        user.find(marker=f"save-recipients-{mailed['id']}").click()
        await eventually(lambda: backups.alerts.channels()[1]["recipients"] == ["night@example.org"])
        user.find(marker="send-test-alert").click()
        await eventually(lambda: len(inbox.messages) == 1)
        await user.should_see("Test alert: 1 sent, 0 failed", retries=100)
        assert hook.got == [] and inbox.envelopes[0][1] == ["night@example.org"]
    assert backups.audit.entries(action="alert-channel-disable", limit=1)[0].actor == "alice"
    assert backups.audit.entries(action="alert-channel-recipients", limit=1)[0].actor == "alice"


async def test_thresholds_and_channels_through_the_api(user: User, accounts, backups: BackupService) -> None:
    auth = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}
    http = user.http_client
    got = (await http.get(f"{API}/alerts/settings", headers=auth)).json()["thresholds"]
    assert got["minFreeMb"]["source"] == "default" and got["minFreeMb"]["variable"] == "EHR_BACKUP_MIN_FREE_MB"
    put = await http.put(f"{API}/alerts/settings", json={"minFreeMb": 4096, "repeatHours": 6}, headers=auth)
    assert put.status_code == 200, put.text
    stored = put.json()["thresholds"]["minFreeMb"]
    assert stored == {**stored, "value": 4096, "source": "stored", "updatedBy": "alice"}
    assert (await http.get(f"{API}/alerts", headers=auth)).json()["thresholds"]["repeatHours"] == 6
    bad = await http.put(f"{API}/alerts/settings", json={"fillWarnDays": 99999}, headers=auth)
    assert bad.status_code == 422 and bad.json() == {"error": "fillWarnDays is a whole number of days from 0 to 3650"}
    unknown = await http.put(f"{API}/alerts/settings", json={"checkMinutes": 1}, headers=auth)
    assert unknown.status_code == 422
    reset = await http.put(f"{API}/alerts/settings", json={"minFreeMb": None}, headers=auth)
    assert reset.json()["thresholds"]["minFreeMb"]["source"] == "default"
    assert reset.json()["thresholds"]["repeatHours"]["value"] == 6  # fields not given stay as they were
    made = backups.alerts.add_webhook(ACTOR, "https://example.org/hook", SECRET)
    off = await http.patch(f"{API}/alerts/channels/{made['id']}", json={"enabled": False}, headers=auth)
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert (await http.patch(f"{API}/alerts/channels/999", json={"enabled": True}, headers=auth)).status_code == 404
    assert (await http.patch(f"{API}/alerts/channels/{made['id']}", json={}, headers=auth)).status_code == 422
    wrong = await http.patch(f"{API}/alerts/channels/{made['id']}", json={"recipients": ["a@b.org"]}, headers=auth)
    assert wrong.status_code == 422 and "only an email channel" in wrong.json()["error"]
    bob = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'bob')}"}
    assert (await http.put(f"{API}/alerts/settings", json={"minFreeMb": 1}, headers=bob)).status_code == 403
    assert (await http.get(f"{API}/alerts/settings")).status_code == 401
    assert (await http.patch(f"{API}/alerts/channels/{made['id']}", json={"enabled": True})).status_code == 401
    assert backups.alert_thresholds.current().min_free_mb == 1024 and backups.alerts.channels()[0]["enabled"] is False
