"""Bodies and slow clients against a real server: credentials before bodies, a body cap, deadlines."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .live_server import LiveServer, chunked, live_server, plain, raw_request

API = "/api/admin/backup"
BIG = 100 * 1024 * 1024
READ_TIMEOUT = 2
MEMORY_SLACK_KB = 25 * 1024  # a 100 MB body held in memory would add 100 MB or more


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from live_server(tmp_path_factory.mktemp("limits"), {"EHR_BACKUP_READ_TIMEOUT": str(READ_TIMEOUT)})


def _warm(server: LiveServer) -> int:
    """Exercise the routes once (lazy imports, caches) and return the resident memory after."""
    for _ in range(3):
        raw_request(server.port, "GET", f"{API}/list", {"Authorization": f"Bearer {server.admin_token}"})
        raw_request(server.port, "POST", f"{API}/create", {"Content-Length": "2"}, [b"{}"])
    return server.rss_kb()


def _error(body: bytes) -> str:
    data = json.loads(body)
    assert set(data) == {"error"}
    return str(data["error"])


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_anonymous_100_mb_body_is_refused_401_before_it_is_read(server: LiveServer, framing: str) -> None:
    before = _warm(server)
    headers = {"Content-Type": "application/json"}
    if framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        body = chunked(BIG)
    else:
        headers["Content-Length"] = str(BIG)
        body = plain(BIG)
    status, answer = raw_request(server.port, "POST", f"{API}/create", headers, body)
    assert status == 401 and "sign in" in _error(answer)
    assert server.rss_kb() - before < MEMORY_SLACK_KB


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_admins_body_over_the_cap_is_refused_413(server: LiveServer, framing: str) -> None:
    before = _warm(server)
    headers = {"Authorization": f"Bearer {server.admin_token}", "Content-Type": "application/json"}
    if framing == "chunked":  # no Content-Length: the guard counts what arrives
        headers["Transfer-Encoding"] = "chunked"
        body = chunked(BIG)
    else:
        headers["Content-Length"] = str(BIG)
        body = plain(BIG)
    status, answer = raw_request(server.port, "POST", f"{API}/create", headers, body)
    assert status == 413 and "at most 64 KiB" in _error(answer)
    assert server.rss_kb() - before < MEMORY_SLACK_KB
    refused = [e for e in server.audit() if e.outcome == "refused" and "too large" in e.detail]
    assert refused and refused[-1].actor == "alice"


def test_a_body_just_over_the_cap_is_refused_and_one_within_it_accepted(server: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {server.admin_token}", "Content-Type": "application/json"}
    padded = json.dumps({"description": "x" * 400}).encode()
    padded = padded[:-1] + b" " * (64 * 1024 - len(padded)) + b"}"
    assert len(padded) == 64 * 1024
    status, answer = raw_request(server.port, "POST", f"{API}/verify", {**auth, "Content-Length": str(len(padded))},
                                 [padded])
    assert status == 422, answer  # read and parsed: the id is missing
    over = padded + b" "
    status, answer = raw_request(server.port, "POST", f"{API}/verify",
                                 {**auth, "Transfer-Encoding": "chunked"},
                                 [f"{len(over):x}\r\n".encode() + over + b"\r\n0\r\n\r\n"])
    assert status == 413 and _error(answer)


def _socket_session(server: LiveServer) -> str:
    """A live engine.io polling session of the page socket, whose POSTs are read."""
    import httpx

    opened = httpx.get(f"{server.url}/_nicegui_ws/socket.io/?EIO=4&transport=polling").text
    return str(json.loads(opened[1:])["sid"])


@pytest.mark.parametrize(("path", "status"), [("/_nicegui_ws/socket.io/?EIO=4&transport=polling&sid=", 413),
                                              ("/login", 405), ("/auth/complete", 405), ("/no-such-route", 404)])
def test_no_route_reads_more_than_the_cap(server: LiveServer, path: str, status: int) -> None:
    """Routes that read bodies stop at the cap (413); others answer without reading and hang up."""
    def target() -> str:
        return path + _socket_session(server) if path.endswith("sid=") else path

    before = _warm(server)
    started = time.monotonic()
    got, answer = raw_request(server.port, "POST", target(), {"Transfer-Encoding": "chunked"}, chunked(BIG))
    assert got == status
    if status == 413:
        assert _error(answer)
    got, answer = raw_request(server.port, "POST", target(), {"Content-Length": str(BIG)}, plain(BIG))
    assert got == 413 and _error(answer)
    assert server.rss_kb() - before < MEMORY_SLACK_KB
    assert time.monotonic() - started < 10


def test_a_client_that_never_finishes_its_headers_is_disconnected(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT * 5) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        try:
            closed = sock.recv(1024) == b""
        except (ConnectionResetError, TimeoutError):
            closed = False
        assert closed and time.monotonic() - started < READ_TIMEOUT + 3


def test_an_idle_connection_is_disconnected(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT * 5) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < READ_TIMEOUT + 3


def test_a_body_that_stops_arriving_gets_408(server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {server.admin_token}", "Content-Type": "application/json",
               "Content-Length": "1000"}
    started = time.monotonic()
    status, answer = raw_request(server.port, "POST", f"{API}/create", headers, [b'{"description": "'],
                                 timeout=READ_TIMEOUT * 5)
    assert status == 408 and "not received within" in _error(answer)
    assert time.monotonic() - started < READ_TIMEOUT + 3


def test_the_data_directory_is_made_private(tmp_path: Path, env: dict[str, str]) -> None:
    from ehr_backup.config import Settings
    from ehr_backup.service import BackupService

    data = Path(env["EHR_BACKUP_DATA_DIR"])
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    BackupService(Settings.from_env(env)).db.dispose()
    assert data.stat().st_mode & 0o777 == 0o700


def test_no_cookies_but_ours_and_a_csp_that_connects_only_to_this_origin(server: LiveServer) -> None:
    import httpx

    for path in ("/login", "/api/admin/backup/list", "/eh"):
        r = httpx.get(server.url + path, follow_redirects=False)
        names = {c.split("=", 1)[0].strip() for c in r.headers.get_list("set-cookie")}
        # NiceGUI's own `session` cookie never; the sign-in pages give the browser its nonce cookie
        assert names <= ({"ehr_browser"} if path == "/login" else set()), (path, names)
        csp = r.headers["content-security-policy"]
        assert "connect-src 'self';" in csp and "ws:" not in csp and "frame-src 'none'" in csp
