"""How uvicorn serves the app: bounded headers, deadlines for slow clients, no proxy-header trust.

uvicorn (0.54) closes idle keep-alive connections but never times out a client that sends its request
headers slowly or not at all, and its httptools parser does not bound header size. We run h11, whose
buffer for an incomplete request head is bounded, with a deadline for the head; bodies get theirs in
`httpguard`. Forwarded headers are resolved by `clientaddr`, so uvicorn's own handling is off.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import Settings

MAX_HEAD_BYTES = 16 * 1024
MAX_WEBSOCKET_MESSAGE = 1024 * 1024  # NiceGUI's browser side never sends more than 1 MB per message
KEEP_ALIVE_SECONDS = 5


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """An h11 protocol that closes connections whose request head is not complete within `seconds`."""

    class HeadDeadlineH11Protocol(H11Protocol):
        """h11 with a deadline from a request's first byte (or the connection) to its complete head."""

        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE and self._head_timer is None:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadlineH11Protocol


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ui.run that NiceGUI hands to uvicorn.Config."""
    return {
        "http": header_timeout_protocol(settings.read_timeout),
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "ws_max_size": MAX_WEBSOCKET_MESSAGE,
        "proxy_headers": False,
    }
