"""The browser pages, driven by NiceGUI's simulated user against a real database."""

from __future__ import annotations

from pathlib import Path

import pytest
from nicegui.testing import User

from ehr_backup.errors import Unauthenticated
from ehr_backup.models import Status

from .conftest import ACTOR, ADMIN_PW, USER_PW, run_sql
from .table_helpers import no_row, row_action, table_row
from .web_helpers import eventually, login, wait_for_path


async def test_pages_require_sign_in_and_login_lands_on_the_requested_page(user: User, accounts) -> None:
    await user.open("/admin/backup")
    await user.should_see(marker="login-button")
    user.find(marker="username").type("alice")
    user.find(marker="password").type(ADMIN_PW)
    user.find(marker="login-button").click()
    await wait_for_path(user, "/admin/backup")
    await user.should_see("Create a backup")


async def test_wrong_password_is_refused_audited_and_throttled(user: User, accounts) -> None:
    await user.open("/login")

    def failures() -> int:
        return sum(1 for e in accounts._audit.entries(action="login") if e.outcome == "failed")

    for attempt in range(1, 6):
        user.find(marker="username").type("alice")
        user.find(marker="password").type("wrong password!!")
        user.find(marker="login-button").click()
        await eventually(lambda n=attempt: failures() == n, timeout=10)
        await user.should_see("wrong user name or password")
        user.find(marker="username").clear()
    user.find(marker="username").type("alice")
    user.find(marker="password").type(ADMIN_PW)  # even the right password waits now
    user.find(marker="login-button").click()
    await user.should_see("too many failed attempts")
    outcomes = [e.outcome for e in accounts._audit.entries(action="login")]
    assert outcomes.count("failed") == 5 and outcomes[0] == "throttled"


async def test_eh_shows_the_purple_card_and_it_opens_backups_with_a_way_back(user: User, accounts) -> None:
    await login(user)
    card = user.find(marker="backup-card").elements.pop()
    assert "#7e22ce" in card.style["background-color"]  # purple
    await user.should_see("Database Backup & Restore")
    user.find(marker="backup-card").trigger("click")
    await wait_for_path(user, "/admin/backup")
    assert user.back_history[-1].endswith("from=eh")
    link = user.find(marker="back-link").elements.pop()
    assert link.props["href"] == "/eh" and "Electronic Health" in link.text


async def test_rh_shows_the_yellow_card(user: User, accounts) -> None:
    await login(user, next_="/rh")
    card = user.find(marker="backup-card").elements.pop()
    assert "#facc15" in card.style["background-color"]  # yellow
    user.find(marker="backup-card").trigger("click")
    await wait_for_path(user, "/admin/backup")
    link = user.find(marker="back-link").elements.pop()
    assert link.props["href"] == "/rh"


async def test_a_non_admin_sees_no_backup_card_and_gets_403_on_direct_urls(user: User, accounts) -> None:
    await login(user, "bob", USER_PW)
    await user.should_see(marker="no-modules")
    await user.should_not_see(marker="backup-card")
    for path in ("/admin/backup", "/admin/audit", "/admin/users"):
        response = await user.http_client.get(path)
        assert response.status_code == 403 and "administrators only" in response.text
    assert accounts._audit.entries(limit=1)[0].outcome == "refused"


async def test_create_a_backup_and_watch_it_finish(user: User, accounts, web_env) -> None:
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE patients AS SELECT g FROM generate_series(1, 500) g;")
    await login(user, next_="/admin/backup?from=eh")
    user.find(marker="description").type("Before the upgrade")
    user.find(marker="create-button").click()
    await user.should_see(marker="job-create")
    assert user.find(marker="description").elements.pop().value == ""  # cleared once the backup started
    status = user.find(marker="job-status").elements.pop()
    await eventually(lambda: status.text.startswith("Finished"))
    backups = list(Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*_before_the_upgrade.sql.gz.enc"))
    assert len(backups) == 1
    row = await table_row(user, backups[0].name, lambda r: r["status"] == Status.COMPLETED)
    assert row["description"] == "Before the upgrade" and row["sizeText"].endswith("kB")


async def test_custom_location_with_the_directory_browser(user: User, accounts, web_env, tmp_path: Path) -> None:
    (tmp_path / "nas").mkdir()
    await login(user, next_="/admin/backup")
    user.find(marker="location").elements.pop().value = "custom"
    user.find(marker="custom-path").type(str(tmp_path))
    user.find(marker="browse").click()
    await user.should_see(marker="dir-nas")
    user.find(marker="dir-nas").click()
    await eventually(lambda: user.find(marker="browse-path").elements.pop().text == str(tmp_path / "nas"))
    user.find(marker="new-folder-name").type("ehr")
    user.find(marker="new-folder").click()
    await eventually(lambda: user.find(marker="browse-path").elements.pop().text == str(tmp_path / "nas" / "ehr"))
    user.find(marker="browse-choose").click()
    assert user.find(marker="custom-path").elements.pop().value == str(tmp_path / "nas" / "ehr")
    user.find(marker="description").type("to the nas")
    user.find(marker="create-button").click()
    await eventually(lambda: any((tmp_path / "nas" / "ehr").glob("backup_*.enc")))


async def test_unsafe_custom_location_shows_the_reason(user: User, accounts) -> None:
    await login(user, next_="/admin/backup")
    user.find(marker="location").elements.pop().value = "custom"
    user.find(marker="custom-path").type("/etc")
    user.find(marker="description").type("nope")
    user.find(marker="create-button").click()
    await user.should_see("system directory")


async def test_verify_restore_and_delete_from_the_list(user: User, accounts, web_env) -> None:
    db = web_env["DATABASE_URL"]
    run_sql(db, "CREATE TABLE notes AS SELECT g, 'note ' || g AS body FROM generate_series(1, 50) g;")
    await login(user, next_="/admin/backup")
    user.find(marker="description").type("restore me")
    user.find(marker="create-button").click()
    await eventually(lambda: any(Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*restore_me*.enc")))
    bid = next(Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*restore_me*.enc")).name
    await table_row(user, bid, lambda r: r["status"] == "completed")
    row_action(user, "verify", bid)
    await table_row(user, bid, lambda r: r["verifiedText"].startswith("verified ")
                      and r["verifiedIcon"] == "check_circle" and r["stateLabel"] == "verified")

    run_sql(db, "DELETE FROM notes WHERE g > 10; CREATE TABLE made_later (a int);")
    row_action(user, "restore", bid)
    await user.should_see(marker="restore-warning")
    start = user.find(marker="restore-start").elements.pop()
    assert not start.enabled
    user.find(marker="restore-confirm").type("wrong")
    assert not start.enabled
    user.find(marker="restore-confirm").clear()
    user.find(marker="restore-confirm").type(db.rsplit("/", 1)[1])
    assert start.enabled
    user.find(marker="restore-start").click()
    await eventually(lambda: bool(user.find(marker="restore-report").elements.pop().default_slot.children))
    await user.should_see("Row counts match the backup for all 1 tables")
    assert run_sql is not None
    from .conftest import query
    assert query(db, "SELECT count(*) FROM notes") == [(50,)]
    assert query(db, "SELECT count(*) FROM pg_class WHERE relname = 'made_later'") == [(0,)]
    await user.should_see(marker="restore-comparison")
    await user.should_see(marker="restore-previous")
    user.find(marker="restore-close").click()

    # the previous database is listed at once, and rolling back to it puts the changed data back
    previous = next(k["name"] for k in BackupServiceFor(web_env).kept_databases())
    await user.should_see(marker=f"rollback-{previous}", retries=100)
    user.find(marker=f"rollback-{previous}").click()
    user.find(marker="kept-confirm").type(db.rsplit("/", 1)[1])
    user.find(marker="kept-go").click()
    await eventually(lambda: query(db, "SELECT count(*) FROM notes") == [(10,)])

    # chosen tables, beside the live ones
    row_action(user, "restore", bid)
    await user.should_see(marker="restore-what")
    user.find(marker="restore-what").elements.pop().value = "tables"
    await user.should_see(marker="restore-tables", retries=100)
    await eventually(lambda: user.find(marker="restore-tables").elements.pop().options)
    user.find(marker="restore-tables").elements.pop().value = ["public.notes"]
    user.find(marker="restore-into").elements.pop().value = "from_the_page"
    user.find(marker="restore-confirm").type(db.rsplit("/", 1)[1])
    user.find(marker="restore-start").click()
    await user.should_see(marker="restore-result", retries=150)
    assert query(db, "SELECT count(*) FROM from_the_page.notes") == [(50,)]
    assert query(db, "SELECT count(*) FROM public.notes") == [(10,)]
    user.find(marker="restore-close").click()

    row_action(user, "delete", bid)
    await user.should_see(marker="delete-confirm")
    user.find(marker="delete-confirm").click()
    await eventually(lambda: not (Path(web_env["EHR_BACKUP_DEFAULT_DIR"]) / bid).exists())
    await no_row(user, bid)  # the list refreshed after the change


def BackupServiceFor(env: dict[str, str]):
    from ehr_backup.config import Settings
    from ehr_backup.service import BackupService
    return BackupService(Settings.from_env(env))


async def test_download_streams_the_exact_file(user: User, accounts, web_env) -> None:
    await login(user, next_="/admin/backup")
    user.find(marker="description").type("download me")
    user.find(marker="create-button").click()
    await eventually(lambda: any(Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*download_me*.enc")))
    path = next(Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*download_me*.enc"))
    await table_row(user, path.name, lambda r: r["status"] == "completed")
    row_action(user, "download", path.name)
    response = await user.download.next(timeout=10)
    assert response.status_code == 200 and response.content == path.read_bytes()
    assert response.headers["cache-control"] == "no-store"


async def test_logout_ends_the_session_and_actions_from_an_open_page_are_refused(user: User, accounts,
                                                                                  web_env) -> None:
    await login(user, next_="/admin/backup")
    page_client = user.client
    token = user.http_client.cookies.get("ehr_session")
    accounts.logout(token, accounts.session(token).actor())  # as if logged out in another tab
    with page_client:
        user.find(marker="description").type("after logout")
        user.find(marker="create-button").click()
    await wait_for_path(user, "/login")
    assert not list(Path(web_env["EHR_BACKUP_DEFAULT_DIR"]).glob("backup_*after_logout*"))
    refused = [e for e in accounts._audit.entries(action="access") if e.outcome == "refused"]
    assert refused and refused[0].actor == "alice"
    response = await user.http_client.get("/eh", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


async def test_session_cookie_changes_at_each_login(user: User, accounts) -> None:
    await login(user)
    first = user.http_client.cookies.get("ehr_session")
    user.find(marker="logout").click()
    await wait_for_path(user, "/login")
    await login(user)
    second = user.http_client.cookies.get("ehr_session")
    assert first and second and first != second
    with pytest.raises(Unauthenticated):
        accounts.session(first)


async def test_audit_page_filters_and_exports(user: User, accounts) -> None:
    await login(user, next_="/admin/audit")
    table = user.find(marker="audit-table").elements.pop()
    assert {r["actor"] for r in table.rows} >= {"alice", "test-setup"}
    login_row = next(r for r in table.rows if r["action"] == "login")
    assert login_row["outcome"] == "ok" and login_row["utc"].endswith("UTC") and login_row["local"]
    user.find(marker="filter-user").type("alice")
    user.find(marker="filter-apply").click()
    await eventually(lambda: {r["actor"] for r in table.rows} == {"alice"})
    user.find(marker="check-chain").click()
    await user.should_see("Chain intact")
    user.find(marker="export-csv").click()
    response = await user.download.next(timeout=10)
    assert response.content.startswith(b"seq,time_utc,actor")


async def test_users_page_adds_users_and_creates_a_token_shown_once(user: User, accounts) -> None:
    await login(user, next_="/admin/users")
    user.find(marker="new-username").type("carol")
    user.find(marker="new-password").type("carols-long-password")
    user.find(marker="add-user").click()
    await user.should_see(marker="role-carol", retries=50)  # hashing a password: slow when busy
    user.find(marker="toggle-admin-carol").click()
    await eventually(lambda: user.find(marker="role-carol").elements.pop().text == "admin")
    user.find(marker="token-user").elements.pop().value = "carol"
    user.find(marker="token-label").type("nightly script")
    user.find(marker="create-token").click()
    await user.should_see(marker="token-value")
    token = user.find(marker="token-value").elements.pop().value
    assert token.startswith("ehrb_") and accounts.token(token).username == "carol"
    user.find(marker="toggle-disabled-carol").click()
    await eventually(lambda: user.find(marker="state-carol").elements.pop().text == "disabled")
    with pytest.raises(Unauthenticated):
        accounts.token(token)


async def test_first_admin_through_the_one_time_setup_link(user: User, web_env) -> None:
    from ehr_backup.config import Settings
    await user.open("/setup?token=guess")
    await user.should_see(marker="setup-invalid")
    token_file = Settings.from_env(web_env).data_dir / "setup-token"
    assert token_file.exists() and oct(token_file.stat().st_mode & 0o777) == "0o600"
    # the link printed on the console holds the token; tests read its hash's source through a fresh link
    import hashlib
    import secrets
    token = secrets.token_urlsafe(16)
    token_file.write_text(hashlib.sha256(token.encode()).hexdigest())
    await user.open(f"/setup?token={token}")
    user.find(marker="setup-username").type("root-admin")
    user.find(marker="setup-password").type("a-long-setup-password")
    user.find(marker="setup-confirm").type("a-long-setup-password")
    user.find(marker="setup-button").click()
    await wait_for_path(user, "/eh")
    await user.should_see(marker="backup-card")
    assert not token_file.exists()
    await user.open(f"/setup?token={token}")
    await user.should_see(marker="setup-invalid")



HOSTILE_FOLDERS = ['a" :data-x="document.title=1"', "b' :title='x'", "c :class=1", "d=1 e", "<img src=x onerror=1>",
                   'f" @click="1']


async def test_folder_names_are_data_never_props(user: User, accounts, web_env) -> None:
    home = Path(web_env["HOME"])
    for name in HOSTILE_FOLDERS:
        (home / name).mkdir()
    await login(user, next_="/admin/backup")
    user.find(marker="location").elements.pop().value = "custom"
    user.find(marker="custom-path").type(str(home))
    user.find(marker="browse").click()

    def buttons() -> list:
        return [b for b in user.find(marker="browser").elements.pop().descendants()
                if str(b.props.get("data-testid", "")).startswith("dir-") or "dir-a\"" in b._markers]

    await eventually(lambda: len(buttons()) >= len(HOSTILE_FOLDERS), timeout=10)
    buttons = buttons()
    assert sorted(b.props["data-testid"] for b in buttons) == sorted(f"dir-{n}" for n in HOSTILE_FOLDERS)
    for b in buttons:  # nothing of a name became a prop of its own
        assert not [k for k in b.props if k.startswith((":", "@", "v-", "on")) or k in ("title", "class")]


async def test_storage_card_shows_use_per_location_and_the_size_chart(user: User, accounts, web_env) -> None:
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 100) g;")
    BackupServiceFor(web_env).create(ACTOR, description="for the chart")
    await login(user, next_="/admin/backup")
    await user.should_see(marker="storage-default")
    await user.should_see("1 backups", marker="storage-default")
    await user.should_see(marker="chart-sizes")

