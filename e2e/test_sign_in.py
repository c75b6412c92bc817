"""Sign-in in real browsers: a login link only works in the browser that logged in."""

from __future__ import annotations

from playwright.sync_api import Browser, Route, expect

from .conftest import USER_PW, Server


def test_a_login_link_opened_in_another_browser_signs_nobody_in(browser: Browser, server: Server) -> None:
    attacker = browser.new_context()
    page = attacker.new_page()
    held: list[str] = []

    def hold(route: Route) -> None:  # the attacker stops at the link instead of following it
        held.append(route.request.url)
        route.abort()

    page.route("**/auth/complete**", hold)
    page.goto(server.url + "/login")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill(USER_PW)
    page.get_by_role("button", name="Log in").click()
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(100)
    assert held and "/auth/complete?ticket=" in held[0]

    victim = browser.new_context()
    victim_page = victim.new_page()
    victim_page.goto(held[0])
    expect(victim_page.get_by_test_id("login-button")).to_be_visible()
    assert victim_page.url.startswith(server.url + "/login")
    assert not [c for c in victim.cookies() if c["name"] == "ehr_session"]
    victim_page.goto(server.url + "/eh")
    expect(victim_page.get_by_test_id("login-button")).to_be_visible()  # still signed out
    attacker.close()
    victim.close()
