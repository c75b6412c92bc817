"""Job progress: a finished job's duration is fixed, a restore shows its steps, and the list follows."""

from __future__ import annotations

from pathlib import Path

from nicegui.testing import User

from ehr_backup.jobs import JobManager
from ehr_backup.pipeline import Progress, step_states
from ehr_backup.restore.operation import restore_steps
from ehr_backup.service import Task
from pages.jobpanel import describe, step_state

from .conftest import run_sql
from .table_helpers import row_action, table_row
from .web_helpers import eventually, login


def test_elapsed_stops_when_the_job_finishes() -> None:
    p = Progress(started=100.0)
    assert p.as_dict(now=103.0)["elapsed"] == 3.0
    p.table = "public.patients"
    p.finish(now=103.8)
    assert p.as_dict(now=110.0)["elapsed"] == 3.8  # not 10 s: the clock stopped
    assert p.as_dict(now=500.0)["elapsed"] == 3.8
    p.finish(now=600.0)  # once only
    assert p.as_dict()["elapsed"] == 3.8 and p.as_dict()["finished"] is True
    assert p.as_dict()["table"] == ""  # "done — table X" no longer names the last table


def test_a_job_run_by_the_manager_ends_with_a_fixed_duration() -> None:
    task = Task("verify", "x", lambda progress, cancel: "ok", [])
    job = JobManager().start(task, "alice")
    assert job.done.wait(10)
    first = job.as_dict()["progress"]["elapsed"]
    later = task.progress.as_dict(now=task.progress.started + 1000)["elapsed"]
    assert job.as_dict()["progress"]["finished"] is True and later == first < 5
    assert job.as_dict()["finishedAt"].endswith("Z")


def test_entering_a_phase_forgets_the_previous_phases_counts() -> None:
    p = Progress()
    p.phase, p.table, p.bytes_read, p.bytes_written, p.total = "dumping", "public.t", 5, 6, 7
    p.enter("loading")
    d = p.as_dict()
    assert (d["phase"], d["table"], d["bytesRead"], d["bytesWritten"], d["total"]) == ("loading", "", 0, 0, None)


def test_steps_before_the_current_one_are_done_and_after_it_waiting() -> None:
    steps = restore_steps("swap", safety=False)
    assert steps[0] == "authenticating" and steps[-1] == "swapping"
    assert [s["state"] for s in step_states(steps, "starting", False)] == ["waiting"] * len(steps)
    states = [s["state"] for s in step_states(steps, "counting rows", False)]
    assert states == ["done", "done", "current", "waiting", "waiting"]
    # a step not needed (no database properties) counts as done once a later one starts
    assert [s["state"] for s in step_states(steps, "swapping", False)] == ["done"] * 4 + ["current"]
    assert [s["state"] for s in step_states(steps, "done", True)] == ["done"] * 5
    assert "safety backup" in restore_steps("recreate", safety=True)
    assert "safety backup" not in restore_steps("recreate", safety=False)


def test_the_panel_marks_where_a_failed_job_stopped_and_shows_a_fixed_duration() -> None:
    assert step_state("failed", "current") == "failed" and step_state("cancelled", "current") == "failed"
    assert step_state("succeeded", "current") == "done" and step_state("running", "current") == "current"
    p = {"phase": "done", "table": "public.x", "bytesRead": 10, "bytesWritten": 0, "total": None, "elapsed": 3.2}
    phase, detail = describe("succeeded", p)
    assert "table" not in phase and detail == "took 3 s"
    phase, detail = describe("running", {**p, "phase": "dumping"})
    assert phase == "Phase: dumping — table public.x" and detail == "read 10 B · 3 s elapsed"


async def test_a_recreate_restore_from_the_page_shows_its_steps_and_lists_the_safety_backup(
        user: User, accounts, web_env) -> None:
    db = web_env["DATABASE_URL"]
    folder = Path(web_env["EHR_BACKUP_DEFAULT_DIR"])
    run_sql(db, "CREATE TABLE notes AS SELECT g FROM generate_series(1, 50) g;")
    await login(user, next_="/admin/backup")
    user.find(marker="description").type("to restore")
    user.find(marker="create-button").click()
    await eventually(lambda: any(folder.glob("backup_*to_restore*.enc")))
    bid = next(folder.glob("backup_*to_restore*.enc")).name
    await table_row(user, bid, lambda r: r["status"] == "completed")
    before = {p.name for p in folder.iterdir()}
    row_action(user, "restore", bid)
    await user.should_see(marker="restore-mode")
    user.find(marker="restore-mode").elements.pop().value = "recreate"
    user.find(marker="restore-confirm").type(db.rsplit("/", 1)[1])
    user.find(marker="restore-start").click()
    await user.should_see(marker="restore-result", retries=300)

    labels = [user.find(marker=f"job-step-{i}").elements.pop() for i in range(5)]
    assert [x.text for x in labels][:2] == ["Authenticate the backup file", "Safety backup of the database"]
    assert all(x.props["data-state"] == "done" for x in labels)
    assert "dumping" not in user.find(marker="job-phase").elements.pop().text  # not the safety backup's phase
    assert user.find(marker="job-detail").elements.pop().text.startswith("took ")

    safety = next(p.name for p in folder.iterdir() if p.name not in before and "safety" in p.name
                  and p.name.endswith(".enc"))  # not its verification record
    row = await table_row(user, safety, timeout=20)  # listed without a manual refresh
    assert row["kind"] == "safety" and row["protects"] == f"before restoring {bid} into {db.rsplit('/', 1)[1]}"
