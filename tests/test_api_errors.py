"""Every error under /api/ (and /metrics, /healthz, /readyz) is {"error": "<a sentence>"}, for every status."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from fastapi.routing import APIRoute
from nicegui import app
from nicegui.testing import User
from starlette.routing import Match

from ehr_backup.api_errors import invalid_request, is_json_path, sentence_for
from ehr_backup.audit import Actor

from .test_api import API, _walk

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BAD_VALUES = {"backup_id": "..%2F..%2Fetc%2Fpasswd", "job_id": "zzz", "drill_id": "x", "name": "%2e%2e%2fetc",
              "channel_id": "x", "kind": "exe"}


def json_routes() -> list[APIRoute]:
    """The app's own API and monitoring routes, read from its router."""
    return [r for r in _walk(app.routes) if isinstance(r, APIRoute) and is_json_path(r.path)]


def allowed(path: str) -> set[str]:
    """The methods some route accepts at this concrete path."""
    found: set[str] = set()
    for route in json_routes():
        match, _ = route.matches({"type": "http", "path": path, "method": "GET"})
        if match != Match.NONE:
            found |= route.methods
    return found


def is_sentence(text: object) -> bool:
    """Words about the problem, not a bare status phrase such as "Not Found"."""
    return isinstance(text, str) and len(text.split()) >= 3 and text not in {s.phrase for s in HTTPStatus}


def assert_error(r, status: int | None = None) -> str:
    where = f"{r.request.method} {r.request.url.path} → {r.status_code} {r.text[:200]}"
    assert r.headers["content-type"].startswith("application/json"), where
    body = r.json()
    assert set(body) == {"error"} and is_sentence(body["error"]), where
    assert "detail" not in r.text and "<html" not in r.text.lower(), where
    if status is not None:
        assert r.status_code == status, where
    return body["error"]


@pytest.fixture
def admin(accounts) -> dict[str, str]:
    return {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}


def sample(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"backup_id": "backup_2025-08-22T15-07-19-123Z_x.sql.gz.enc",
                                          "job_id": "0123456789abcdef", "drill_id": "1", "kind": "json",
                                          "channel_id": "1"}.get(m.group(1), "nightly"), path)


async def test_unknown_api_paths_are_json_404_with_a_sentence(user: User, accounts, admin) -> None:
    for path in ("/api/admin/backup/nope", "/api/nope", "/api", f"{API}/list/extra", f"{API}/jobs/0123/x/y",
                 f"{API}/download/..%2F..%2Fetc%2Fpasswd", f"{API}/download/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                 f"{API}/download/a%2Fb"):
        r = await user.http_client.get(path, headers=admin)
        assert "/etc" not in assert_error(r, 404)
    r = await user.http_client.get("/api/nope")  # anonymous: refused before anything else
    assert_error(r, 401)


async def test_every_route_answers_a_wrong_method_with_405_json(user: User, accounts, admin) -> None:
    paths = sorted({sample(r.path) for r in json_routes()})
    assert len(paths) >= 30
    tried = 0
    for path in paths:
        ok = allowed(path)
        for method in METHODS:
            if method in ok or (method == "GET" and "HEAD" in ok):
                continue
            r = await user.http_client.request(method, path, headers=admin)
            message = assert_error(r, 405)
            assert method in message and r.headers.get("allow"), message
            tried += 1
    assert tried >= 50


async def test_malformed_json_bodies_are_422_saying_so(user: User, accounts, admin) -> None:
    with_body = [r for r in json_routes() if r.body_field is not None]
    assert len(with_body) >= 10
    for route in with_body:
        for method in route.methods:
            headers = {**admin, "content-type": "application/json"}
            r = await user.http_client.request(method, sample(route.path), content=b'{"description": ',
                                               headers=headers)
            assert assert_error(r, 422) == "invalid request: the request body is not valid JSON"


async def test_malformed_ids_are_422_and_well_formed_unknown_ones_404(user: User, accounts, admin) -> None:
    for route in json_routes():
        params = re.findall(r"\{(\w+)\}", route.path)
        if not params or not route.methods & {"GET"}:
            continue
        bad = re.sub(r"\{(\w+)\}", lambda m: BAD_VALUES.get(m.group(1), "x"), route.path)
        r = await user.http_client.get(bad, headers=admin)
        assert r.status_code in (404, 422), bad
        assert "/etc" not in assert_error(r)
    assert_error(await user.http_client.get(f"{API}/jobs/zzz", headers=admin), 422)
    assert "16 hexadecimal" in assert_error(await user.http_client.get(f"{API}/jobs/ABC", headers=admin), 422)
    assert_error(await user.http_client.get(f"{API}/jobs/0123456789abcdef", headers=admin), 404)
    assert_error(await user.http_client.post(f"{API}/jobs/zzz/cancel", headers=admin), 422)


async def test_field_problems_are_named_in_a_sentence(user: User, accounts, admin) -> None:
    r = await user.http_client.post(f"{API}/create", json={"description": 5}, headers=admin)
    assert "field description" in assert_error(r, 422)
    r = await user.http_client.post(f"{API}/create", json={"unexpected": 1}, headers=admin)
    assert assert_error(r, 422) == "invalid request: field unexpected is not a known field"
    r = await user.http_client.post(f"{API}/create", json=[1, 2], headers=admin)
    assert "JSON object" in assert_error(r, 422)
    r = await user.http_client.get(f"{API}/drills/x/report.json", headers=admin)
    assert "drill_id in the address" in assert_error(r, 422)


def test_sentences_for_statuses_without_one() -> None:
    assert sentence_for(405, "PUT", "GET, HEAD") == "the method PUT is not allowed here; this endpoint accepts GET, HEAD"
    assert "no such API endpoint" in sentence_for(404, "GET", None, "Not Found")
    assert sentence_for(500, "GET", None, "boom at /etc") == "internal error; see the server log"
    assert sentence_for(418, "GET", None, "I'm a Teapot") == "request refused: i'm a teapot"
    assert invalid_request([{"type": "missing", "loc": ("query", "limit"), "msg": "Field required"}]) == \
        "invalid request: query parameter limit is required"
    assert is_json_path("/api/x") and is_json_path("/metrics") and not is_json_path("/apis") \
        and not is_json_path("/admin/backup")
