"""start.sh: a busy port is named before anything starts; a "ready" line; what a stop leaves running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ehr_backup.keys import generate_key

from .conftest import _free_port

ROOT = Path(__file__).resolve().parents[1]


def script_env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTEST_", "PG", "EHR_BACKUP_", "BACKUP_", "DATABASE_URL", "NICEGUI_"))}
    return {**base, **extra}


def test_a_busy_port_is_named_with_how_to_choose_another_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(["bash", str(ROOT / "start.sh")], capture_output=True, text=True, timeout=60, check=False,
                             env=script_env(EHR_BACKUP_PORT=str(port), EHR_BACKUP_DATA_DIR=str(tmp_path / "d")))
    assert res.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in res.stderr
    assert f"EHR_BACKUP_PORT={port + 1} bash start.sh" in res.stderr
    assert "starting" not in res.stdout and "installing" not in res.stdout and "Errno" not in res.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was set up


def test_ready_line_once_the_server_answers_and_a_clean_stop(tmp_path: Path, make_db) -> None:
    venv_ok = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", "import ehr_backup.web, pages, nicegui"],
                             capture_output=True, check=False).returncode == 0
    if not venv_ok:
        pytest.fail("start.sh is tested with the checkout's installed .venv (bash .ci/run makes it)")
    stamp = subprocess.run(f"sha256sum {ROOT / 'pyproject.toml'} | cut -c1-16", shell=True, capture_output=True,
                           text=True, check=True).stdout.strip()
    (ROOT / ".venv/.installed-from").write_text(stamp + "\n")  # what start.sh writes after its install: none now
    port = _free_port()
    (tmp_path / "home").mkdir()
    env = script_env(EHR_BACKUP_PORT=str(port), EHR_BACKUP_DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path / "home"),
                     DATABASE_URL=make_db(), BACKUP_ENCRYPTION_KEY=generate_key(), EHR_BACKUP_SCHEDULER="0",
                     EHR_BACKUP_DRILL_SCHEDULE="off")
    proc = subprocess.Popen(["bash", str(ROOT / "start.sh")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("ready:"):
                break
        assert lines and lines[-1] == f"ready: EHR Backup answers at http://127.0.0.1:{port} (Ctrl-C stops it)", lines
        assert any(x.startswith(f"starting EHR Backup on http://127.0.0.1:{port}") for x in lines)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "EHR Backup stopped." in out and "demo database" not in out  # DATABASE_URL set: no demo to stop
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the server is gone: its port is free again


def test_the_stop_message_tells_how_to_stop_the_demo_database() -> None:
    text = (ROOT / "start.sh").read_text()
    assert "The demo database keeps running" in text and ".venv/bin/ehr-backup demo --stop" in text
