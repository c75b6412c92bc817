"""Checked, not hoped: every page passes axe-core's WCAG 2.1 AA rules (no serious or critical violation), fits
390, 768 and 1366 px without sideways scrolling, is styled and free of Python errors, in light and dark mode;
a screenshot of each lands in test-output/screenshots/design-<page>-<width>-<mode>.png."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect

from .conftest import ADMIN_PW, SHOTS, USER_PW, Server
from .test_journeys import login

WIDTHS = (390, 768, 1366)
MODES = ("light", "dark")
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@dataclass(frozen=True)
class Screen:
    """A page to check: who looks at it, where, and what shows that it has rendered."""

    name: str
    path: str
    ready: str  # data-testid of an element the page shows once rendered
    who: str | None = "alice"  # None: signed out
    nicegui: bool = True  # the 403 page is answered before NiceGUI


SCREENS = {s.name: s for s in (
    Screen("login", "/login", "login-button", who=None),
    Screen("eh", "/eh", "backup-card"),
    Screen("rh", "/rh", "backup-card"),
    Screen("backup", "/admin/backup?from=eh", "create-button"),
    Screen("users", "/admin/users?from=rh", "user-list"),
    Screen("audit", "/admin/audit?from=eh", "audit-table"),
    Screen("not-found", "/eh/no-such-page", "not-found"),
    Screen("forbidden", "/admin/users", "forbidden", who="bob", nicegui=False),
    Screen("non-admin", "/eh", "no-modules", who="bob"),
    Screen("alerts", "/admin/alerts?from=eh", "thresholds"),
    Screen("setup", "/setup", "setup-invalid", who=None),  # an administrator exists: the link's refusal page
)}
AXE_SCREENS = ("login", "eh", "rh", "backup", "users", "audit", "not-found", "forbidden", "alerts", "setup")


@pytest.fixture(scope="module")
def sessions(browser: Browser, server: Server) -> Iterator[Callable[[str | None, str], BrowserContext]]:
    """A signed-in browser context per user and colour mode (signing in is throttled: do it once each)."""
    made: dict[tuple[str | None, str], BrowserContext] = {}

    def get(who: str | None, mode: str) -> BrowserContext:
        if (who, mode) not in made:
            context = browser.new_context(color_scheme=mode)  # the system setting the theme follows
            context.add_init_script(f"try {{ localStorage.setItem('ehr-theme', '{mode}') }} catch (e) {{}}")
            if who:
                page = context.new_page()
                login(page, server, who, ADMIN_PW if who == "alice" else USER_PW)
                page.close()
            made[(who, mode)] = context
        return made[(who, mode)]

    yield get
    for context in made.values():
        context.close()


def _open(sessions: Callable[[str | None, str], BrowserContext], server: Server, screen: Screen, mode: str,
          width: int) -> Page:
    page = sessions(screen.who, mode).new_page()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server.url + screen.path)
    expect(page.get_by_test_id(screen.ready).first).to_be_visible(timeout=30_000)
    if screen.nicegui:  # the theme applied: accent variables set, dark mode as chosen
        expect(page.locator("body")).to_have_class(
            re.compile(r"body--dark" if mode == "dark" else r"body--light"), timeout=10_000)
    page.wait_for_timeout(300)  # let Quasar finish laying out (menus, table widths)
    return page


def _check_styled_and_sane(page: Page, screen: Screen) -> None:
    text = page.locator("body").inner_text()
    assert "Traceback" not in text and "Internal Server Error" not in text, text[:500]
    if screen.nicegui:
        accent = page.evaluate("getComputedStyle(document.body).getPropertyValue('--ehr-accent-bg')")
        assert accent.strip(), "the page is not styled by the shared theme"
    else:
        assert page.evaluate("document.styleSheets.length") >= 1, "unstyled page"


def _overflowing_text(page: Page) -> list[str]:
    """Labels whose text runs out of their own box (cut off or spilling over a neighbour)."""
    return page.evaluate("""() => [...document.querySelectorAll(
        '.q-btn__content, .q-field__label, .ehr-badge, .ehr-title, .ehr-section-title')]
        .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
        .map(e => e.textContent.trim().slice(0, 60))""")


def _responsive_params() -> list:
    params = []
    for name in SCREENS:
        for width in WIDTHS:
            for mode in MODES:
                params.append(pytest.param(name, width, mode, id=f"{name}-{width}-{mode}"))
    return params


@pytest.mark.parametrize(("name", "width", "mode"), _responsive_params())
def test_every_page_fits_its_width_is_styled_and_is_photographed(sessions, server: Server, name: str, width: int,
                                                                 mode: str) -> None:
    screen = SCREENS[name]
    page = _open(sessions, server, screen, mode, width)
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"design-{name}-{width}-{mode}.png"), full_page=True)
        _check_styled_and_sane(page, screen)
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{name} at {width} px is {scroll} px wide: the page scrolls sideways"
        assert _overflowing_text(page) == []
    finally:
        page.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", AXE_SCREENS)
def test_every_page_has_no_serious_accessibility_violation(sessions, server: Server, name: str, mode: str) -> None:
    page = _open(sessions, server, SCREENS[name], mode, 1366)
    try:
        results = Axe().run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS}})
        bad = [(v["id"], v["impact"], v["help"],
                [(n["target"], n["html"][:120], (n.get("any") or [{}])[0].get("message", "")[:160])
                 for n in v["nodes"]][:5])
               for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        assert bad == [], f"{name} ({mode}): {bad}"
    finally:
        page.close()


def test_the_theme_toggle_cycles_and_is_remembered(browser: Browser, server: Server) -> None:
    context = browser.new_context(color_scheme="light")
    page = context.new_page()
    try:
        page.goto(server.url + "/login")
        expect(page.locator("body")).to_have_class(re.compile("body--light"))
        page.get_by_test_id("theme-toggle").click()  # auto → dark
        expect(page.locator("body")).to_have_class(re.compile("body--dark"))
        page.reload()
        expect(page.locator("body")).to_have_class(re.compile("body--dark"), timeout=10_000)
        page.get_by_test_id("theme-toggle").click()  # dark → light
        expect(page.locator("body")).to_have_class(re.compile("body--light"))
        assert page.evaluate("localStorage.getItem('ehr-theme')") == "light"
    finally:
        context.close()
