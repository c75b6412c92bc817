"""/healthz and /readyz: unauthenticated JSON for load balancers and systemd, naming failures, no secrets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.health import Readiness
from ehr_backup.service import BackupService

from .live_server import LiveServer, raw_request

SECRET_PW = "s3cret-Pa55word"


async def test_healthz_answers_without_credentials(user: User) -> None:
    r = await user.http_client.get("/healthz", follow_redirects=False)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert (await user.http_client.head("/healthz")).status_code == 200


async def test_readyz_is_200_naming_every_check_when_all_pass(user: User, web_env) -> None:
    r = await user.http_client.get("/readyz", follow_redirects=False)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["failing"] == []
    assert {"metadata", "encryptionKey", "database", "location:default"} <= set(body["checks"])
    assert all(c["ok"] for c in body["checks"].values())
    assert web_env["BACKUP_ENCRYPTION_KEY"] not in r.text


@pytest.fixture
def unreachable_database(web_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """DATABASE_URL with a password, on a port where nothing listens."""
    with socket.socket() as s:  # a port that was free a moment ago; nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://backup:{SECRET_PW}@127.0.0.1:{port}/ehr"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


async def test_readyz_is_503_naming_an_unreachable_database_without_its_password(unreachable_database,
                                                                                 user: User, accounts) -> None:
    anonymous = await user.http_client.get("/readyz")
    assert anonymous.status_code == 503 and anonymous.json()["failing"] == ["database"]
    assert anonymous.json()["checks"]["database"] == {"ok": False}  # the details are for administrators
    assert "127.0.0.1" not in anonymous.text
    token = accounts.create_token(Actor("t"), "alice")
    r = await user.http_client.get("/readyz", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready" and body["failing"] == ["database"]
    assert "backup@127.0.0.1" in body["checks"]["database"]["detail"]
    assert SECRET_PW not in r.text and unreachable_database not in r.text
    assert (await user.http_client.get("/healthz")).status_code == 200  # alive all the same


@pytest.fixture
def location_is_a_file(web_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The default location is a regular file, so no backup can be written there."""
    path = tmp_path / "not-a-folder"
    path.write_text("x")
    monkeypatch.setenv("EHR_BACKUP_DEFAULT_DIR", str(path))
    return path


async def test_readyz_is_503_naming_a_location_that_cannot_be_written(location_is_a_file: Path, user: User,
                                                                     accounts) -> None:
    token = accounts.create_token(Actor("t"), "alice")
    r = await user.http_client.get("/readyz", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503
    body = r.json()
    assert body["failing"] == ["location:default"]
    assert body["checks"]["location:default"]["detail"] == f"{location_is_a_file} is not a directory"


def test_readiness_is_computed_at_most_once_per_interval(service: BackupService, env: dict[str, str]) -> None:
    now = [100.0]
    readiness = Readiness(service, clock=lambda: now[0], ttl=5)
    assert readiness.report()[0] == 200
    default = Path(env["EHR_BACKUP_DEFAULT_DIR"])
    if default.is_dir():
        default.rmdir()
    default.write_text("in the way")  # no backup can be written there now
    now[0] += 4.9
    assert readiness.report()[0] == 200  # the cached answer: hammering /readyz costs nothing
    now[0] += 0.1
    status, body = readiness.report()
    assert status == 503 and body["failing"] == ["location:default"]


# ----- a real server process: the middleware in front (guard, login gate, headers) lets them through -------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("health"))
    try:
        yield srv
    finally:
        srv.stop()


def test_a_real_server_answers_probes_and_scrapes_without_redirects(server: LiveServer) -> None:
    from ehr_backup.audit import Actor
    status, body = raw_request(server.port, "GET", "/healthz", {"Connection": "close"})
    assert status == 200 and b'"ok"' in body
    status, body = raw_request(server.port, "GET", "/readyz", {"Connection": "close"})
    assert status == 200, body
    status, body = raw_request(server.port, "GET", "/metrics", {"Connection": "close"})
    assert status == 401 and b"token" in body
    token = server.auth.create_token(Actor("test-setup"), "alice", "prometheus", scope="metrics")
    status, body = raw_request(server.port, "GET", "/metrics", {"Connection": "close",
                                                                "Authorization": f"Bearer {token}"})
    assert status == 200 and b"ehr_backup_info{version=" in body
    status, _ = raw_request(server.port, "GET", "/api/admin/backup/list", {"Connection": "close",
                                                                          "Authorization": f"Bearer {token}"})
    assert status == 403

