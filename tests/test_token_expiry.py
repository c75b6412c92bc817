"""API tokens with an expiry: chosen when made (page, CLI), refused afterwards with a clear 401, audited."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from nicegui.testing import User
from sqlmodel import func, select

from ehr_backup.audit import Actor
from ehr_backup.catalogue import utcnow
from ehr_backup.errors import InvalidInput
from ehr_backup.models import AuthFailure
from ehr_backup.token_expiry import choice_moment, expires_after, expires_on, is_expired, stamp

from .web_helpers import eventually, login

NOW = datetime(2026, 11, 30, 15, 45, tzinfo=UTC)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_offered_choices_mean_days_from_now_or_the_end_of_a_chosen_day() -> None:
    assert choice_moment("never", None, NOW) is None
    assert choice_moment("30", None, NOW) == NOW + timedelta(days=30)
    assert choice_moment("365", None, NOW) == NOW + timedelta(days=365)
    assert choice_moment("date", date(2026, 12, 31), NOW) == datetime(2027, 1, 1, tzinfo=UTC)
    assert expires_on(date(2026, 11, 30), NOW) == datetime(2026, 12, 1, tzinfo=UTC)  # today: to midnight UTC
    with pytest.raises(InvalidInput, match="has passed"):
        expires_on(date(2026, 11, 29), NOW)
    with pytest.raises(InvalidInput, match="last day"):
        choice_moment("date", None, NOW)
    for bad in (0, -3, 3651):
        with pytest.raises(InvalidInput, match="1 to 3650 days"):
            expires_after(bad, NOW)
    with pytest.raises(InvalidInput):
        choice_moment("forever", None, NOW)


def test_a_token_is_refused_from_its_expiry_on_and_naive_times_are_utc() -> None:
    end = datetime(2026, 12, 1)  # as SQLite gives it back: naive, UTC
    assert not is_expired(None, NOW)
    assert not is_expired(end, datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    assert is_expired(end, datetime(2026, 12, 1, tzinfo=UTC))
    assert stamp(end) == "2026-12-01 00:00 UTC" and stamp(None) == "never"


def test_a_token_cannot_be_made_already_expired(accounts) -> None:
    with pytest.raises(InvalidInput, match="future"):
        accounts.create_token(Actor("t"), "alice", expires_at=utcnow() - timedelta(seconds=1))
    assert list(accounts.tokens()) == []


async def test_an_expired_token_gets_a_401_sentence_is_audited_as_refused_and_counts_no_guess(
        user: User, accounts) -> None:
    soon = utcnow() + timedelta(seconds=1.5)
    token = accounts.create_token(Actor("t"), "alice", "nightly", expires_at=soon)
    ok = await user.http_client.get("/api/admin/backup/list", headers=bearer(token), params={"limit": 1})
    assert ok.status_code == 200  # still valid
    await asyncio.sleep(1.6)
    for _ in range(3):
        late = await user.http_client.get("/api/admin/backup/list", headers=bearer(token))
        assert late.status_code == 401
        assert set(late.json()) == {"error"}
        assert f"this API token ({token[:12]}…) expired on " in late.json()["error"]
        assert "create a new one" in late.json()["error"] and token not in late.json()["error"]
    metrics = await user.http_client.get("/metrics", headers=bearer(token))
    assert metrics.status_code == 401 and "expired" in metrics.json()["error"]
    refused = [e for e in accounts._audit.entries(action="access") if e.outcome == "refused"]
    assert any(e.actor == "alice" and "expired on" in e.detail for e in refused), [(e.actor, e.detail)
                                                                                  for e in refused]
    with accounts._db.reading() as s:  # the throttle counts guesses (invalid tokens), and this was none
        guesses = select(func.count()).select_from(AuthFailure).where(AuthFailure.kind == "token")
        assert s.exec(guesses).one() == 0
    made = [e for e in accounts._audit.entries(action="token.create") if e.outcome == "ok"]
    assert "expires=" in made[-1].detail and token not in made[-1].detail


def test_the_cli_makes_a_token_that_expires_and_lists_when(env: dict[str, str], service) -> None:
    from .test_cli import cli
    assert cli(env, "user", "add", "alice", "--admin", input_="correct-horse-battery\n").returncode == 0
    made = cli(env, "token", "create", "alice", "--expires-in", "30", "--label", "ci")
    assert made.returncode == 0, made.stderr
    expected = (utcnow() + timedelta(days=30)).strftime("%Y-%m-%d")
    assert ", refused from " + expected in made.stdout
    assert made.stdout.strip().splitlines()[-1].startswith("ehrb_")
    listed = json.loads(cli(env, "token", "list", "--json").stdout)["tokens"]
    assert [(t["label"], t["expires"][:10], t["expired"]) for t in listed] == [("ci", expected, False)]
    assert "expires " + expected in cli(env, "token", "list").stdout
    forever = cli(env, "token", "create", "alice")
    assert forever.returncode == 0 and "refused from" not in forever.stdout
    bad = cli(env, "token", "create", "alice", "--expires-in", "0")
    assert bad.returncode != 0 and "1 to 3650 days" in bad.stderr + bad.stdout
    assert "--expires-in" in cli(env, "token", "create", "--help").stdout


def test_tokens_made_before_expiry_existed_never_expire(tmp_path: Path) -> None:
    from ehr_backup.db import Database
    from ehr_backup.models import ApiToken
    path = tmp_path / "catalogue.sqlite3"
    Database(path).dispose()
    with sqlite3.connect(path) as conn:  # the table as the version before expiry made it, with one token
        conn.execute("ALTER TABLE api_tokens DROP COLUMN expires_at")
        conn.execute("INSERT INTO users (username, password_hash, is_admin, disabled, created_at) "
                     "VALUES ('alice', '', 1, 0, '2025-01-01 00:00:00')")
        conn.execute("INSERT INTO api_tokens (user_id, label, token_hash, prefix, created_at, scope) "
                     "VALUES (1, 'old', 'h', 'ehrb_x', '2025-01-01 00:00:00', 'admin')")
    db = Database(path)
    try:
        with db.reading() as s:
            assert [t.expires_at for t in s.exec(select(ApiToken)).all()] == [None]
    finally:
        db.dispose()


async def test_the_users_page_makes_a_token_with_an_expiry_and_shows_it(user: User, accounts) -> None:
    await login(user, next_="/admin/users")
    user.find(marker="token-user").elements.pop().value = "alice"
    user.find(marker="token-expiry").elements.pop().value = "90"
    user.find(marker="create-token").click()
    await user.should_see(marker="token-copy")
    await eventually(lambda: len(accounts.tokens()) == 1, timeout=10)
    made = accounts.tokens()[0]
    assert made.expires_at is not None
    left = made.expires_at.replace(tzinfo=UTC) - utcnow()
    assert timedelta(days=89, hours=23) < left <= timedelta(days=90)
    note = user.find(marker="token-expires-note").elements.pop().text
    assert note == f"It is refused from {stamp(made.expires_at)} on."
    await eventually(lambda: user.find(marker=f"expires-{made.prefix}").elements.pop().text
                     == f"expires {stamp(made.expires_at)}", timeout=10)


async def test_the_users_page_asks_for_a_day_it_understands_and_marks_expired_tokens(
        user: User, accounts) -> None:
    old = accounts.create_token(Actor("t"), "alice", "old", expires_at=utcnow() + timedelta(seconds=0.5))
    await asyncio.sleep(0.6)
    await login(user, next_="/admin/users")
    prefix = old[:12]
    assert user.find(marker=f"token-state-{prefix}").elements.pop().text == "expired"
    assert user.find(marker=f"expires-{prefix}").elements.pop().text.startswith("expired ")
    user.find(marker="token-user").elements.pop().value = "alice"
    user.find(marker="token-expiry").elements.pop().value = "date"
    await user.should_see(marker="token-last-day")
    user.find(marker="token-last-day").type("31/12/2030")
    user.find(marker="create-token").click()
    await user.should_see("31/12/2030 is not understood")
    assert len(accounts.tokens()) == 1  # nothing made
    user.find(marker="token-last-day").clear()
    user.find(marker="token-last-day").type("2030-12-31")
    user.find(marker="create-token").click()
    await eventually(lambda: len(accounts.tokens()) == 2, timeout=10)
    assert stamp(accounts.tokens()[0].expires_at) == "2031-01-01 00:00 UTC"
