"""The catalogue rebuild as a job: progress in files and bytes, Cancel between reads and between rows, one at a
time, every folder the app recorded read, and a file that came back no longer shown as missing."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ehr_backup.cli_catalogue import progress_line
from ehr_backup.errors import Busy, Cancelled
from ehr_backup.jobs import JobManager
from ehr_backup.models import StorageSample
from ehr_backup.rebuild import MISSING_NOTE
from ehr_backup.rebuild_job import STOPPED
from ehr_backup.service import BackupService
from pages.jobpanel import describe

from .conftest import ACTOR
from .test_rebuild_files import make


def _ids(n: int) -> list[str]:
    return [f"backup_2026-11-29T0{i}-00-00-000Z_job{i}.sql.gz.enc" for i in range(n)]


def _files(service: BackupService, n: int, size: int, folder: Path | None = None) -> list[str]:
    """n backup files of the installation's key written by the real writer (no catalogue row: as after a loss)."""
    folder = folder or service.settings.default_dir
    folder.mkdir(parents=True, exist_ok=True)
    names = _ids(n)
    for name in names:
        make(folder, name, service.keyring().encryption_key(), size=size)
    return names


def _outcomes(service: BackupService) -> list[tuple[str, str]]:
    return [(e.target, e.outcome) for e in service.audit.entries(action="catalogue.rebuild")]


class CancelWhen(threading.Event):
    """A cancel flag that becomes set once a condition on the real catalogue holds (to cancel at a known row)."""

    def __init__(self, condition: Callable[[], bool]) -> None:
        super().__init__()
        self.condition = condition

    def is_set(self) -> bool:
        return super().is_set() or self.condition()


def test_progress_counts_files_and_bytes_and_a_job_ends_with_its_result(service: BackupService) -> None:
    names = _files(service, 3, 2 << 20)
    total = sum((service.settings.default_dir / n).stat().st_size for n in names)
    job = JobManager().start(service.prepare_rebuild(ACTOR, dry_run=True), "tester")
    assert job.done.wait(60) and job.status == "succeeded", job.error
    p = job.as_dict()["progress"]
    assert (p["files"], p["filesTotal"], p["bytesRead"], p["total"]) == (3, 3, total, total)
    assert sorted(a["id"] for a in job.as_dict()["result"]["added"]) == names  # GET /jobs/{id} carries it
    assert service.catalogue.ids() == set()  # a preview writes nothing


def test_a_rebuild_cancelled_while_reading_changes_nothing(service: BackupService) -> None:
    _files(service, 6, 16 << 20)
    job = JobManager().start(service.prepare_rebuild(ACTOR), "tester")  # a real run, not a preview
    deadline = time.monotonic() + 30
    while job.task.progress.bytes_read == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    snapshot = job.task.progress.as_dict()
    job.cancel()
    assert job.done.wait(30)
    assert job.status == "cancelled" and job.error == STOPPED, (job.status, job.error)
    assert snapshot["phase"] == "reading" and snapshot["filesTotal"] == 6 and snapshot["files"] < 6
    assert service.catalogue.ids() == set()  # nothing applied
    assert ("all locations", "cancelled") in _outcomes(service)
    again = service.prepare_rebuild(ACTOR, dry_run=True)  # the lock went with the cancelled job
    again.run()


def test_a_rebuild_cancelled_while_applying_stops_between_rows_and_the_next_one_finishes(
        service: BackupService) -> None:
    names = _files(service, 3, 4096)
    task = service.prepare_rebuild(ACTOR)
    task.cancel = CancelWhen(lambda: len(service.catalogue.ids()) >= 2)
    with pytest.raises(Cancelled) as stopped:
        task.run()
    assert "2 of 3 changes were made" in stopped.value.message
    made = [service.catalogue.get(i) for i in sorted(service.catalogue.ids())]
    assert len(made) == 2 and all(r is not None and r.status == "completed" and r.sha256 for r in made)
    added = [t for t, o in _outcomes(service) if o == "ok" and t in names]
    assert sorted(added) == sorted(r.id for r in made if r)  # each row made is audited
    assert ("all locations", "cancelled") in _outcomes(service)
    rest = service.rebuild_catalogue(ACTOR)
    assert len(rest["added"]) == 1 and rest["unchanged"] == 2 and service.catalogue.ids() == set(names)


def test_a_second_rebuild_while_one_runs_is_refused_as_busy(service: BackupService) -> None:
    first = service.prepare_rebuild(ACTOR, dry_run=True)
    try:
        with pytest.raises(Busy) as busy:
            service.prepare_rebuild(ACTOR)
        assert busy.value.message.startswith("the catalogue is busy: a catalogue rebuild by tester")
        assert "try again when it has finished" in busy.value.message
    finally:
        first.run()
    assert ("all locations", "refused") in _outcomes(service)
    service.prepare_rebuild(ACTOR, dry_run=True).run()  # free again once the first ended


def test_a_file_that_came_back_is_not_shown_as_missing(service: BackupService, tmp_path: Path) -> None:
    [name] = _files(service, 1, 4096)
    service.rebuild_catalogue(ACTOR)
    path = service.settings.default_dir / name
    aside = tmp_path / "aside"
    shutil.move(path, aside)  # an unmounted disk, say
    assert service.rebuild_catalogue(ACTOR)["missing"] == [name]
    gone = service.view(service.get(name))
    assert gone["status"] == "missing" and gone["error"] == MISSING_NOTE
    shutil.move(aside, path)  # back, with no rebuild since
    back = service.view(service.get(name))
    assert back["status"] == "completed" and back["error"] is None and back["exists"] is True
    page = service.list_page(limit=10)["backups"]
    assert [(b["id"], b["status"], b["error"]) for b in page] == [(name, "completed", None)]


def test_the_rebuild_reads_every_custom_folder_the_app_has_recorded(service: BackupService,
                                                                    tmp_path: Path) -> None:
    created = Path(service.create_folder(ACTOR, str(tmp_path), "made-in-the-browser"))  # audited folder.create
    sampled = tmp_path / "sampled-once"
    with service.db.writing() as s:  # a custom folder the storage history saw (its rows were rotated away)
        s.add(StorageSample(location=f"custom:{sampled}", path=str(sampled), ts=datetime.now(UTC), backups=1))
    sampled.mkdir(mode=0o700)
    first = _files(service, 1, 4096, created)
    second = [n.replace("job0", "other") for n in _ids(1)]
    make(sampled, second[0], service.keyring().encryption_key(), size=4096)
    out = service.rebuild_catalogue(ACTOR)  # no --path: the app still knows both folders
    assert sorted(a["id"] for a in out["added"]) == sorted(first + second)
    assert {str(created), str(sampled)} <= {s["directory"] for s in out["sources"]}
    assert service.get(first[0]).directory == str(created) and service.get(first[0]).location == "custom"


def test_progress_lines_name_files_and_bytes_of_the_total() -> None:
    p = {"phase": "reading", "table": "", "files": 2, "filesTotal": 5, "bytesRead": 50_000_000,
         "bytesWritten": 0, "total": 200_000_000, "elapsed": 7.2}
    assert progress_line(p) == "reading       file 2 of 5  read 50.0 of 200.0 MB (25%)  7s"
    assert describe("running", p)[1] == "file 2 of 5 · read 47.7 MB of 190.7 MB · 7 s elapsed"
    listing = {**p, "phase": "listing files", "files": 0, "filesTotal": None, "bytesRead": 0, "total": None}
    assert progress_line(listing) == "listing files  7s"


def test_the_command_shows_progress_on_a_terminal_and_ctrl_c_cancels_changing_nothing(
        service: BackupService, env: dict[str, str]) -> None:
    import os
    import pty
    import select
    import signal
    import subprocess
    import sys

    from .test_cli import cli_env

    _files(service, 8, 128 << 20)  # 1 GiB: most of a second of reading on an idle machine, from the page cache
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ehr_backup.cli", "catalogue", "rebuild"], env=cli_env(env),
                            stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b" of 8  read " not in seen and time.monotonic() < deadline and proc.poll() is None:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    seen += os.read(leader, 4096)
                except OSError:  # EIO: the terminal's other end closed
                    break
        assert b"reading       file " in seen and b" MB (" in seen, seen  # the progress line on the terminal
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        while select.select([leader], [], [], 0.2)[0]:
            try:
                seen += os.read(leader, 4096)
            except OSError:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    assert proc.returncode == 1, seen
    assert b"ehr-backup: error: " + STOPPED.encode() in seen
    assert service.catalogue.ids() == set()
    assert ("all locations", "cancelled") in _outcomes(service)


def test_a_rebuild_that_never_ended_is_recorded_as_interrupted_at_start_up(service: BackupService) -> None:
    task = service.prepare_rebuild(ACTOR, dry_run=True)
    assert service.reconcile() is not None and ("all locations", "interrupted") not in _outcomes(service)  # alive
    for lock in task._locks:  # the process died: its locks went with it, no outcome was written
        lock.release()
    service.reconcile()
    assert _outcomes(service)[0] == ("all locations", "interrupted")
