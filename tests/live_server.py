"""The web app as a real server process (as `python -m ehr_backup` runs it), and a raw HTTP client.

Edge behaviour (uvicorn's proxy handling, slow clients, bodies on the wire, the socket) only shows in a
real process, not in NiceGUI's simulated user.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psycopg

from ehr_backup.audit import Actor
from ehr_backup.auth import AuthService
from ehr_backup.config import Settings
from ehr_backup.keys import generate_key
from ehr_backup.models import AuditEntry
from ehr_backup.service import BackupService

from .conftest import ADMIN_PW, ADMIN_URL, USER_PW, _free_port, run_sql, url_for

ROOT = Path(__file__).parent.parent


class LiveServer:
    """A server process with an admin (alice, with an API token) and a non-admin (bob)."""

    def __init__(self, base: Path, extra_env: dict[str, str] | None = None,
                 prepare: Callable[[BackupService], None] | None = None) -> None:
        self.db_name = f"live_{uuid.uuid4().hex[:10]}"
        run_sql(ADMIN_URL, f'CREATE DATABASE "{self.db_name}"')
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (base / "home").mkdir(parents=True, exist_ok=True)
        self.settings_env = {"DATABASE_URL": url_for(self.db_name), "BACKUP_ENCRYPTION_KEY": generate_key(),
                             "EHR_BACKUP_DATA_DIR": str(base / "data"),
                             "EHR_BACKUP_DEFAULT_DIR": str(base / "backups"),
                             "EHR_BACKUP_PORT": str(self.port), "HOME": str(base / "home"), **(extra_env or {})}
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PYTEST_", "PG", "EHR_BACKUP_", "BACKUP_", "DATABASE_URL", "NICEGUI_"))}
        self.env.update(self.settings_env)
        service = BackupService(Settings.from_env(self.settings_env))
        self.auth = AuthService(service.db, service.audit, service.settings)
        self.auth.add_user(Actor("test-setup"), "alice", ADMIN_PW, admin=True)
        self.auth.add_user(Actor("test-setup"), "bob", USER_PW, admin=False)
        self.admin_token = self.auth.create_token(Actor("test-setup"), "alice")
        self._service = service
        if prepare is not None:  # what the installation holds before the server starts
            prepare(service)
        self.log_path = base / "server.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "ehr_backup"], env=self.env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError("the server did not start: " + self.log_path.read_text())

    def rss_kb(self) -> int:
        """The server process's resident memory (VmRSS) in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def audit(self) -> list[AuditEntry]:
        """Every audit entry, oldest first."""
        return list(reversed(self._service.audit.entries()))

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, so shutdown handlers run) and drop its database."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        self._service.db.dispose()
        try:
            run_sql(ADMIN_URL, f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except psycopg.Error:
            pass


def live_server(base: Path, extra_env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    """Fixture body: a server for the test module."""
    server = LiveServer(base, extra_env)
    try:
        yield server
    finally:
        server.stop()


def raw_request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
                body: Iterable[bytes] = (), timeout: float = 30) -> tuple[int, bytes]:
    """Send a request with body chunks (from a thread) while reading the response: (status, body).

    The body goes out while the response is read, as with a client streaming an upload; a server that
    answers early and closes simply ends the upload. Status 0: the server closed without answering.
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def upload() -> None:
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            for chunk in body:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed

    threading.Thread(target=upload, daemon=True).start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        while length is not None and len(rest) < length:
            part = sock.recv(65536)
            if not part:
                break
            rest += part
    except (ConnectionResetError, TimeoutError):
        head, _, rest = data.partition(b"\r\n\r\n")
    finally:
        sock.close()
    if not head.startswith(b"HTTP/1.1 "):
        return 0, data
    return int(head.split()[1]), rest


def chunked(total: int, size: int = 1024 * 1024) -> Iterator[bytes]:
    """`total` bytes in HTTP chunked encoding, then the end marker."""
    sent = 0
    block = b"x" * size
    while sent < total:
        n = min(size, total - sent)
        yield f"{n:x}\r\n".encode() + block[:n] + b"\r\n"
        sent += n
    yield b"0\r\n\r\n"


def plain(total: int, size: int = 1024 * 1024) -> Iterator[bytes]:
    """`total` bytes of body, in blocks."""
    sent = 0
    block = b"x" * size
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


__all__ = ["ADMIN_PW", "USER_PW", "LiveServer", "chunked", "live_server", "plain", "raw_request"]
