"""Sessions and load: idle and absolute limits for HTTP and page events, cancel, parallel requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nicegui.testing import User

from ehr_backup.audit import Actor

from .conftest import metadata_sql
from .helpers import fill
from .web_helpers import eventually, login, start_backup, wait_for_path

API = "/api/admin/backup"


def age_sessions(web_env: dict[str, str], column: str, delta: timedelta) -> None:
    stamp = (datetime.now(UTC) - delta).strftime("%Y-%m-%d %H:%M:%S.%f")
    metadata_sql(web_env, f"UPDATE sessions SET {column} = '{stamp}'", f"UPDATE sessions SET {column} = '{stamp}+00'")


@pytest.mark.parametrize("column,delta", [("last_seen", timedelta(minutes=16)), ("created_at", timedelta(hours=13))])
async def test_idle_and_absolute_limits_end_the_session_for_page_events_and_http(
        user: User, accounts, web_env, column: str, delta: timedelta) -> None:
    await login(user, next_="/admin/backup")
    age_sessions(web_env, column, delta)
    user.find(marker="description").type("too late")
    user.find(marker="create-button").click()
    await wait_for_path(user, "/login")
    assert not list(Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*too_late*"))
    response = await user.http_client.get("/admin/backup", follow_redirects=False)
    assert response.status_code == 303


@pytest.fixture
def slow_pg_dump(web_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_dump that stalls after its first 100 kB (like one waiting on a lock), for the app to use."""
    from .test_faults import wrapper_bin
    monkeypatch.setenv("EHR_BACKUP_PG_BIN", wrapper_bin(tmp_path, '$REAL "$@" | (head -c 100000; sleep 120; cat)'))


async def test_cancel_from_the_page_leaves_nothing_even_while_pg_dump_stalls(slow_pg_dump, user: User, accounts,
                                                                              web_env) -> None:
    fill(web_env["DATABASE_URL"], 20000, 8)
    await login(user, next_="/admin/backup")
    await start_backup(user, "cancel me")
    phase = user.find(marker="job-phase").elements.pop()
    status = user.find(marker="job-status").elements.pop()
    detail = user.find(marker="job-detail").elements.pop()

    def state() -> str:
        return f"{phase.text} | {detail.text} | {status.text}"

    await eventually(lambda: "dumping" in phase.text and "read 0 B" not in detail.text, timeout=30, state=state)
    user.find(marker="cancel-job").click()
    await eventually(lambda: status.text.startswith("Cancelled"), timeout=20, state=state)
    assert [p.name for p in Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).iterdir()] == []


async def test_fifty_parallel_requests_during_a_backup_all_succeed(user: User, accounts, web_env) -> None:
    fill(web_env["DATABASE_URL"], 200000, 8)
    token = accounts.create_token(Actor("t"), "alice")
    h = {"Authorization": f"Bearer {token}"}
    first = await user.http_client.post(f"{API}/create?wait=true", json={"description": "first"}, headers=h)
    bid = first.json()["id"]
    running = await user.http_client.post(f"{API}/create", json={"description": "running"}, headers=h)
    assert running.status_code == 202
    calls = [user.http_client.get(f"{API}/list", headers=h) for _ in range(25)]
    calls += [user.http_client.get(f"{API}/download/{bid}", headers=h) for _ in range(25)]
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 50
    size = Path(first.json()["path"]).stat().st_size
    assert all(len(r.content) == size for r in responses[25:])
    job_id = running.json()["jobId"]
    for _ in range(600):
        if (await user.http_client.get(f"{API}/jobs/{job_id}", headers=h)).json()["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert (await user.http_client.get(f"{API}/jobs/{job_id}", headers=h)).json()["status"] == "succeeded"


async def test_cancel_from_a_tab_whose_session_ended_is_refused(user: User, accounts, web_env) -> None:
    fill(web_env["DATABASE_URL"], 300000, 8)
    await login(user, next_="/admin/backup")
    await start_backup(user, "keeps running")
    token = user.http_client.cookies.get("ehr_session")
    accounts.logout(token, accounts.session(token).actor())
    user.find(marker="cancel-job").click()
    await wait_for_path(user, "/login")
    await eventually(lambda: any(Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*keeps_running*.enc")))
    refused = [e for e in accounts._audit.entries(action="access") if e.outcome == "refused"]
    assert refused and refused[0].target.startswith("cancel create")
