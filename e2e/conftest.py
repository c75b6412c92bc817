"""Browser journeys: a real server process, real headless Chromium (Debian's), real PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import ADMIN_URL, run_sql, url_for

ROOT = Path(__file__).parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
ADMIN_PW = "e2e-admin-password"
USER_PW = "e2e-plain-user-password"
CHROMIUM = os.environ.get("EHR_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Debian's Chromium (Playwright cannot download browsers here), without background networking."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    """Accept downloads; a desktop-sized window."""
    return {**browser_context_args, "accept_downloads": True, "viewport": {"width": 1400, "height": 1000}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The web app running as its own process, as `python -m ehr_backup` starts it."""

    def __init__(self, base: Path) -> None:
        self.db_name = f"e2e_{uuid.uuid4().hex[:10]}"
        run_sql(ADMIN_URL, f'CREATE DATABASE "{self.db_name}"')
        self.db_url = url_for(self.db_name)
        run_sql(self.db_url, "CREATE TABLE patients (id serial PRIMARY KEY, name text);"
                             "INSERT INTO patients (name) SELECT 'patient ' || g FROM generate_series(1, 300) g;")
        self.port = _free_port()
        key = subprocess.run([sys.executable, "-m", "ehr_backup.cli", "keygen"], capture_output=True,
                             text=True, check=True).stdout.strip()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PYTEST_", "PG", "EHR_BACKUP_", "BACKUP_", "DATABASE_URL"))}
        self.env.update({"DATABASE_URL": self.db_url, "BACKUP_ENCRYPTION_KEY": key,
                         "EHR_BACKUP_DATA_DIR": str(base / "data"), "EHR_BACKUP_DEFAULT_DIR": str(base / "backups"),
                         "EHR_BACKUP_PORT": str(self.port), "HOME": str(base / "home")})
        for name, pw, admin in (("alice", ADMIN_PW, True), ("bob", USER_PW, False)):
            subprocess.run([sys.executable, "-m", "ehr_backup.cli", "user", "add", name, *(["--admin"] if admin else [])],
                           input=pw + "\n", text=True, env=self.env, check=True, capture_output=True)
        self.log = open(base / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "ehr_backup"], env=self.env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError("the server did not start: " + (base / "server.log").read_text())

    @property
    def backups_dir(self) -> Path:
        """The Default location."""
        return Path(self.env["EHR_BACKUP_DEFAULT_DIR"])

    def stop(self) -> None:
        """Stop the server and drop its database and those its restores kept beside it."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:  # names made here: e2e_<hex>[__…]
            kept = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname = %s OR "
                                               "starts_with(datname, %s)", (self.db_name, self.db_name + "__"))]
            for name in kept:
                try:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                except psycopg.Error:
                    pass


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the session."""
    s = Server(tmp_path_factory.mktemp("e2e"))
    yield s
    s.stop()


@pytest.fixture
def shot(page):
    """Save a full-page screenshot under test-output/screenshots for reviewers."""
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> None:
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    return take
