"""Page bodies built only once the browser has connected; until then a "Loading…" status."""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from nicegui import Client, ui
from nicegui.client import ClientConnectionTimeout

from .frame import tid

# a page GET builds its elements on the event loop before the HTML goes out (about 40 ms for the backups
# page): a script that fetches the page and never connects, or 20 browsers arriving at once, would wait
# for every one of those builds; the body is built over the socket instead, once a browser is there
_BUILT: WeakKeyDictionary[Client, asyncio.Event] = WeakKeyDictionary()
CONNECT_SECONDS = 30.0  # a page whose browser has not connected by then is never built


class Deferred:
    """The body of the current page, deferred: `await connected()`, build, then `built()`."""

    def __init__(self) -> None:
        self.client = ui.context.client
        self.event = _BUILT.setdefault(self.client, asyncio.Event())
        with ui.row().classes("items-center gap-3 p-6") as self.skeleton:
            ui.spinner(size="md").props('aria-hidden="true"')
            ui.label("Loading…")
        # a status region: screen readers announce it, and the page is never blank meanwhile
        self.skeleton.props["role"] = "status"
        self.skeleton.props["aria-live"] = "polite"
        tid(self.skeleton, "page-loading")

    async def connected(self) -> bool:
        """Wait for the browser; False when it never came (the page then stays a frame)."""
        try:
            await self.client.connected(timeout=CONNECT_SECONDS)
        except ClientConnectionTimeout:
            return False
        if self.client.is_deleted:
            return False
        self.skeleton.delete()
        return True

    def built(self) -> None:
        """The body is there (tests wait for this: `tests/web_helpers.page_built`)."""
        self.event.set()


async def page_built(client: Client, timeout: float = 30) -> None:
    """Wait until a deferred page's body is built; at once for a page that builds eagerly."""
    event = _BUILT.get(client)
    if event is not None:
        await asyncio.wait_for(event.wait(), timeout)
