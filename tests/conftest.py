"""Shared fixtures: real PostgreSQL databases, a configured service, a throwaway cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.errors import BackupError
from ehr_backup.keys import generate_key
from ehr_backup.pg import ConnInfo
from ehr_backup.restore.database import drop
from ehr_backup.service import BackupService

ACTOR = Actor("tester", "127.0.0.1")


def _admin_url() -> str:
    """The server tests use: EHR_TEST_PG_URL, else 127.0.0.1:5432, else a cluster started for this run."""
    url = os.environ.get("EHR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return url
    except psycopg.Error:
        import atexit
        import tempfile
        base = Path(tempfile.mkdtemp(prefix="ehr-test-server-", dir="/var/tmp"))
        os.chmod(base, 0o755)
        c = Cluster(base / "c")
        c.start()
        atexit.register(lambda: (c.stop("immediate"), shutil.rmtree(base, ignore_errors=True)))
        return c.url()


def url_for(dbname: str, base: str | None = None) -> str:
    """The admin URL with another database name."""
    return (base or ADMIN_URL).rsplit("/", 1)[0] + "/" + dbname


def run_sql(url: str, sql: str) -> None:
    """Execute a script in autocommit mode."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def metadata_sql(env: dict[str, str], sql: str, pg_sql: str | None = None) -> None:
    """Run statements on the installation's metadata database: the SQLite file, or PostgreSQL when the
    environment names one (EHR_TEST_METADATA=pg); pg_sql where PostgreSQL needs other words."""
    if env.get("EHR_BACKUP_METADATA_URL"):
        run_sql(env["EHR_BACKUP_METADATA_URL"], pg_sql or sql)
        return
    import sqlite3
    with sqlite3.connect(Path(env["EHR_BACKUP_DATA_DIR"]) / "catalogue.sqlite3") as conn:
        conn.executescript(sql)


def query(url: str, sql: str) -> list[tuple]:
    """Fetch all rows of a query."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def make_db() -> Iterator[Callable[[], str]]:
    """Create empty databases on the shared server; drop them afterwards. Returns their URLs."""
    made: list[str] = []

    def make(name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        run_sql(ADMIN_URL, f'CREATE DATABASE "{name}"')
        made.append(name)
        return url_for(name)

    make.made = made  # type: ignore[attr-defined]
    yield make
    drop_databases(made)


def drop_databases(names: list[str]) -> None:
    """Drop test databases and every copy a restore kept beside them (`<name>__before_…` and the like)."""
    for name in names:
        kept = [r[0] for r in query(ADMIN_URL, "SELECT datname FROM pg_database WHERE starts_with(datname, "
                                               f"'{name}__')")]
        for db in [name, *kept]:
            try:
                with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                    drop(conn, db, ConnInfo.parse(ADMIN_URL))  # subscriptions detached first
            except (psycopg.Error, BackupError):
                pass


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_db: Callable[[], str]) -> dict[str, str]:
    """Environment of an installation: its own data dir, default location, key, and database."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DESKTOP_DIR", raising=False)
    values = {
        "DATABASE_URL": make_db(),
        "BACKUP_ENCRYPTION_KEY": generate_key(),
        "EHR_BACKUP_DATA_DIR": str(tmp_path / "data"),
        "EHR_BACKUP_DEFAULT_DIR": str(tmp_path / "backups"),
        "EHR_BACKUP_THREADS": "2",
        "EHR_BACKUP_CUSTOM_ROOTS": str(tmp_path),  # tests make their custom locations in tmp_path
        "HOME": str(home),
        "EHR_BACKUP_DRILL_SCHEDULE": "off",  # tests expect no schedule they did not make (test_drills.py turns it on)
    }
    if os.environ.get("EHR_TEST_METADATA") == "pg":  # the whole suite on PostgreSQL metadata (docs/SCALING.md)
        values["EHR_BACKUP_METADATA_URL"] = make_db(f"pgmeta_{uuid.uuid4().hex[:12]}")
    return values


@pytest.fixture
def service(env: dict[str, str]) -> Iterator[BackupService]:
    """A service configured from `env`."""
    svc = BackupService(Settings.from_env(env))
    yield svc
    svc.db.dispose()


def cli_env(env: dict[str, str]) -> dict[str, str]:
    """os.environ with the installation's variables, for running the CLI as a subprocess."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PG", "BACKUP_", "EHR_BACKUP_",
                                                                      "DATABASE_URL"))}
    return {**base, **env}


class Cluster:
    """A throwaway PostgreSQL cluster run by the postgres user, which tests may stop or kill."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pgdata = base / "pgdata"
        self.bindir = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", self.user, "--", *argv] if self.user else list(argv)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PYTEST_"))}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/")

    def start(self) -> None:
        """initdb (first time) and start."""
        if not self.pgdata.exists():
            self.base.mkdir(parents=True, exist_ok=True)
            if self.user:
                shutil.chown(self.base, self.user, self.user)
            res = self._run(str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "-A", "trust")
            assert res.returncode == 0, res.stderr
        res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.base / "log"), "-w",
                        "-o", f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                              f"-c unix_socket_directories={self.base}", "start")
        assert res.returncode == 0, res.stderr + res.stdout

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode immediate = crash)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def url(self, dbname: str = "postgres") -> str:
        """Connection URL for a database of this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ADMIN_URL = _admin_url()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A throwaway cluster (about two seconds to create)."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="ehr-cluster-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    c = Cluster(base / "c")
    c.start()
    yield c
    c.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


ADMIN_PW = "correct-horse-battery"
USER_PW = "ordinary-user-password"


@pytest.fixture
def web_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The installation's variables in os.environ, where the web app's main file reads them."""
    for key in ("EHR_BACKUP_SESSION_SECRET", "EHR_BACKUP_IDLE_MINUTES", "EHR_BACKUP_SESSION_HOURS",
                "EHR_BACKUP_PG_BIN", "BACKUP_ENCRYPTION_OLD_KEYS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EHR_BACKUP_SCHEDULER", "0")  # the schedule tests drive a scheduler with their own clock
    return env


@pytest.fixture
def accounts(web_env: dict[str, str]):
    """An admin (alice) and a non-admin (bob); returns the AuthService used to make them."""
    from ehr_backup.auth import AuthService
    svc = BackupService(Settings.from_env(web_env))
    auth = AuthService(svc.db, svc.audit, svc.settings)
    auth.add_user(Actor("test-setup"), "alice", ADMIN_PW, admin=True)
    auth.add_user(Actor("test-setup"), "bob", USER_PW, admin=False)
    yield auth
    svc.db.dispose()


@pytest.fixture
async def user(web_env: dict[str, str], caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch):
    """NiceGUI's simulated user, started only after the installation's environment is in place."""
    from nicegui.testing import User
    from nicegui.testing.general_fixtures import get_path_to_main_file
    from nicegui.testing.user_simulation import user_simulation

    from pages.deferred import page_built

    original_open = User.open

    async def open_until_built(self: User, path: str, **kwargs: object):
        # pages build their body once the browser connects (pages/deferred.py): a test, like a person,
        # looks at the page once it is there, as every open (navigation included) waits for it
        client = await original_open(self, path, **kwargs)  # type: ignore[arg-type]
        await page_built(client)
        return client

    monkeypatch.setattr(User, "open", open_until_built)

    async with user_simulation(main_file=get_path_to_main_file(request)) as simulated:
        yield simulated
        errors = [r for r in caplog.get_records("call") if r.levelname == "ERROR"]
        if errors:
            pytest.fail(f"unexpected ERROR logs: {[r.getMessage() for r in errors]}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 server process (moto_server) on 127.0.0.1 for the whole session (tests/s3server.py)."""
    from .s3server import start

    server = start(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
