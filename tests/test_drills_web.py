"""Drills over REST and on the backup page: the Drill button runs a drill as a job and links to its report."""

from __future__ import annotations

import asyncio
import hashlib

from nicegui.testing import User

from ehr_backup.audit import Actor
from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import ACTOR, run_sql
from .table_helpers import row_action, table_row
from .web_helpers import login

API = "/api/admin/backup"
TABLES = "CREATE TABLE patients (id int); INSERT INTO patients SELECT generate_series(1, 12);"


def _backup(web_env: dict[str, str]) -> str:
    run_sql(web_env["DATABASE_URL"], TABLES)
    svc = BackupService(Settings.from_env(web_env))
    try:
        return svc.create(ACTOR, description="drill me").id
    finally:
        svc.db.dispose()


async def test_the_drill_route_runs_a_drill_and_serves_its_reports(user: User, accounts, web_env) -> None:
    bid = _backup(web_env)
    auth = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}
    started = await user.http_client.post(f"{API}/drill", json={"backupId": bid}, headers=auth)
    assert started.status_code == 202 and started.json()["jobId"]
    job = started.json()["jobId"]
    states: list[str] = []

    async def poll() -> None:
        states.append((await user.http_client.get(f"{API}/jobs/{job}", headers=auth)).json()["status"])

    for _ in range(600):
        await poll()
        if states[-1] != "running":
            break
        await asyncio.sleep(0.1)
    assert states[-1] == "succeeded"
    done = await user.http_client.post(f"{API}/drill?wait=true", json={"backupId": bid}, headers=auth)
    body = done.json()
    assert done.status_code == 200, body
    assert body["outcome"] == "passed" and body["tables"]["public.patients"]["restored"] == 12
    listed = (await user.http_client.get(f"{API}/drills", headers=auth)).json()
    assert listed["drills"][0]["id"] == body["id"] and listed["latest"][0]["outcome"] == "passed"
    pdf = await user.http_client.get(f"{API}/drills/{body['id']}/report.pdf", headers=auth)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.headers["cache-control"] == "no-store"
    js = await user.http_client.get(f"{API}/drills/{body['id']}/report.json", headers=auth)
    assert hashlib.sha256(js.content).hexdigest() == body["report"]["jsonSha256"]
    assert (await user.http_client.get(f"{API}/drills/999/report.pdf", headers=auth)).status_code == 404
    assert (await user.http_client.get(f"{API}/drills/1/report.exe", headers=auth)).status_code == 422
    listed = (await user.http_client.get(f"{API}/list", headers=auth)).json()["backups"]
    assert listed[0]["lastDrill"]["outcome"] == "passed"


async def test_the_drill_button_runs_a_drill_and_links_to_its_report_page(user: User, accounts, web_env) -> None:
    bid = _backup(web_env)
    await login(user, next_="/admin/backup")
    await table_row(user, bid)
    row_action(user, "drill", bid)
    await user.should_see(marker="job-drill")
    await user.should_see(marker="drill-report-link", retries=600)
    link = user.find(marker="drill-report-link").elements.pop()
    assert "(passed)" in link.text
    await table_row(user, bid, lambda r: r["drillText"].startswith("drill passed, "))  # the list shows it
    await user.open(link.props["href"])
    await user.should_see(marker="drill-outcome")
    assert user.find(marker="drill-outcome").elements.pop().text == "PASSED"
    await user.should_see("public.patients")
    await user.should_see(marker="drill-download-pdf")


async def test_non_admins_get_no_drill_report_page(user: User, accounts, web_env) -> None:
    from .conftest import USER_PW
    await login(user, "bob", USER_PW)
    r = await user.http_client.get("/admin/backup/drill/1")
    assert r.status_code == 403
