"""The Default location is one absolute folder, recorded on first use, wherever the CLI or server runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ehr_backup.config import Settings
from ehr_backup.default_location import first_choice
from ehr_backup.service import BackupService

from .conftest import cli_env, run_sql

ROOT = Path(__file__).resolve().parents[1]


def cli_in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The installed CLI run from another working directory (the package comes from the checkout)."""
    full = {**cli_env(env), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *args], env=full, cwd=cwd, capture_output=True, check=False,
                          text=True, timeout=300)


def test_cli_from_two_directories_writes_to_the_one_recorded_folder(env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in env.items() if k != "EHR_BACKUP_DEFAULT_DIR"}
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 5) g;")
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    first = cli_in(here, env, "create", "--description", "from here", "--json")
    assert first.returncode == 0, first.stderr
    second = cli_in(there, env, "create", "--description", "from there", "--json")
    assert second.returncode == 0, second.stderr
    paths = [Path(json.loads(r.stdout)["path"]).parent for r in (first, second)]
    recorded = Path(env["EHR_BACKUP_DATA_DIR"]).resolve() / "backups"
    assert paths == [recorded, recorded]  # not <cwd>/backups
    assert not (here / "backups").exists() and not (there / "backups").exists()
    shown = json.loads(cli_in(there, env, "locations", "--json").stdout)["locations"]
    assert next(loc["path"] for loc in shown if loc["key"] == "default") == str(recorded)
    # the server reads the same record (in any directory)
    service = BackupService(Settings.from_env(env))
    try:
        assert service.settings.default_dir == recorded
        assert {b.id for b in service.catalogue.all()} == {json.loads(r.stdout)["id"] for r in (first, second)}
        entries = [e for e in service.audit.entries(action="configure") if e.target == "default location"]
        assert len(entries) == 1 and str(recorded) in entries[0].detail  # recorded once, audited
    finally:
        service.db.dispose()


def test_the_environment_overrides_the_recorded_folder(env: dict[str, str], tmp_path: Path) -> None:
    unset = {k: v for k, v in env.items() if k != "EHR_BACKUP_DEFAULT_DIR"}
    BackupService(Settings.from_env(unset)).db.dispose()  # records the data dir's folder
    service = BackupService(Settings.from_env(env))
    try:
        assert service.settings.default_dir == Path(env["EHR_BACKUP_DEFAULT_DIR"])
    finally:
        service.db.dispose()
    again = BackupService(Settings.from_env(unset))
    try:
        assert again.settings.default_dir == Path(env["EHR_BACKUP_DATA_DIR"]).resolve() / "backups"
    finally:
        again.db.dispose()


def test_an_installation_with_default_backups_keeps_their_folder() -> None:
    settings = Settings(data_dir=Path("/srv/ehr/data"), default_dir=Path("/srv/ehr/data/backups"))
    assert first_choice(settings, "/opt/ehr-backup/backups") == Path("/opt/ehr-backup/backups")
    assert first_choice(settings, None) == Path("/srv/ehr/data/backups")
