"""Sign-in throttling: the pure policy, the real service (SQLite, threads), the Users page and the CLI."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.auth import AuthService, Throttled
from ehr_backup.config import Settings
from ehr_backup.errors import Forbidden, Unauthenticated
from ehr_backup.service import BackupService
from ehr_backup.throttle import POLICY, History, decide, delay_after

from .conftest import ADMIN_PW, USER_PW, run_sql
from .test_cli import cli
from .web_helpers import eventually, login, second_browser

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ATTACKER = "203.0.113.66"
NONCE = "n" * 43  # the shape of a browser nonce cookie


# ----- the pure policy: no database, no clock --------------------------------------------------------
def test_the_first_five_failures_are_free_then_delays_double_up_to_fifteen_minutes() -> None:
    assert [delay_after(n, 5) for n in range(5)] == [timedelta(0)] * 5
    assert [delay_after(n, 5).total_seconds() for n in range(5, 12)] == [15, 30, 60, 120, 240, 480, 900]
    assert delay_after(12, 5) == delay_after(10_000, 5) == timedelta(minutes=15)


def test_an_attempt_waits_out_the_delay_since_the_last_failure_of_its_pair() -> None:
    assert decide(History(4, NOW), NOW).allowed
    early = decide(History(5, NOW - timedelta(seconds=10)), NOW)
    assert not early.allowed and early.wait == timedelta(seconds=5) and "from here" in early.reason
    assert decide(History(5, NOW - timedelta(seconds=15)), NOW).allowed
    assert not decide(History(11, NOW - timedelta(minutes=14)), NOW).allowed
    assert decide(History(500, NOW - timedelta(minutes=15)), NOW).allowed  # capped: never a lock


def test_ceilings_slow_every_address_but_a_new_address_may_always_try_at_once() -> None:
    busy_account = {"account_failures": POLICY.account_ceiling}
    assert decide(History(0, None, **busy_account), NOW).allowed
    first = decide(History(1, NOW, **busy_account), NOW)
    assert not first.allowed and first.wait == timedelta(seconds=15) and "this account" in first.reason
    assert decide(History(1, NOW - timedelta(seconds=15), **busy_account), NOW).allowed
    assert decide(History(3, NOW - timedelta(seconds=60), **busy_account), NOW).allowed
    busy_address = decide(History(2, NOW, address_failures=POLICY.address_ceiling), NOW)
    assert not busy_address.allowed and "this address" in busy_address.reason
    below = decide(History(2, NOW, account_failures=POLICY.account_ceiling - 1,
                           address_failures=POLICY.address_ceiling - 1), NOW)
    assert below.allowed


def test_a_browser_that_signed_in_before_is_not_slowed_by_ceilings() -> None:
    history = History(1, NOW, account_failures=1000, address_failures=1000, known_browser=True)
    assert decide(history, NOW).allowed
    assert not decide(History(5, NOW, known_browser=True), NOW).allowed  # but guessing there is slowed too


# ----- the real service ------------------------------------------------------------------------------
def _db_path(web_env: dict[str, str]) -> Path:
    return Path(web_env["EHR_BACKUP_DATA_DIR"]) / "catalogue.sqlite3"


def wait_passes(web_env: dict[str, str], delta: timedelta) -> None:
    """Move every recorded failed sign-in `delta` into the past, as if that much time had gone by."""
    if web_env.get("EHR_BACKUP_METADATA_URL"):  # EHR_TEST_METADATA=pg
        run_sql(web_env["EHR_BACKUP_METADATA_URL"],
                f"UPDATE auth_failures SET ts = ts - make_interval(secs => {delta.total_seconds()})")
        return
    with sqlite3.connect(_db_path(web_env)) as conn:
        rows = conn.execute("SELECT id, ts FROM auth_failures").fetchall()
        for row_id, ts in rows:
            moved = datetime.fromisoformat(ts) - delta
            conn.execute("UPDATE auth_failures SET ts = ? WHERE id = ?",
                         (moved.strftime("%Y-%m-%d %H:%M:%S.%f"), row_id))


def attempt(auth: AuthService, name: str, password: str, address: str, browser: str = "") -> str:
    """'ok', 'failed' or 'throttled'."""
    try:
        auth.login(name, password, address, *([browser] if browser else []))
        return "ok"
    except Throttled:
        return "throttled"
    except Unauthenticated:
        return "failed"


def test_a_guesser_is_slowed_down_with_doubling_delays_and_throttled_attempts_do_not_count(accounts,
                                                                                          web_env) -> None:
    assert [attempt(accounts, "alice", "guess!", ATTACKER) for _ in range(5)] == ["failed"] * 5
    for _ in range(30):  # one every few seconds, for ever: none of them is a failure
        with pytest.raises(Throttled, match="15 seconds"):
            accounts.login("alice", "guess!", ATTACKER)
    wait_passes(web_env, timedelta(seconds=16))
    assert attempt(accounts, "alice", "guess!", ATTACKER) == "failed"
    with pytest.raises(Throttled, match="30 seconds"):
        accounts.login("alice", ADMIN_PW, ATTACKER)  # the right password waits too: no oracle
    wait_passes(web_env, timedelta(seconds=31))
    assert attempt(accounts, "alice", ADMIN_PW, ATTACKER) == "ok"
    outcomes = [e.outcome for e in accounts._audit.entries(action="login")]
    assert outcomes.count("failed") == 6 and outcomes.count("throttled") == 31 and outcomes[0] == "ok"


def test_an_attacker_at_another_address_cannot_lock_the_admin_out(accounts) -> None:
    for _ in range(40):
        attempt(accounts, "alice", "guess!", ATTACKER)
    assert attempt(accounts, "alice", ADMIN_PW, "198.51.100.7") == "ok"


def test_many_typos_from_a_shared_address_slow_only_that_account(accounts) -> None:
    accounts.add_user(Actor("t"), "carol", "carols-long-password")
    for name in ("carol", "dave", "erin", "frank", "gina", "hank", "ines"):  # past the address ceiling
        for _ in range(5):
            attempt(accounts, name, "typo typo typo", "192.0.2.10")
    assert attempt(accounts, "carol", "carols-long-password", "192.0.2.10") == "throttled"
    assert attempt(accounts, "alice", ADMIN_PW, "192.0.2.10") == "ok"
    assert attempt(accounts, "bob", USER_PW, "192.0.2.10") == "ok"


def test_guesses_from_many_addresses_slow_every_address_but_never_lock_the_account(accounts) -> None:
    for i in range(POLICY.account_ceiling):
        assert attempt(accounts, "alice", "guess!", f"10.66.0.{i}") == "failed"
    assert attempt(accounts, "alice", "typo!", "198.51.100.7") == "failed"
    assert attempt(accounts, "alice", ADMIN_PW, "198.51.100.7") == "throttled"  # 15 s after one failure
    assert attempt(accounts, "alice", ADMIN_PW, "198.51.100.8") == "ok"  # a first try always goes ahead
    state = accounts.login_states()["alice"]
    assert state.ceiling and state.waiting >= 1 and "every new address is slowed" in state.describe()


def test_the_admins_own_browser_is_not_slowed_by_a_guesser_at_the_same_address(accounts) -> None:
    assert attempt(accounts, "alice", ADMIN_PW, "192.0.2.10", NONCE) == "ok"
    for _ in range(10):
        attempt(accounts, "alice", "guess!", "192.0.2.10", "x" * 43)
    assert attempt(accounts, "alice", ADMIN_PW, "192.0.2.10", "x" * 43) == "throttled"
    assert attempt(accounts, "alice", ADMIN_PW, "192.0.2.10", NONCE) == "ok"


def test_forty_concurrent_wrong_passwords_get_exactly_five_password_checks(accounts) -> None:
    results: list[str] = []
    start = threading.Barrier(40)

    def one() -> None:
        start.wait()
        results.append(attempt(accounts, "alice", "concurrent guess", ATTACKER))

    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["failed"] * 5 + ["throttled"] * 35
    audited = [e.outcome for e in accounts._audit.entries(action="login")]
    assert audited.count("failed") == 5 and audited.count("throttled") == 35


def test_a_disabled_account_gets_the_answer_of_a_wrong_password_and_the_audit_says_why(accounts) -> None:
    accounts.update_user(Actor("admin"), "bob", disabled=True)
    with pytest.raises(Unauthenticated) as right:
        accounts.login("bob", USER_PW, "192.0.2.20")
    with pytest.raises(Unauthenticated) as wrong:
        accounts.login("bob", "not bob's password", "192.0.2.20")
    assert right.value.message == wrong.value.message == "wrong user name or password"
    details = [e.detail for e in accounts._audit.entries(action="login")]
    assert details == ["wrong user name or password", "account disabled"]


def test_concurrent_first_admin_setups_create_exactly_one_admin(web_env) -> None:
    svc = BackupService(Settings.from_env(web_env))
    auth = AuthService(svc.db, svc.audit, svc.settings)
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def setup(i: int) -> None:
        start.wait()
        try:
            auth.add_first_admin(Actor("setup-link"), f"admin{i}", "a-long-setup-password")
            outcomes.append("created")
        except Forbidden:
            outcomes.append("refused")

    threads = [threading.Thread(target=setup, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(outcomes) == ["created"] + ["refused"] * 7
        assert len(auth.users()) == 1 and auth.users()[0].is_admin
        with pytest.raises(Forbidden):
            auth.add_first_admin(Actor("setup-link"), "late", "a-long-setup-password")
    finally:
        svc.db.dispose()


# ----- the pages and the CLI -------------------------------------------------------------------------
async def test_two_browsers_completing_setup_at_once_create_one_admin(user: User, web_env) -> None:
    token = secrets.token_urlsafe(16)
    token_file = Settings.from_env(web_env).data_dir / "setup-token"
    token_file.write_text(hashlib.sha256(token.encode()).hexdigest())
    async with second_browser() as other:
        messages = []
        for browser, name in ((user, "first-admin"), (other, "second-admin")):
            await browser.open(f"/setup?token={token}")
            browser.find(marker="setup-username").type(name)
            browser.find(marker="setup-password").type("a-long-setup-password")
            browser.find(marker="setup-confirm").type("a-long-setup-password")
            messages.append(browser.find(marker="setup-error").elements.pop())
        user.find(marker="setup-button").click()
        other.find(marker="setup-button").click()

        svc = BackupService(Settings.from_env(web_env))
        try:
            def decided() -> list[str]:
                return [e.outcome for e in svc.audit.entries(action="user.add") if e.outcome != "started"]

            await eventually(lambda: len(decided()) == 2, timeout=20, state=decided)
            assert sorted(decided()) == ["ok", "refused"]
            users = AuthService(svc.db, svc.audit, svc.settings).users()
            assert len(users) == 1 and users[0].is_admin
        finally:
            svc.db.dispose()
        # the winner goes on to sign in (the simulation's navigation is global, so either browser may
        # show it); the loser's page says why it lost
        lost = "an administrator exists already: sign in instead"
        await eventually(lambda: lost in [m.text for m in messages], timeout=10,
                         state=lambda: [m.text for m in messages])


async def test_the_users_page_shows_a_throttled_account_and_unlocks_it(user: User, accounts) -> None:
    for _ in range(6):
        attempt(accounts, "bob", "guess!", ATTACKER)
    await login(user, next_="/admin/users")
    state = user.find(marker="login-state-bob").elements.pop()
    assert state.text.startswith("throttled: 5 failed sign-ins from 1 source")
    assert user.find(marker="login-state-alice").elements.pop().text == "—"
    user.find(marker="unlock-bob").click()
    await eventually(lambda: user.find(marker="login-state-bob").elements.pop().text == "—")
    assert attempt(accounts, "bob", USER_PW, ATTACKER) == "ok"
    unlock = accounts._audit.entries(action="user.unlock")
    assert [(e.actor, e.target, e.outcome) for e in unlock] == [("alice", "bob", "ok"),
                                                                ("alice", "bob", "started")]
    assert unlock[0].detail == "cleared 5 failed sign-ins"


async def test_the_login_page_gives_a_disabled_account_the_wrong_password_message(user: User,
                                                                                   accounts) -> None:
    accounts.update_user(Actor("admin"), "bob", disabled=True)
    await user.open("/login")
    user.find(marker="username").type("bob")
    user.find(marker="password").type(USER_PW)
    user.find(marker="login-button").click()
    await user.should_see("wrong user name or password", retries=100)
    await user.should_not_see("disabled")


def test_cli_user_unlock_clears_the_failures_and_is_audited(env: dict[str, str]) -> None:
    assert cli(env, "user", "add", "alice", "--admin", input_=ADMIN_PW + "\n").returncode == 0
    svc = BackupService(Settings.from_env(env))
    auth = AuthService(svc.db, svc.audit, svc.settings)
    try:
        for _ in range(6):
            attempt(auth, "alice", "guess!", ATTACKER)
        assert attempt(auth, "alice", ADMIN_PW, ATTACKER) == "throttled"
        listed = cli(env, "user", "list")
        assert "throttled: 5 failed sign-ins" in listed.stdout, listed.stdout
        res = cli(env, "user", "unlock", "alice")
        assert res.returncode == 0 and res.stdout.strip() == "unlocked alice: 5 failed sign-ins forgotten"
        assert attempt(auth, "alice", ADMIN_PW, ATTACKER) == "ok"
        entry = auth._audit.entries(action="user.unlock")[0]
        assert entry.outcome == "ok" and entry.actor.startswith("os:") and entry.target == "alice"
        missing = cli(env, "user", "unlock", "nobody")
        assert missing.returncode == 1 and missing.stderr == "ehr-backup: error: no user named nobody\n"
    finally:
        svc.db.dispose()
