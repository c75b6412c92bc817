"""`ehr-backup demo` starts a cluster of its own; with no DATABASE_URL the CLI then backs it up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import cli_env


@pytest.mark.skipif(not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"),
                    reason="PostgreSQL server binaries are not installed")
def test_demo_then_backup_and_restore_with_no_database_url(tmp_path: Path) -> None:
    env = {"EHR_BACKUP_DATA_DIR": str(tmp_path / "data"), "EHR_BACKUP_DEFAULT_DIR": str(tmp_path / "backups"),
           "HOME": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *args], env=cli_env(env),
                              capture_output=True, text=True, timeout=300)

    try:
        first = cli("demo")
        assert first.returncode == 0, first.stderr
        assert "DATABASE_URL=postgresql://" in first.stdout and "BACKUP_ENCRYPTION_KEY" in first.stderr
        again = cli("demo", "--json")
        assert json.loads(again.stdout)["created"] is False
        key_file = Path(json.loads(again.stdout)["keyFile"])
        assert key_file.stat().st_mode & 0o777 == 0o600
        made = cli("create", "--description", "demo backup", "--json")
        assert made.returncode == 0, made.stderr
        backup = json.loads(made.stdout)
        assert backup["database"] == "ehr_demo"
        assert set(backup["tableRowCounts"]) == {"public.patients", "public.encounters", "public.observations",
                                                 "public.notes", "public.documents"}
        restored = cli("restore", backup["id"], "--yes", "--json")
        assert restored.returncode == 0, restored.stderr
        report = json.loads(restored.stdout)
        assert report["rowCountsMatch"] and report["previousDatabase"].startswith("ehr_demo__before_")
        cli("demo", "--stop")
        # stopped demo servers start again when needed
        assert cli("list", "--json").returncode == 0
    finally:
        cli("demo", "--stop")
        state = tmp_path / "data" / "demo" / "state.json"
        if state.exists():
            shutil.rmtree(json.loads(state.read_text())["base"], ignore_errors=True)
