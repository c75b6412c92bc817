"""Pages whose clients go away (pruned, disconnected, never connected) end quietly: no exception in the log.

NiceGUI deletes a client that never opened its socket (a script fetching the page) after about a minute,
and one whose browser left after the reconnect timeout; the backup page's timers (the job cards' tick,
the session check) must stop with it rather than run into "The parent slot of Timer(...) has been deleted".
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from nicegui.testing import User

from .conftest import ADMIN_PW
from .live_server import LiveServer
from .web_helpers import login, start_backup

PROBLEMS = ("Traceback", "RuntimeError", "parent slot", "ERROR")


async def test_deleting_a_backup_page_client_while_its_timers_run_logs_nothing(
        user: User, accounts, web_env, caplog: pytest.LogCaptureFixture) -> None:
    await login(user, next_="/admin/backup")
    await start_backup(user, "pruned while it runs")  # a job card: its 0.5 s tick is running
    client = user.client
    assert client is not None
    await asyncio.sleep(1.2)  # a few ticks with the page alive
    client.delete()  # what NiceGUI's pruning and the disconnect timeout do
    await asyncio.sleep(2.0)  # the timers' next turns, after their client is gone
    noisy = [r.getMessage() for r in caplog.get_records("call") if r.levelname in ("WARNING", "ERROR")
             and any(p in r.getMessage() for p in PROBLEMS)]
    assert noisy == []
    assert client.is_deleted


def test_pages_fetched_by_a_script_are_pruned_without_an_exception(tmp_path: Path) -> None:
    """About 75 s: NiceGUI prunes a client that never connected 60 s after it was made (checked every 10 s)."""
    server = LiveServer(tmp_path)
    try:
        _, token = server.auth.login("alice", ADMIN_PW, "127.0.0.1")
        with httpx.Client(base_url=server.url, cookies={"ehr_session": token}, timeout=30) as client:
            for path in ("/admin/backup", "/admin/backup", "/eh"):
                response = client.get(path)
                assert response.status_code == 200 and "EHR Backup" in response.text
        deadline = time.monotonic() + 80  # made + 60 s + the 10 s pruning period, and some slack
        while time.monotonic() < deadline:
            time.sleep(2)
            assert server.proc.poll() is None
        log = server.log_path.read_text()
        assert not [line for line in log.splitlines() if any(p in line for p in PROBLEMS)], log
        # the server is still well: a page and the API answer
        with httpx.Client(base_url=server.url, timeout=30) as client:
            headers = {"Authorization": f"Bearer {server.admin_token}"}
            assert client.get("/api/admin/backup/list", params={"limit": 1}, headers=headers).status_code == 200
    finally:
        server.stop()
