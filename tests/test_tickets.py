"""Login tickets (/auth/complete?ticket=…) belong to the browser that logged in."""

from __future__ import annotations

from typing import Any

import pytest
from nicegui.testing import User
from nicegui.testing.user_navigate import UserNavigate
from sqlmodel import col, select

from ehr_backup.errors import Unauthenticated
from ehr_backup.models import WebSession

from .conftest import USER_PW
from .web_helpers import eventually, second_browser


class HeldNavigation(UserNavigate):
    """A browser that stops at the sign-in link instead of following it, so the test holds the ticket."""

    def __init__(self, user: User) -> None:
        super().__init__(user)
        self.targets: list[str] = []

    def to(self, target: Any, new_tab: bool = False) -> None:
        self.targets.append(str(target))


async def log_in_and_hold_the_link(user: User, name: str, password: str) -> str:
    """Log in through the page as name; return the /auth/complete link the page sent the browser to."""
    await user.open("/login?next=/admin/backup")
    held = HeldNavigation(user)
    user.navigate = held
    user.find(marker="username").type(name)
    user.find(marker="password").type(password)
    user.find(marker="login-button").click()
    await eventually(lambda: bool(held.targets), timeout=10)
    assert held.targets[0].startswith("/auth/complete?ticket=")
    return held.targets[0]


async def test_a_ticket_brought_by_another_browser_is_refused_its_session_ended_and_audited(
        user: User, accounts) -> None:
    link = await log_in_and_hold_the_link(user, "bob", USER_PW)  # the attacker's own account
    async with second_browser() as victim:
        response = await victim.http_client.get(link, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login"
        assert "ehr_session" not in victim.http_client.cookies
    again = await user.http_client.get(link, follow_redirects=False)  # used up, even for its own browser
    assert again.headers["location"] == "/login" and "ehr_session" not in user.http_client.cookies
    with accounts._db.reading() as s:
        sessions = s.exec(select(WebSession).order_by(col(WebSession.created_at).desc())).all()
    assert sessions and sessions[0].ended_at is not None
    refused = accounts._audit.entries(action="login.ticket")
    assert [(e.actor, e.target, e.outcome) for e in refused] == [("anonymous", "bob", "refused")]
    assert "another browser" in refused[0].detail


async def test_the_browser_that_logged_in_redeems_its_ticket_once(user: User, accounts) -> None:
    link = await log_in_and_hold_the_link(user, "alice", "correct-horse-battery")
    response = await user.http_client.get(link, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/backup"
    token = user.http_client.cookies.get("ehr_session")
    assert token and accounts.session(token).username == "alice"
    async with second_browser() as other:
        replay = await other.http_client.get(link, follow_redirects=False)
        assert replay.headers["location"] == "/login" and "ehr_session" not in other.http_client.cookies
    assert accounts.session(token).username == "alice"  # a replayed, spent ticket ends nothing


async def test_the_sign_in_pages_give_the_browser_an_httponly_nonce_cookie_once(user: User, accounts) -> None:
    first = await user.http_client.get("/login")
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("ehr_browser=") and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    again = await user.http_client.get("/setup")
    assert "set-cookie" not in again.headers  # the browser keeps its nonce


def test_a_ticket_needs_the_browsers_nonce(accounts) -> None:
    _, token = accounts.login("alice", "correct-horse-battery", "192.0.2.1", "a" * 43)
    with pytest.raises(Unauthenticated, match="cookie"):
        accounts.issue_ticket(token, "")
    ticket = accounts.issue_ticket(token, "a" * 43)
    with pytest.raises(Unauthenticated, match="another browser"):
        accounts.redeem_ticket(ticket, "", "192.0.2.1")
    with pytest.raises(Unauthenticated):
        accounts.session(token)  # refusing the ticket ended its session
