"""The ehr-backup command line, run as a user would: JSON output, exit status, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ehr_backup.config import VARIABLES
from ehr_backup.keys import parse_key

from .conftest import cli_env, run_sql


def cli(env: dict[str, str], *args: str, input_: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *args], env=cli_env(env), capture_output=True,
                          text=True, input=input_, timeout=300)


def test_create_list_verify_restore_delete_as_json(env: dict[str, str], make_db) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE patients AS SELECT g AS id FROM generate_series(1, 42) g;")
    res = cli(env, "create", "--description", "nightly", "--json")
    assert res.returncode == 0, res.stderr
    backup = json.loads(res.stdout)
    for field in ("id", "filename", "description", "location", "path", "size", "sha256", "createdAt",
                  "createdBy", "database", "status"):
        assert field in backup
    assert backup["status"] == "completed" and backup["tableRowCounts"] == {"public.patients": 42}
    listed = json.loads(cli(env, "list", "--json").stdout)
    assert [b["id"] for b in listed["backups"]] == [backup["id"]]
    verified = json.loads(cli(env, "verify", backup["id"], "--json").stdout)
    assert verified["ok"] is True
    target = make_db()
    res = cli(env, "restore", backup["id"], "--target-url", target, "--yes", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rowCountsMatch"] is True
    assert cli(env, "delete", backup["id"], "--yes").returncode == 0
    assert json.loads(cli(env, "list", "--json").stdout) == {"backups": []}
    assert json.loads(cli(env, "audit", "verify", "--json").stdout)["ok"] is True


def test_restore_rollback_contents_previous_and_chosen_tables_from_the_command_line(env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, "CREATE TABLE visits AS SELECT g AS id FROM generate_series(1, 10) g;")
    backup = json.loads(cli(env, "create", "--description", "ten", "--json").stdout)
    run_sql(db, "INSERT INTO visits VALUES (11);")
    contents = cli(env, "contents", backup["id"])
    assert contents.returncode == 0 and "table public.visits: 10 rows" in contents.stdout
    done = cli(env, "restore", backup["id"], "--yes", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "public.visits" in done.stdout and "row counts match" in done.stdout and "--rollback" in done.stdout
    kept = json.loads(cli(env, "previous", "list", "--json").stdout)["previous"]
    assert len(kept) == 1 and kept[0]["kind"] == "previous"
    back = cli(env, "restore", "--rollback", "--yes", "--json")
    assert back.returncode == 0, back.stderr
    from .conftest import query
    assert query(db, "SELECT count(*) FROM visits") == [(11,)]
    undone = json.loads(back.stdout)["undoneKeptAs"]
    assert cli(env, "previous", "drop", undone).returncode == 2  # needs --yes
    assert cli(env, "previous", "drop", undone, "--yes").returncode == 0
    chosen = cli(env, "restore", backup["id"], "--table", "public.visits", "--into-schema", "yesterday", "--yes",
                 "--json")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["tables"] == {"yesterday.visits": {"expected": 10, "loaded": 10, "actual": 10}}
    assert query(db, "SELECT count(*) FROM yesterday.visits") == [(10,)]
    assert cli(env, "restore", backup["id"], "--table", "public.visits", "--yes").returncode == 2


def test_errors_exit_non_zero_with_one_line_on_stderr(env: dict[str, str]) -> None:
    for args in (["verify", "../../etc/passwd"], ["restore", "backup_2025-01-01T00-00-00-000Z_x.sql.gz.enc"],
                 ["delete", "backup_2025-01-01T00-00-00-000Z_x.sql.gz.enc", "--yes"],
                 ["create", "--description", "x", "--location", "custom", "--path", "/etc"]):
        res = cli(env, *args)
        assert res.returncode != 0 and res.stderr.startswith("ehr-backup: error: ")
        assert res.stderr.count("\n") == 1, res.stderr


def test_restore_and_delete_need_yes(env: dict[str, str]) -> None:
    for args in (["restore", "backup_2025-01-01T00-00-00-000Z_x.sql.gz.enc"],
                 ["delete", "backup_2025-01-01T00-00-00-000Z_x.sql.gz.enc"]):
        res = cli(env, *args)
        assert res.returncode != 0 and "--yes" in res.stderr


def test_a_missing_or_malformed_key_is_refused_with_how_to_make_one(env: dict[str, str]) -> None:
    for value in ("", "hex:1234", "not a key at all"):
        res = cli({**env, "BACKUP_ENCRYPTION_KEY": value}, "create", "--description", "x")
        assert res.returncode != 0 and "ehr-backup keygen" in res.stderr
        assert value == "" or value not in res.stderr
    assert list(Path(env["EHR_BACKUP_DEFAULT_DIR"]).glob("*")) == []


def test_keygen_prints_a_usable_key() -> None:
    res = subprocess.run([sys.executable, "-m", "ehr_backup.cli", "keygen"], capture_output=True, text=True)
    assert res.returncode == 0 and parse_key(res.stdout.strip()).kind == "raw"


def test_decrypt_needs_only_the_file_and_the_key(env: dict[str, str], tmp_path: Path) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t (v text); INSERT INTO t VALUES ('héllo');")
    backup = json.loads(cli(env, "create", "--description", "portable", "--json").stdout)
    bare = {"BACKUP_ENCRYPTION_KEY": env["BACKUP_ENCRYPTION_KEY"], "HOME": env["HOME"],
            "EHR_BACKUP_DATA_DIR": str(tmp_path / "elsewhere")}
    out = tmp_path / "out.sql"
    res = cli(bare, "decrypt", backup["path"], "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert "héllo" in out.read_text() and "PostgreSQL database dump complete" in out.read_text()
    bad = cli({**bare, "BACKUP_ENCRYPTION_KEY": "hex:" + "00" * 32}, "decrypt", backup["path"], "--output",
              str(tmp_path / "no.sql"))
    assert bad.returncode != 0 and "not available" in bad.stderr and not (tmp_path / "no.sql").exists()


def test_locations_report_path_existence_writability_and_free_space(env: dict[str, str]) -> None:
    res = json.loads(cli(env, "locations", "--json").stdout)
    keys = [loc["key"] for loc in res["locations"]]
    assert keys == ["default", "desktop", "documents", "downloads"]
    for loc in res["locations"]:
        assert set(loc) >= {"key", "label", "path", "exists", "writable", "freeBytes"}
        assert loc["freeBytes"] > 0
    assert res["locations"][1]["path"].endswith("Desktop/EHR-Backups")


def test_help_documents_every_environment_variable() -> None:
    out = subprocess.run([sys.executable, "-m", "ehr_backup.cli", "--help"], capture_output=True, text=True).stdout
    for name in VARIABLES:
        assert name in out


def test_audit_export_writes_csv(env: dict[str, str], tmp_path: Path) -> None:
    cli(env, "create", "--description", "for the auditors")
    out = tmp_path / "audit.csv"
    assert cli(env, "audit", "export", "--csv", str(out)).returncode == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("seq,time_utc,actor") and len(lines) == 4  # create started, ok; verify ok
