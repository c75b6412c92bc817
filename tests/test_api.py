"""The REST API: every route's 401/403, 404/409/422, traversal attempts, CSRF, headers, and the flows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from nicegui import app
from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.errors import Busy
from ehr_backup.service import BackupService
from ehr_backup.throttle import Policy

from .conftest import ACTOR, ADMIN_PW, run_sql

API = "/api/admin/backup"
SAMPLE_ID = "backup_2025-08-22T15-07-19-123Z_monthly_backup.sql.gz.enc"


def _walk(routes: list) -> list:
    found = []
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI keeps an included router as one lazy route
            found += _walk(route.original_router.routes)
        else:
            found.append(route)
    return found


def api_routes() -> list[tuple[str, str]]:
    """Every (method, path) under /api/admin, read from the app's router, not listed by hand."""
    routes = []
    for route in _walk(app.routes):
        if isinstance(route, APIRoute) and route.path.startswith("/api/admin"):
            for method in route.methods:
                routes.append((method, route.path.replace("{backup_id}", SAMPLE_ID).replace("{job_id}", "abc")))
    return routes


@pytest.fixture
def tokens(accounts) -> dict[str, str]:
    return {"admin": accounts.create_token(Actor("t"), "alice"), "user": accounts.create_token(Actor("t"), "bob")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_admin_route_refuses_anonymous_401_and_non_admins_403(user: User, accounts, tokens) -> None:
    routes = api_routes()
    assert len(routes) >= 10
    guesses = Policy().token_guesses  # invalid tokens an address may send before it is throttled
    for n, (method, path) in enumerate(routes):
        anon = await user.http_client.request(method, path, json={})
        assert anon.status_code == 401, (method, path)
        assert set(anon.json()) == {"error"}
        forbidden = await user.http_client.request(method, path, json={}, headers=bearer(tokens["user"]))
        assert forbidden.status_code == 403, (method, path)
        bad = await user.http_client.request(method, path, headers=bearer("ehrb_not-a-real-token"))
        # one invalid token per route: past the limit the address is throttled (there are more routes than that)
        assert bad.status_code == (401 if n < guesses else 429), (method, path)
        assert set(bad.json()) == {"error"}
    refused = [e for e in accounts._audit.entries(action="access") if e.outcome == "refused"]
    # each kind of refusal is audited at once; repeats within a minute are counted (test_refusals.py)
    assert {(e.actor, e.detail) for e in refused} >= {("anonymous", "please sign in"), ("bob", "administrators only"),
                                                      ("anonymous", "invalid or revoked token")}


@pytest.mark.parametrize("bad", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                 "%2Fetc%2Fpasswd", "x" * 5000, "backup_2025-08-22T15-07-19-123Z_x.sql.gz.enc%00"])
async def test_traversal_attempts_in_ids_are_4xx_and_touch_nothing(user: User, accounts, tokens, bad: str) -> None:
    before = Path("/etc/passwd").stat()
    h = bearer(tokens["admin"])
    r = await user.http_client.get(f"{API}/download/{bad}", headers=h)
    assert 400 <= r.status_code < 500
    assert "/etc" not in r.text and "Traceback" not in r.text
    for method, path in (("POST", "/verify"), ("POST", "/restore"), ("DELETE", "/delete")):
        r = await user.http_client.request(method, API + path, json={"backupId": bad.replace("%2F", "/")},
                                           headers=h)
        assert r.status_code == 422 and set(r.json()) == {"error"}
    assert Path("/etc/passwd").stat() == before


async def test_unknown_ids_are_404_and_malformed_bodies_422(user: User, accounts, tokens) -> None:
    h = bearer(tokens["admin"])
    assert (await user.http_client.get(f"{API}/download/{SAMPLE_ID}", headers=h)).status_code == 404
    assert (await user.http_client.post(f"{API}/verify", json={"backupId": SAMPLE_ID}, headers=h)).status_code == 404
    assert (await user.http_client.get(f"{API}/jobs/0123456789abcdef", headers=h)).status_code == 404
    assert (await user.http_client.get(f"{API}/jobs/nope", headers=h)).status_code == 422  # malformed, like ids
    for body in ({"description": "x", "location": "moon"}, {"description": 5}, {"unexpected": 1}, "not json"):
        r = await user.http_client.post(f"{API}/create", json=body, headers=h)
        assert r.status_code == 422 and set(r.json()) == {"error"}, body
    r = await user.http_client.post(f"{API}/create", headers=h, json={"location": "custom", "customPath": "/etc"})
    assert r.status_code == 422 and "system directory" in r.json()["error"]
    r = await user.http_client.get(f"{API}/list?location=moon", headers=h)
    assert r.status_code == 422


async def test_create_list_verify_download_restore_delete(user: User, accounts, tokens, web_env, make_db) -> None:
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 77) g;")
    h = bearer(tokens["admin"])
    r = await user.http_client.post(f"{API}/create", json={"description": "api"}, headers=h)
    assert r.status_code == 202 and set(r.json()) == {"jobId", "backupId", "status"}
    job_id, bid = r.json()["jobId"], r.json()["backupId"]
    for _ in range(300):
        job = (await user.http_client.get(f"{API}/jobs/{job_id}", headers=h)).json()
        if job["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert job["status"] == "succeeded" and job["kind"] == "create" and job["progress"]["phase"] == "done"
    listed = (await user.http_client.get(f"{API}/list", headers=h)).json()["backups"]
    assert [b["id"] for b in listed] == [bid] and listed[0]["tableRowCounts"] == {"public.t": 77}
    assert (await user.http_client.get(f"{API}/list?location=desktop", headers=h)).json() == {"backups": []}
    v = await user.http_client.post(f"{API}/verify?wait=true", json={"backupId": bid}, headers=h)
    assert v.status_code == 200 and v.json()["ok"] is True
    d = await user.http_client.get(f"{API}/download/{bid}", headers=h)
    assert d.status_code == 200 and d.content == (Path(listed[0]["path"])).read_bytes()
    assert d.headers["content-type"] == "application/octet-stream"
    assert d.headers["cache-control"] == "no-store"
    assert d.headers["content-disposition"] == f'attachment; filename="{bid}"'
    target = make_db().rsplit("/", 1)[1]
    rr = await user.http_client.post(f"{API}/restore?wait=true", json={"backupId": bid, "targetDatabase": target},
                                     headers=h)
    assert rr.status_code == 200 and rr.json()["rowCountsMatch"] is True and rr.json()["database"] == target
    dd = await user.http_client.request("DELETE", f"{API}/delete", json={"backupId": bid}, headers=h)
    assert dd.status_code == 200 and dd.json() == {"deleted": bid}
    assert not Path(listed[0]["path"]).exists()


async def test_create_with_wait_returns_the_backup(user: User, accounts, tokens) -> None:
    r = await user.http_client.post(f"{API}/create?wait=true", json={"description": "waited", "compression": "zstd"},
                                    headers=bearer(tokens["admin"]))
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "completed" and body["id"].endswith("_waited.sql.zst.enc")


async def test_a_second_create_or_restore_while_one_runs_is_409(user: User, accounts, tokens, web_env) -> None:
    svc = BackupService(Settings.from_env(web_env))
    done = svc.create(Actor("t"), description="existing")
    holding = svc.prepare_create(Actor("t"), description="holding the database")
    try:
        h = bearer(tokens["admin"])
        r = await user.http_client.post(f"{API}/create", json={"description": "second"}, headers=h)
        assert r.status_code == 409 and "busy" in r.json()["error"]
        r = await user.http_client.post(f"{API}/restore", json={"backupId": done.id}, headers=h)
        assert r.status_code == 409
    finally:
        holding.run()
        svc.db.dispose()


async def test_cookie_writes_must_come_from_the_apps_own_origin(user: User, accounts) -> None:
    _p, token = accounts.login("alice", ADMIN_PW, "127.0.0.1")
    cookies = {"ehr_session": token}
    client = user.http_client
    client.cookies.set("ehr_session", token)
    assert (await client.get(f"{API}/list")).status_code == 200  # reads need no origin
    for headers in ({}, {"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}):
        r = await client.post(f"{API}/create", json={"description": "csrf"}, headers=headers)
        assert r.status_code == 403 and "cross-site" in r.json()["error"], headers
    ok = await client.post(f"{API}/create?wait=true", json={"description": "same origin"},
                           headers={"Origin": "http://test"})
    assert ok.status_code == 200, ok.text
    del cookies


async def test_security_headers_on_pages_api_and_errors(user: User, accounts, tokens) -> None:
    for path, headers in (("/login", {}), (f"{API}/list", bearer(tokens["admin"])), (f"{API}/list", {}),
                          ("/no-such-page", {})):
        r = await user.http_client.get(path, headers=headers)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-frame-options"] == "DENY"


async def test_openapi_is_served_to_admins_only(user: User, accounts, tokens) -> None:
    assert (await user.http_client.get(f"{API}/openapi.json")).status_code == 401
    assert (await user.http_client.get(f"{API}/openapi.json", headers=bearer(tokens["user"]))).status_code == 403
    doc = (await user.http_client.get(f"{API}/openapi.json", headers=bearer(tokens["admin"]))).json()
    assert f"{API}/create" in doc["paths"] and f"{API}/download/{{backup_id}}" in doc["paths"]
    assert (await user.http_client.get("/docs")).status_code in (303, 404)


async def test_revoked_tokens_and_disabled_users_are_refused(user: User, accounts, tokens) -> None:
    h = bearer(tokens["admin"])
    assert (await user.http_client.get(f"{API}/locations", headers=h)).status_code == 200
    token_id = accounts.tokens()[-1].id if accounts.tokens()[-1].prefix == tokens["admin"][:12] else \
        next(t.id for t in accounts.tokens() if t.prefix == tokens["admin"][:12])
    accounts.revoke_token(Actor("t"), token_id)
    assert (await user.http_client.get(f"{API}/locations", headers=h)).status_code == 401


async def test_an_address_guessing_tokens_is_throttled_but_its_valid_tokens_still_work(user: User, accounts,
                                                                                         tokens) -> None:
    for _ in range(50):
        r = await user.http_client.get(f"{API}/list", headers=bearer("ehrb_guess"))
        assert r.status_code == 401
    r = await user.http_client.get(f"{API}/list", headers=bearer(tokens["admin"]))
    assert r.status_code == 200, r.text  # the nightly script sharing the address keeps working
    for guess in ("ehrb_guess", "not-even-a-token"):
        r = await user.http_client.get(f"{API}/list", headers=bearer(guess))
        assert r.status_code == 429 and "too many" in r.json()["error"]
    r = await user.http_client.get(f"{API}/list", headers=bearer(tokens["user"]))
    assert r.status_code == 403  # a valid non-admin token is told what it is, not throttled
    r = await user.http_client.get(f"{API}/list", headers=bearer(tokens["admin"]))
    assert r.status_code == 200


async def test_restore_options_rollback_previous_and_contents_through_the_api(user: User, accounts, tokens,
                                                                              web_env) -> None:
    db = web_env["DATABASE_URL"]
    run_sql(db, "CREATE TABLE t AS SELECT generate_series(1, 12) g;")
    h = bearer(tokens["admin"])
    made = (await user.http_client.post(f"{API}/create?wait=true", json={"description": "opts"}, headers=h)).json()
    c = await user.http_client.get(f"{API}/contents/{made['id']}", headers=h)
    assert c.status_code == 200 and c.json()["tables"][0]["rows"] == 12
    run_sql(db, "INSERT INTO t VALUES (13);")
    r = await user.http_client.post(f"{API}/restore?wait=true", json={"backupId": made["id"], "jobs": 2,
                                                                      "mode": "swap"}, headers=h)
    assert r.status_code == 200 and r.json()["jobs"] == 2 and r.json()["previousDatabase"]
    prev = (await user.http_client.get(f"{API}/restore/previous", headers=h)).json()["previous"]
    assert [p["name"] for p in prev] == [r.json()["previousDatabase"]]
    back = await user.http_client.post(f"{API}/restore/rollback", json={}, headers=h)
    assert back.status_code == 200 and back.json()["restoredFrom"] == r.json()["previousDatabase"]
    gone = await user.http_client.request("DELETE", f"{API}/restore/previous", json={"name": back.json()["undoneKeptAs"]},
                                          headers=h)
    assert gone.status_code == 200
    sel = await user.http_client.post(f"{API}/restore?wait=true", json={"backupId": made["id"], "tables": ["public.t"],
                                                                        "intoSchema": "copy_of_t"}, headers=h)
    assert sel.status_code == 200 and sel.json()["tables"]["copy_of_t.t"]["actual"] == 12
    bad = await user.http_client.post(f"{API}/restore", json={"backupId": made["id"], "tables": ["public.t"]},
                                      headers=h)
    assert bad.status_code == 422 and "into" in bad.json()["error"]
    assert (await user.http_client.post(f"{API}/restore", json={"backupId": made["id"], "mode": "sideways"},
                                        headers=h)).status_code == 422


async def test_a_backup_being_restored_cannot_be_deleted(user: User, accounts, tokens, web_env, make_db) -> None:
    svc = BackupService(Settings.from_env(web_env))
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 5) g;")
    record = svc.create(ACTOR, description="in use")
    task = svc.prepare_restore(ACTOR, record.id, target_url=make_db())  # holds the backup while it runs
    try:
        h = bearer(tokens["admin"])
        r = await user.http_client.request("DELETE", f"{API}/delete", json={"backupId": record.id}, headers=h)
        assert r.status_code == 409 and "busy" in r.json()["error"]
        assert (Path(record.directory) / record.id).exists()
        with pytest.raises(Busy):
            svc.delete(ACTOR, record.id)
        reading = svc.prepare_verify(ACTOR, record.id)  # readers share it
        reading.run()
    finally:
        task.run()
    svc.delete(ACTOR, record.id)
    assert not (Path(record.directory) / record.id).exists()
    svc.db.dispose()
