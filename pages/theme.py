"""One look for every page: module accents, light/dark colours, spacing, cards, badges, the theme toggle."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nicegui import ui

# Each accent has colours measured for WCAG AA (4.5:1): `bg`/`on` for filled things (header, primary
# buttons, the module card), `text` for accent-coloured text, links and icons on the light page, and
# `text_dark` for the same on the dark page. White on yellow measures 1.92:1, so Radiation Health puts
# dark text on its yellow and uses a darker amber (#b45309, 5.0:1 on white) for links and icons.
ACCENTS: dict[str, dict[str, str]] = {
    "eh": {"name": "Electronic Health", "path": "/eh", "icon": "medical_services",
           "bg": "#7e22ce", "on": "#ffffff", "header": "#6b21a8", "text": "#7e22ce", "text_dark": "#d8b4fe",
           "card": "background-color: #7e22ce; color: #ffffff"},
    "rh": {"name": "Radiation Health", "path": "/rh", "icon": "biotech",
           "bg": "#facc15", "on": "#111827", "header": "#facc15", "text": "#b45309", "text_dark": "#fcd34d",
           "card": "background-color: #facc15; color: #111827"},
}

# Outcome/state badges: (background, text) pairs with at least 4.5:1 contrast, the same in both modes.
BADGES: dict[str, tuple[str, str]] = {
    "ok": ("#dcfce7", "#14532d"), "started": ("#dbeafe", "#1e3a8a"), "failed": ("#fee2e2", "#7f1d1d"),
    "refused": ("#ffedd5", "#7c2d12"), "throttled": ("#fef3c7", "#78350f"), "neutral": ("#e5e7eb", "#1f2937"),
    # the audit log's other outcomes: a crash mid-operation reads as a failure, a restore put back as a warning
    "interrupted": ("#fee2e2", "#7f1d1d"), "recovered": ("#fef3c7", "#78350f"), "cancelled": ("#e5e7eb", "#1f2937"),
}

STORAGE_KEY = "ehr-theme"  # per browser: "auto" (follow the system), "light" or "dark"

_CSS = """
<style>
  body { --ehr-accent-bg: %(bg)s; --ehr-accent-on: %(on)s; --ehr-accent-text: %(text)s;
         --q-primary: %(text)s; font-size: 15px; }
  body.body--dark { --ehr-accent-text: %(text_dark)s; --q-primary: %(text_dark)s; }
  .ehr-back { display: inline-flex; align-items: center; gap: .25rem; white-space: nowrap; }
  .ehr-back::before { content: "arrow_back"; font-family: "Material Icons"; font-size: 1.25rem; }
  .ehr-page { width: 100%%; max-width: 72rem; margin: 0 auto; padding: 1rem; gap: 1.25rem; }
  @media (min-width: 640px) { .ehr-page { padding: 1.5rem; } }
  /* room under the last card for the bottom-right toasts: scrolled to the end, no control (the table's
     paging, say) stays under a toast */
  .ehr-page { padding-bottom: 6rem; }
  .ehr-card { width: 100%%; border-radius: 12px; }
  .ehr-title { font-size: 1.5rem; font-weight: 600; line-height: 1.3; }
  .ehr-section-title { font-size: 1.125rem; font-weight: 600; }
  .ehr-muted { color: #4b5563; }
  body.body--dark { background: #111827; }
  body.body--dark .q-card { background: #1f2937; }
  .ehr-badge { display: inline-block; padding: 0 .5rem; border-radius: 999px; font-size: .8rem;
               font-weight: 600; line-height: 1.5rem; white-space: nowrap; }
  .q-table td, .q-table th { overflow-wrap: anywhere; }
  .ehr-wrap { overflow-wrap: anywhere; min-width: 0; }
  /* one typography for every button: sentence case (Quasar's default is uppercase unless no-caps is set) */
  .q-btn { text-transform: none; }
  /* row separators (border-b) as a hairline, not the text colour Tailwind 4 gives borders by default */
  .border-b, .border-t { border-color: #e5e7eb; }
  body.body--dark .border-b, body.body--dark .border-t { border-color: #374151; }
  /* NiceGUI loads Quasar in cascade layers: an !important in the first layer ("theme") is the only one that
     wins over Quasar's own (.text-primary, .bg-primary, .text-negative ...) */
  @layer theme {
    html body .bg-primary { background: var(--ehr-accent-bg) !important; color: var(--ehr-accent-on) !important; }
    html body .text-primary, html body a.ehr-link { color: var(--ehr-accent-text) !important; }
    .ehr-header { background: %(header)s !important; color: %(on)s !important; }
    .ehr-header a, .ehr-header .q-btn { color: inherit !important; }
    body.body--dark .ehr-muted, body.body--dark .text-grey-7,
    body.body--dark .text-grey-8 { color: #cbd5e1 !important; }
    .text-positive { color: #15803d !important; }
    body.body--dark .text-negative { color: #fca5a5 !important; }
    body.body--dark .text-positive { color: #86efac !important; }
    :focus-visible { outline: 3px solid var(--ehr-accent-text) !important; outline-offset: 2px; }
    .ehr-header :focus-visible { outline-color: currentColor !important; }
  }
</style>
"""

# Apply the browser's remembered choice (default: follow the system) once NiceGUI has mounted the page;
# the toggle cycles auto → dark → light and remembers the choice in localStorage, so no cookie is needed.
_JS = """
<script>
  document.documentElement.lang = "en";  // NiceGUI's template names no language; screen readers need one
  window.ehrTheme = {
    key: "%(key)s",
    get() { try { return localStorage.getItem(this.key) || "auto"; } catch (e) { return "auto"; } },
    apply(mode) { if (window.Quasar) Quasar.Dark.set(mode === "auto" ? "auto" : mode === "dark"); },
    cycle() {
      const next = {auto: "dark", dark: "light", light: "auto"}[this.get()] || "auto";
      try { localStorage.setItem(this.key, next); } catch (e) {}
      this.apply(next);
      return next;
    },
  };
  document.addEventListener("DOMContentLoaded", () => ehrTheme.apply(ehrTheme.get()));
</script>
"""


BODY_CLASSES = {"eh": "ehr-eh", "rh": "ehr-rh"}  # constant class names: the origin comes from the URL


def apply(origin: str = "eh") -> dict[str, str]:
    """Style this page in the module's accent (eh or rh), light or dark as the browser chose; the accent."""
    accent = ACCENTS.get(origin, ACCENTS["eh"])
    # Quasar's own positive (#21ba45) and info (#31ccec) give white text 2.6:1 and 1.9:1 on badges and toasts;
    # these darker shades pass WCAG AA's 4.5:1 (green-700 5.0:1, sky-700 5.9:1)
    ui.colors(primary=accent["text"], positive="#15803d", info="#0369a1")
    ui.add_head_html(_CSS % accent + _JS % {"key": STORAGE_KEY})
    ui.query("body").classes(BODY_CLASSES.get(origin, "ehr-eh"))
    return accent


def theme_toggle() -> ui.button:
    """A button that cycles the colour scheme: follow the system, dark, light (remembered per browser)."""
    button = ui.button(icon="contrast").props('flat round aria-label="Switch light or dark mode"')
    button.tooltip("Light / dark / follow the system")
    button.on("click", js_handler="() => { const m = ehrTheme.cycle(); "
              "Quasar.Notify.create({message: 'Colour scheme: ' + (m === 'auto' ? 'follows the system' : m), "
              "position: 'bottom-right', timeout: 1500}); }")
    button.props["data-testid"] = "theme-toggle"
    return button


@contextmanager
def page_body() -> Iterator[ui.column]:
    """The column every page's content sits in: centred, the same width and spacing everywhere."""
    with ui.column().classes("ehr-page") as column:
        yield column


@contextmanager
def section(title: str, icon: str | None = None, *, testid: str | None = None) -> Iterator[ui.card]:
    """A titled card: the unit every page is built from."""
    with ui.card().classes("ehr-card") as card:
        if testid:
            card.props["data-testid"] = testid
            card.mark(testid)
        with ui.row().classes("items-center gap-2 no-wrap"):
            if icon:
                ui.icon(icon).classes("text-primary text-xl")
            ui.label(title).classes("ehr-section-title")
        yield card


def badge(text: str, kind: str | None = None) -> ui.label:
    """A coloured pill for a state or outcome (kind defaults to the text)."""
    bg, fg = BADGES.get(kind or text, BADGES["neutral"])
    label = ui.label(text).classes("ehr-badge")
    label.style["background-color"] = bg  # set directly: the text may come from data
    label.style["color"] = fg
    return label


def badge_slot_html(field: str = "outcome") -> str:
    """A Quasar table body-cell template that shows a column's value as a coloured badge."""
    colours = ", ".join(f"'{k}': 'background-color: {bg}; color: {fg}'" for k, (bg, fg) in BADGES.items())
    background, text = BADGES["neutral"]
    neutral = f"background-color: {background}; color: {text}"
    return (f'<q-td :props="props"><span class="ehr-badge" data-badge="{field}" '
            f":style=\"({{{colours}}})[props.value] || '{neutral}'\">{{{{ props.value }}}}</span></q-td>")


@contextmanager
def auth_card(title: str, subtitle: str) -> Iterator[ui.card]:
    """The centred card of the sign-in, setup and error pages, under the app's name."""
    with ui.column().classes("w-full min-h-screen items-center justify-center p-4 gap-4"):
        with ui.row().classes("items-center gap-2 no-wrap"):
            ui.icon("shield").classes("text-4xl text-primary")
            ui.label("EHR Backup").classes("text-2xl font-bold").props('role="heading" aria-level="1"')
        with ui.card().classes("ehr-card w-full max-w-sm gap-3 p-6") as card:
            ui.label(title).classes("ehr-section-title").props('role="heading" aria-level="2"')
            ui.label(subtitle).classes("ehr-muted text-sm")
            yield card
        with ui.element("div").classes("row justify-center"):
            theme_toggle()


def page_title(text: str, *, icon: str | None = None) -> Any:
    """The page's one visible heading (the header names the module, not the page)."""
    with ui.row().classes("items-center gap-2 no-wrap"):
        if icon:
            ui.icon(icon).classes("text-primary text-3xl")
        return ui.label(text).classes("ehr-title").props('role="heading" aria-level="1"')


TOAST_POSITION = "bottom-right"  # out of the way of the header's and the forms' controls


def notify(message: str, *, type: str | None = None, **options: Any) -> None:
    """A toast at the bottom-right, like every other toast of the app (use this, never ui.notify)."""
    if type is not None:
        options["type"] = type
    ui.notify(message, position=TOAST_POSITION, **options)
