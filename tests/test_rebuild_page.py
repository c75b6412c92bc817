"""The backup page's catalogue rebuild: a preview of what would be added and marked missing, then Apply."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

from nicegui.testing import User

from ehr_backup.config import Settings
from ehr_backup.locks import DatabaseLock
from ehr_backup.service import BackupService

from .conftest import ACTOR, run_sql
from .web_helpers import eventually, login


def service_lock(env: dict[str, str]) -> DatabaseLock:
    """The rebuild's lock, held as a running rebuild holds it."""
    return DatabaseLock(Path(env["EHR_BACKUP_DATA_DIR"]) / "locks", "catalogue-rebuild", noun="the catalogue").acquire(
        "a test")


def text(user: User, marker: str) -> str:
    return user.find(marker=marker).elements.pop().text


async def test_the_rebuild_preview_shows_what_changes_and_apply_records_it(user: User, accounts, web_env,
                                                                           tmp_path: Path) -> None:
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE notes AS SELECT g FROM generate_series(1, 30) g;")
    offsite = tmp_path / "offsite"
    service = BackupService(Settings.from_env(web_env))
    try:
        kept = service.create(ACTOR, description="kept")
        gone = service.create(ACTOR, description="gone")
        lost = service.create(ACTOR, description="a <b>lost</b> row", location="custom", custom_path=str(offsite))
        service.catalogue.delete(lost.id)  # its row lost: the app no longer knows the folder
        os.unlink(Path(gone.directory) / gone.id)
    finally:
        service.db.dispose()

    await login(user, next_="/admin/backup")
    user.find(marker="rebuild-open").click()
    await user.should_see(marker="rebuild-dialog")
    assert not user.find(marker="rebuild-apply").elements.pop().enabled  # preview first
    user.find(marker="rebuild-path").type(str(offsite))
    user.find(marker="rebuild-preview").click()
    await eventually(lambda: text(user, "rebuild-summary").startswith(
        "2 files read: 1 would be added, 0 completed, 1 marked missing, 0 refused"),
        state=lambda: text(user, "rebuild-summary"))
    await user.should_see(marker=f"rebuild-add-{lost.id}")
    await user.should_see(marker=f"rebuild-missing-{gone.id}")
    await user.should_see("a <b>lost</b> row")  # text, never markup
    assert accounts._audit.entries(action="catalogue.rebuild")[0].detail.startswith("preview: ")
    user.find(marker="rebuild-apply").click()
    await eventually(lambda: text(user, "rebuild-summary").startswith("2 files read: 1 were added"),
                     state=lambda: text(user, "rebuild-summary"))
    check = BackupService(Settings.from_env(web_env))
    try:
        assert check.view(check.get(lost.id))["description"] == "a <b>lost</b> row"
        assert check.view(check.get(gone.id))["status"] == "missing"
        assert check.get(kept.id).error is None
        done = [(e.actor, e.target, e.outcome) for e in check.audit.entries(action="catalogue.rebuild")]
        assert ("alice", lost.id, "ok") in done and ("alice", gone.id, "ok") in done
    finally:
        check.db.dispose()


async def test_the_rebuild_through_rest_previews_by_default_and_applies_when_asked(user: User, accounts,
                                                                                   web_env) -> None:
    from ehr_backup.audit import Actor

    run_sql(web_env["DATABASE_URL"], "CREATE TABLE notes AS SELECT g FROM generate_series(1, 30) g;")
    service = BackupService(Settings.from_env(web_env))
    try:
        made = service.create(ACTOR, description="row lost")
        service.catalogue.delete(made.id)
    finally:
        service.db.dispose()
    headers = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}
    url = "/api/admin/backup/catalogue/rebuild"
    started = await user.http_client.post(url, headers=headers)  # a job, as the other long operations
    assert started.status_code == 202 and set(started.json()) == {"jobId", "status", "dryRun"}
    assert started.json()["dryRun"] is True
    job_url = f"/api/admin/backup/jobs/{started.json()['jobId']}"

    async def finished() -> bool:
        return (await user.http_client.get(job_url, headers=headers)).json()["status"] != "running"

    for _ in range(300):
        if await finished():
            break
        await asyncio.sleep(0.1)
    job = (await user.http_client.get(job_url, headers=headers)).json()
    assert job["status"] == "succeeded" and job["kind"] == "rebuild", job
    assert job["progress"]["files"] == job["progress"]["filesTotal"] == 1
    assert job["result"]["dryRun"] is True and [a["id"] for a in job["result"]["added"]] == [made.id]
    preview = await user.http_client.post(url + "?wait=true", headers=headers)
    assert preview.status_code == 200 and [a["id"] for a in preview.json()["added"]] == [made.id]
    held = service_lock(web_env)
    try:
        busy = await user.http_client.post(url, headers=headers)
        assert busy.status_code == 409 and busy.json()["error"].startswith("the catalogue is busy: a test")
    finally:
        held.release()
    bad = await user.http_client.post(url, headers=headers, json={"location": "nowhere"})
    assert bad.status_code == 422 and "unknown location" in bad.json()["error"]
    extra = await user.http_client.post(url, headers=headers, json={"dryRun": False, "wipe": True})
    assert extra.status_code == 422 and set(extra.json()) == {"error"}
    done = await user.http_client.post(url + "?wait=true", headers=headers, json={"dryRun": False})
    assert done.status_code == 200 and [a["id"] for a in done.json()["added"]] == [made.id]
    listed = await user.http_client.get(f"/api/admin/backup/list?limit=10&search={made.id}", headers=headers)
    assert listed.json()["backups"][0]["description"] == "row lost"


class Gated:
    """A backup file whose reads wait for a gate: the rebuild is still reading when Cancel is pressed, on a
    machine of any speed (unread, 256 MiB went by before the click on an idle one)."""

    def __init__(self, fh: Any, gate: threading.Event) -> None:
        self._fh, self._gate = fh, gate

    def read(self, *args: Any) -> bytes:
        self._gate.wait(60)
        return self._fh.read(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> Gated:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()


async def test_the_rebuild_dialog_follows_the_job_cancels_it_and_refuses_a_second_rebuild(user: User, accounts,
                                                                                        web_env, monkeypatch) -> None:
    from ehr_backup import rebuild_source

    from .test_rebuild_files import make

    gate = threading.Event()
    opener = rebuild_source._opener
    monkeypatch.setattr(rebuild_source, "_opener", lambda d, n: lambda: Gated(opener(d, n)(), gate))

    service = BackupService(Settings.from_env(web_env))
    try:
        key = service.keyring().encryption_key()
        folder = service.settings.default_dir
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(8):  # 256 MiB to read: long enough to press Cancel while it reads
            make(folder, f"backup_2026-11-29T0{i}-00-00-000Z_big{i}.sql.gz.enc", key, size=32 << 20)
    finally:
        service.db.dispose()
    await login(user, next_="/admin/backup")
    user.find(marker="rebuild-open").click()
    await user.should_see(marker="rebuild-dialog")
    held = service_lock(web_env)  # another rebuild (the CLI, say) is running
    try:
        user.find(marker="rebuild-preview").click()
        await user.should_see("the catalogue is busy: a test", retries=50)
        assert text(user, "rebuild-summary") == "Preview to see what a rebuild changes."
    finally:
        held.release()
    user.find(marker="rebuild-path").type(" ")
    user.find(marker="rebuild-preview").click()
    await user.should_see(marker="job-rebuild", retries=50)
    await eventually(lambda: "file " in text(user, "job-detail") and " of 8" in text(user, "job-detail"),
                     state=lambda: text(user, "job-detail"))
    user.find(marker="cancel-job").click()
    await eventually(lambda: "Cancelling" in text(user, "job-status") or not user.find(marker="cancel-job")
                     .elements.pop().enabled, state=lambda: text(user, "job-status"))
    gate.set()  # the reads go on, and the next one sees the cancel
    await eventually(lambda: text(user, "rebuild-summary").startswith("Cancelled: cancelled while reading"),
                     state=lambda: text(user, "rebuild-summary"))
    assert not user.find(marker="rebuild-apply").elements.pop().enabled
    await eventually(lambda: "nothing was changed" in text(user, "job-status"), state=lambda: text(user, "job-status"))
    check = BackupService(Settings.from_env(web_env))
    try:
        assert all(r.status == "discovered" for r in check.catalogue.all())  # found by the list; none recorded good
        outcomes = [e.outcome for e in check.audit.entries(action="catalogue.rebuild")]
        assert "cancelled" in outcomes and "refused" in outcomes
    finally:
        check.db.dispose()
