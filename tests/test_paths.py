"""Ids and paths: traversal, encoded forms, symlink swaps and system directories are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ehr_backup.errors import InvalidInput, NotFound
from ehr_backup.service import BackupService

from .conftest import ACTOR

BAD_IDS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/etc/passwd",
           "backup_2025-08-22T15-07-19-123Z_x.sql.gz.enc\x00.txt", "x" * 10_000, "",
           "backup_2025-08-22T15-07-19-123Z_../../x.sql.gz.enc", "..\\..\\windows", "catalogue.sqlite3",
           "backup_2025-08-22T15-07-19-123Z_a/b.sql.gz.enc"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_malformed_ids_are_rejected_by_every_operation_and_nothing_is_touched(
        service: BackupService, bad: str) -> None:
    passwd = Path("/etc/passwd").stat()
    for op in (service.get, lambda i: service.verify(ACTOR, i), lambda i: service.restore(ACTOR, i),
               lambda i: service.delete(ACTOR, i), lambda i: service.open_download(ACTOR, i)):
        with pytest.raises(InvalidInput):
            op(bad)
    assert Path("/etc/passwd").stat() == passwd
    assert service.audit.entries(limit=1)[0].outcome == "refused"


def test_a_well_formed_unknown_id_is_not_found(service: BackupService) -> None:
    with pytest.raises(NotFound):
        service.verify(ACTOR, "backup_2025-08-22T15-07-19-123Z_nothing.sql.gz.enc")


@pytest.mark.parametrize("path,reason", [
    ("/", "system directory"), ("/etc", "system directory /etc"), ("/etc/ehr", "/etc"),
    ("/proc/self", "/proc"), ("/usr/local/backups", "/usr"), ("/var/lib/postgresql/15/main", "/var/lib/postgresql"),
    ("relative/dir", "absolute"), ("/tmp/../etc", "'..'"), ("/tmp/a\nb", "control"), ("/tmp/a\x00b", "control"),
    ("", "needs a path"),
])
def test_unsafe_custom_locations_are_refused_with_a_reason(service: BackupService, path: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as err:
        service.create(ACTOR, description="x", location="custom", custom_path=path)
    assert reason in str(err.value)


def test_the_apps_own_data_directory_is_refused_but_a_sibling_with_a_shared_prefix_is_not(
        service: BackupService, env: dict[str, str]) -> None:
    data = env["EHR_BACKUP_DATA_DIR"]
    for inside in (data, data + "/sub"):
        with pytest.raises(InvalidInput) as err:
            service.create(ACTOR, description="x", location="custom", custom_path=inside)
        assert "overlaps" in str(err.value)
    record = service.create(ACTOR, description="sibling", location="custom", custom_path=data + "-backups")
    assert record.directory == data + "-backups"


def test_the_servers_own_data_directory_is_refused(cluster, env: dict[str, str]) -> None:
    from ehr_backup.config import Settings
    svc = BackupService(Settings.from_env({**env, "DATABASE_URL": cluster.url()}))
    with pytest.raises(InvalidInput) as err:
        svc.create(ACTOR, description="x", location="custom", custom_path=str(cluster.pgdata / "backups"))
    assert "overlaps" in str(err.value)


def test_a_custom_path_through_a_symlink_is_refused(service: BackupService, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(InvalidInput) as err:
        service.create(ACTOR, description="x", location="custom", custom_path=str(tmp_path / "link" / "sub"))
    assert "symbolic link" in str(err.value)
    os.symlink("/etc", tmp_path / "etc-link")
    with pytest.raises(InvalidInput):
        service.create(ACTOR, description="x", location="custom", custom_path=str(tmp_path / "etc-link"))


def test_a_backup_file_swapped_for_a_symlink_is_refused_and_its_target_untouched(
        service: BackupService, tmp_path: Path) -> None:
    record = service.create(ACTOR, description="swap me")
    path = Path(record.directory) / record.id
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    path.unlink()
    os.symlink(victim, path)
    for op in (lambda: service.verify(ACTOR, record.id), lambda: service.restore(ACTOR, record.id),
               lambda: service.open_download(ACTOR, record.id)):
        with pytest.raises(InvalidInput) as err:
            op()
        assert "link" in str(err.value)
    service.delete(ACTOR, record.id)  # removes the link itself
    assert victim.read_text() == "do not touch" and not path.is_symlink()


def test_a_backup_directory_swapped_for_a_symlink_is_refused(service: BackupService, tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    record = service.create(ACTOR, description="dir swap", location="custom", custom_path=str(custom))
    elsewhere = tmp_path / "elsewhere"
    custom.rename(elsewhere)
    os.symlink(elsewhere, custom)
    with pytest.raises(InvalidInput):
        service.verify(ACTOR, record.id)
    with pytest.raises(InvalidInput):
        service.delete(ACTOR, record.id)
    assert (elsewhere / record.id).exists()


def test_descriptions_with_control_characters_are_refused(service: BackupService) -> None:
    with pytest.raises(InvalidInput):
        service.create(ACTOR, description="line1\nline2")
    with pytest.raises(InvalidInput):
        service.create(ACTOR, description="x" * 501)
