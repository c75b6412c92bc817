"""NiceGUI's socket against a real server: foreign origins are refused, and a page's events come only
from the signed-in session that opened it."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio

from ehr_backup.errors import Unauthenticated

from .conftest import ADMIN_PW
from .live_server import LiveServer, live_server

SOCKET_PATH = "/_nicegui_ws/socket.io"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from live_server(tmp_path_factory.mktemp("socket"))


def _admin_page(server: LiveServer, path: str = "/admin/users") -> tuple[str, str, dict[str, Any]]:
    """Sign alice in, open an admin page: (session token, the page's client id, its elements)."""
    _, token = server.auth.login("alice", ADMIN_PW, "127.0.0.1")
    html = httpx.get(server.url + path, cookies={"ehr_session": token}).text
    raw = re.search(r"parseElements\(String\.raw`(.*?)`\)", html, re.DOTALL).group(1)  # type: ignore[union-attr]
    for escaped, char in (("&#36;", "$"), ("&#96;", "`"), ("&gt;", ">"), ("&lt;", "<"), ("&amp;", "&")):
        raw = raw.replace(escaped, char)
    client_id = re.search(r"'client_id': '([0-9a-f-]+)'", html).group(1)  # type: ignore[union-attr]
    return token, client_id, json.loads(raw)


def _click_message(client_id: str, elements: dict[str, Any], testid: str) -> dict[str, Any]:
    """The socket message a browser sends when the element with this data-testid is clicked."""
    for element_id, element in elements.items():
        if element.get("props", {}).get("data-testid") == testid:
            listener = next(e["listener_id"] for e in element["events"] if e["type"] == "click")
            return {"id": int(element_id), "client_id": client_id, "listener_id": listener, "args": []}
    raise AssertionError(f"no element {testid}")


def _page_query(client_id: str) -> str:
    return (f"?client_id={client_id}&tab_id={uuid.uuid4()}&document_id={uuid.uuid4()}"
            "&implicit_handshake=true&next_message_id=0")


async def _connect(server: LiveServer, query: str = "", headers: dict[str, str] | None = None) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(server.url + query, headers=headers or {}, transports=["websocket"],
                         socketio_path=SOCKET_PATH, wait_timeout=5)
    return client


def test_polling_from_a_foreign_origin_is_refused(server: LiveServer) -> None:
    url = f"{server.url}{SOCKET_PATH}/?EIO=4&transport=polling"
    assert httpx.get(url, headers={"Origin": "http://evil.example"}).status_code == 400
    assert httpx.get(url, headers={"Origin": f"http://127.0.0.1:{server.port}.evil.example"}).status_code == 400
    own = httpx.get(url, headers={"Origin": server.url})
    assert own.status_code == 200 and own.headers.get("access-control-allow-origin") in (None, server.url)


async def test_a_websocket_from_a_foreign_origin_is_refused(server: LiveServer) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _connect(server, headers={"Origin": "http://evil.example"})
    own = await _connect(server, headers={"Origin": server.url})
    await own.disconnect()


async def test_a_socket_without_the_session_cannot_attach_to_an_admin_page(server: LiveServer) -> None:
    token, client_id, _ = _admin_page(server)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _connect(server, _page_query(client_id), {"Origin": server.url})
    with pytest.raises(socketio.exceptions.ConnectionError):
        _, other = server.auth.login("alice", ADMIN_PW, "127.0.0.1")  # another session of the same user
        await _connect(server, _page_query(client_id), {"Origin": server.url, "Cookie": f"ehr_session={other}"})
    owner = await _connect(server, _page_query(client_id), {"Origin": server.url, "Cookie": f"ehr_session={token}"})
    await owner.disconnect()


async def test_an_anonymous_socket_that_knows_the_client_id_cannot_fire_the_pages_events(server: LiveServer) -> None:
    token, client_id, elements = _admin_page(server)
    owner = await _connect(server, _page_query(client_id), {"Origin": server.url, "Cookie": f"ehr_session={token}"})
    attacker = await _connect(server)  # no page, no cookie, no Origin: not a browser
    try:
        await attacker.emit("event", _click_message(client_id, elements, "logout"))
        await asyncio.sleep(1.5)
        assert server.auth.session(token).username == "alice"  # the Log out button was not pressed
        await owner.emit("event", _click_message(client_id, elements, "logout"))  # the page itself still can
        for _ in range(50):
            await asyncio.sleep(0.1)
            try:
                server.auth.session(token)
            except Unauthenticated:
                break
        else:
            raise AssertionError("the page's own click did not log out")
    finally:
        await attacker.disconnect()
        await owner.disconnect()
