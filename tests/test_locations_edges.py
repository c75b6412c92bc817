"""Bad custom paths and folder names through each edge (REST, page, CLI): a clear 4xx or one-line
error, an audit entry, nothing created, never a 500 or a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.paths import ALLOWED_TEXT

from .conftest import run_sql
from .test_cli import cli
from .web_helpers import eventually, login

API = "/api/admin/backup"
LONG = "a" * 300


@pytest.fixture
def admin_token(accounts) -> str:
    return accounts.create_token(Actor("t"), "alice")


def _refusals(accounts, action: str) -> list:
    return [e for e in accounts._audit.entries(action=action) if e.outcome == "refused"]


@pytest.mark.parametrize("custom", [f"/{LONG}", f"/{LONG}/x", "/" + "é" * 200, 'a" :x="1"', "name\u202eexe"])
async def test_a_bad_custom_path_through_the_api_is_a_422_and_audited(
        user: User, accounts, admin_token: str, tmp_path: Path, custom: str) -> None:
    path = f"{tmp_path}/{custom.lstrip('/')}"
    r = await user.http_client.post(f"{API}/create", headers={"Authorization": f"Bearer {admin_token}"},
                                    json={"description": "x", "location": "custom", "customPath": path})
    assert r.status_code == 422 and set(r.json()) == {"error"}, r.text
    assert "255 bytes" in r.json()["error"] or ALLOWED_TEXT in r.json()["error"]
    assert "Traceback" not in r.text
    assert len(_refusals(accounts, "create")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "home"]


async def test_create_folder_with_an_overlong_or_forbidden_name_shows_why_and_creates_nothing(
        user: User, accounts, web_env, tmp_path: Path) -> None:
    (tmp_path / "nas").mkdir()
    await login(user, next_="/admin/backup")
    user.find(marker="location").elements.pop().value = "custom"
    user.find(marker="custom-path").type(str(tmp_path / "nas"))
    user.find(marker="browse").click()
    await eventually(lambda: user.find(marker="browse-path").elements.pop().text == str(tmp_path / "nas"))
    for name, reason in ((LONG, "255 bytes"), ('x" :title="1"', ALLOWED_TEXT)):
        user.find(marker="new-folder-name").clear()
        user.find(marker="new-folder-name").type(name)
        user.find(marker="new-folder").click()
        await user.should_see(reason)
    await eventually(lambda: len(_refusals(accounts, "folder.create")) == 2, timeout=10)
    assert list((tmp_path / "nas").iterdir()) == []


async def test_the_page_marks_folders_that_cannot_be_chosen(user: User, accounts, web_env, tmp_path: Path) -> None:
    for name in ('quote"d', "colon:name", "fine"):
        (tmp_path / "mixed" / name).mkdir(parents=True)
    await login(user, next_="/admin/backup")
    user.find(marker="location").elements.pop().value = "custom"
    user.find(marker="custom-path").type(str(tmp_path / "mixed"))
    user.find(marker="browse").click()
    await user.should_see(marker="dir-fine")
    marks = [e.text for e in user.find(marker="unusable-dir").elements]
    assert len(marks) == 2 and all("cannot be chosen" in m and ALLOWED_TEXT in m for m in marks)
    assert {m.split(" cannot")[0].removeprefix("↳ ") for m in marks} == {'quote"d', "colon:name"}


def test_the_cli_refuses_overlong_paths_with_one_line_and_exit_status_2(env: dict[str, str], tmp_path: Path) -> None:
    res = cli(env, "create", "--description", "x", "--location", "custom", "--path", f"{tmp_path}/{LONG}")
    assert res.returncode == 2 and res.stderr.startswith("ehr-backup: error: ") and "255 bytes" in res.stderr
    assert res.stderr.count("\n") == 1
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT 1 AS one;")
    backup = json.loads(cli(env, "create", "--description", "to decrypt", "--json").stdout)
    for output in (tmp_path / LONG / "out.sql", tmp_path / f"{LONG}.sql"):
        res = cli(env, "decrypt", backup["path"], "--output", str(output))
        assert res.returncode == 2 and "255 bytes" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    res = cli(env, "decrypt", f"{tmp_path}/{LONG}.enc", "--output", str(tmp_path / "out.sql"))
    assert res.returncode == 2 and "255 bytes" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "out.sql").exists()


def test_the_audit_export_refuses_an_unwritable_csv_path_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    for path, code, text in ((tmp_path / LONG / "audit.csv", 2, "255 bytes"),
                             (tmp_path / "missing" / "audit.csv", 1, "no such file or folder")):
        res = cli(env, "audit", "export", "--csv", str(path))
        assert res.returncode == code and res.stderr.startswith("ehr-backup: error: cannot write "), res.stderr
        assert text in res.stderr and res.stderr.count("\n") == 1
