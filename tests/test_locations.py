"""Custom locations: the folder is opened once without following links; base folders, ownership and
permissions, the characters a folder name may hold, and clear refusals for every bad path."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.errors import BackupError, ConfigError, InvalidInput, NotFound, StorageError
from ehr_backup.models import Status
from ehr_backup.paths import ALLOWED_TEXT
from ehr_backup.service import BackupService
from ehr_backup.storage import TEMP_PREFIX

from .conftest import ACTOR, run_sql

LONG = "a" * 300
HOSTILE_NAMES = ['a"b', "a'b", "a:b", "a=b", "a<b", "a>b", "a`b", "a$b", "a\\b", "a;b", "evil\u202eexe.pdf",
                 "zero\u200bwidth", "rtl\u2067x", "dir\u061cx", "mark\u200fx"]


def service_with(env: dict[str, str], **extra: str) -> BackupService:
    return BackupService(Settings.from_env({**env, **extra}))


def everything_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def last_refusal(service: BackupService, action: str) -> tuple[str, str]:
    entry = service.audit.entries(action=action, limit=1)[0]
    return entry.outcome, entry.detail


# ----- finding 9: a folder swapped for a symbolic link between the check and the write ---------------

@pytest.mark.parametrize("swapped", ["the folder itself", "a parent folder"])
def test_a_folder_swapped_for_a_link_after_validation_gets_nothing_and_the_job_fails(
        service: BackupService, env: dict[str, str], tmp_path: Path, swapped: str) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 100) g;")
    custom = tmp_path / "site" / "custom"
    custom.parent.mkdir()
    task = service.prepare_create(ACTOR, description="swapped", location="custom", custom_path=str(custom))
    target = tmp_path / "attacker"  # where the link points: a folder the server could write to
    target.mkdir(mode=0o700)
    (target / "custom").mkdir(mode=0o700)
    moved = custom if swapped == "the folder itself" else custom.parent
    moved.rename(tmp_path / "moved-away")
    os.symlink(target if moved == custom.parent else target / "custom", moved)
    with pytest.raises(InvalidInput) as err:
        task.run()
    assert "symbolic link" in str(err.value) and str(moved) in str(err.value)
    assert everything_in(target / "custom") == []  # neither the backup nor a temporary file
    record = service.get(task.backup_id or "")
    assert record.status == Status.FAILED and "symbolic link" in (record.error or "")
    assert service.audit.entries(action="create", limit=1)[0].outcome == "failed"


def test_start_up_cleanup_never_deletes_through_a_folder_swapped_for_a_link(
        service: BackupService, tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    service.create(ACTOR, description="leaves a catalogued folder", location="custom", custom_path=str(custom))
    victim = tmp_path / "victim"
    victim.mkdir()
    planted = victim / f"{TEMP_PREFIX}someone-elses-file.0123"
    planted.write_text("not ours")
    custom.rename(tmp_path / "moved-away")
    os.symlink(victim, custom)
    assert service.reconcile()["removedTemporaryFiles"] == 0
    assert planted.read_text() == "not ours"


def test_a_folder_made_writable_by_others_after_validation_is_refused_at_the_write(
        service: BackupService, tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    task = service.prepare_create(ACTOR, description="opened up", location="custom", custom_path=str(custom))
    custom.chmod(0o777)
    with pytest.raises(InvalidInput) as err:
        task.run()
    assert "can be written by other users" in str(err.value)
    assert everything_in(custom) == []


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o720])
def test_folders_other_users_can_write_to_are_refused_even_when_sticky(
        service: BackupService, tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(InvalidInput) as err:
        service.create(ACTOR, description="x", location="custom", custom_path=str(shared))
    assert "can be written by other users" in str(err.value) and "chmod go-w" in str(err.value)
    assert everything_in(shared) == []
    assert last_refusal(service, "create")[0] == "refused"


def test_folders_that_belong_to_another_user_are_refused(service: BackupService, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    nobody = pwd.getpwnam("nobody")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(InvalidInput) as err:
        service.create(ACTOR, description="x", location="custom", custom_path=str(theirs))
    assert "belongs to nobody" in str(err.value)
    assert everything_in(theirs) == []


# ----- finding 12: only under the configured base folders, only the last folder is created -----------

def test_custom_locations_must_lie_under_the_configured_base_folders(env: dict[str, str], tmp_path: Path) -> None:
    allowed, also = tmp_path / "allowed", tmp_path / "also"
    allowed.mkdir()
    also.mkdir()
    svc = service_with(env, EHR_BACKUP_CUSTOM_ROOTS=f"{allowed}{os.pathsep}{also}")
    for outside in (tmp_path / "elsewhere", Path("/root/ehr"), Path("/var/www/html/backups"),
                    Path("/home/someone/.ssh/authorized_keys"), tmp_path / "allowed-sibling"):
        with pytest.raises(InvalidInput) as err:
            svc.create(ACTOR, description="x", location="custom", custom_path=str(outside))
        assert "outside the folders custom locations may use" in str(err.value)
        assert f"{allowed}, {also}" in str(err.value), "the message names the allowed base folders"
        assert not outside.exists()
    record = svc.create(ACTOR, description="inside", location="custom", custom_path=str(also / "ehr"))
    assert record.directory == str(also / "ehr")


def test_only_the_last_folder_of_a_custom_location_is_created(service: BackupService, tmp_path: Path) -> None:
    deep = tmp_path / "missing" / "parents" / "ehr"
    with pytest.raises(InvalidInput) as err:
        service.create(ACTOR, description="x", location="custom", custom_path=str(deep))
    assert "does not exist" in str(err.value) and str(tmp_path / "missing") in str(err.value)
    assert not (tmp_path / "missing").exists()
    assert last_refusal(service, "create")[0] == "refused"
    with pytest.raises(InvalidInput):
        service.create_folder(ACTOR, str(tmp_path / "missing"), "ehr")
    assert not (tmp_path / "missing").exists()
    made = tmp_path / "ehr"
    service.create(ACTOR, description="x", location="custom", custom_path=str(made))
    assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700


def test_the_base_folders_default_to_home_and_the_standard_locations(env: dict[str, str]) -> None:
    settings = Settings.from_env({k: v for k, v in env.items() if k != "EHR_BACKUP_CUSTOM_ROOTS"})
    home = Path(os.path.realpath(env["HOME"]))
    assert settings.custom_roots[0] == home
    assert Path(env["EHR_BACKUP_DEFAULT_DIR"]) in settings.custom_roots
    assert home / "Desktop" / "EHR-Backups" in settings.custom_roots
    svc = BackupService(settings)
    with pytest.raises(InvalidInput) as err:
        svc.create(ACTOR, description="x", location="custom", custom_path=str(home.parent / "beside-home"))
    assert str(home) in str(err.value)
    assert svc.create(ACTOR, description="x", location="custom", custom_path=str(home / "nas")).location == "custom"


def test_base_folders_are_absolute_paths_separated_by_commas_or_colons(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    roots = Settings.from_env({**env, "EHR_BACKUP_CUSTOM_ROOTS": "/srv/a, /srv/b:/srv/c"}).custom_roots
    assert roots == (Path("/srv/a"), Path("/srv/b"), Path("/srv/c"))
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**env, "EHR_BACKUP_CUSTOM_ROOTS": "/srv/a,relative/b"})
    assert "absolute" in str(err.value)
    monkeypatch.setenv("HOME", "/")
    home_is_root = Settings.from_env({k: v for k, v in env.items() if k != "EHR_BACKUP_CUSTOM_ROOTS"})
    assert Path("/") not in home_is_root.custom_roots


# ----- finding 14: overlong names and other OSErrors become clear, audited refusals ------------------

@pytest.mark.parametrize("name", [LONG, "é" * 200, "x" * 256])
def test_an_overlong_folder_name_in_a_custom_path_is_a_clear_audited_refusal(
        service: BackupService, tmp_path: Path, name: str) -> None:
    for path in (tmp_path / name, tmp_path / name / "below"):
        with pytest.raises(InvalidInput) as err:
            service.create(ACTOR, description="x", location="custom", custom_path=str(path))
        assert "255 bytes" in str(err.value)
        assert last_refusal(service, "create") == ("refused", err.value.message)
    with pytest.raises(InvalidInput) as err:
        service.create(ACTOR, description="x", location="custom", custom_path="/" + "/".join(["d" * 200] * 25))
    assert "4096 bytes" in str(err.value)


def test_an_overlong_folder_name_in_create_folder_and_browse_is_a_clear_refusal(
        service: BackupService, tmp_path: Path) -> None:
    for name in ("é" * 200, LONG):  # 200 characters but 400 bytes: a 500 before
        with pytest.raises(InvalidInput) as err:
            service.create_folder(ACTOR, str(tmp_path), name)
        assert "255 bytes" in str(err.value)
        assert last_refusal(service, "folder.create") == ("refused", err.value.message)
        with pytest.raises(InvalidInput) as err:
            service.create_folder(ACTOR, str(tmp_path / name), "ok")
        assert "255 bytes" in str(err.value)
        with pytest.raises(InvalidInput) as err:
            service.browse(str(tmp_path / name))
        assert "255 bytes" in str(err.value)


def test_file_system_errors_on_user_paths_are_typed_errors(service: BackupService, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    cases = [(lambda: service.browse(str(tmp_path / "a-file")), InvalidInput, "not a folder"),
             (lambda: service.browse(str(tmp_path / "nothing")), NotFound, "no such folder"),
             (lambda: service.create_folder(ACTOR, str(tmp_path / "a-file"), "x"), InvalidInput, "not a folder"),
             (lambda: service.create(ACTOR, description="x", location="custom",
                                     custom_path=str(tmp_path / "a-file")), InvalidInput, "not a folder")]
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    if os.geteuid() != 0:  # root reads anything: the permission case needs an ordinary user
        locked.chmod(0)
        cases.append((lambda: service.browse(str(locked)), StorageError, "Permission denied"))
    for call, error, text in cases:
        with pytest.raises(BackupError) as err:
            call()
        assert type(err.value) is error and text in str(err.value)


# ----- finding 2 (part): which characters a folder name may hold ----------------------------------

@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_folder_names_and_custom_paths_hold_only_the_allowed_characters(
        service: BackupService, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput) as err:
        service.create(ACTOR, description="x", location="custom", custom_path=str(tmp_path / name))
    assert ALLOWED_TEXT in str(err.value) and ALLOWED_TEXT == "letters, digits, spaces and . _ - + @ , ( )"
    assert not (tmp_path / name).exists()
    with pytest.raises(InvalidInput) as err:
        service.create_folder(ACTOR, str(tmp_path), name)
    assert ("letters, digits" in str(err.value) or "invisible formatting" in str(err.value))
    assert not (tmp_path / name).exists()
    assert last_refusal(service, "folder.create")[0] == "refused"


def test_names_in_any_script_with_the_allowed_punctuation_are_accepted(service: BackupService, tmp_path: Path) -> None:
    for name in ("Sicherungen Ärzte (2025)", "nas_1+2@site,b.-", "النسخ", "备份"):
        made = service.create_folder(ACTOR, str(tmp_path), name)
        assert Path(made) == tmp_path / name and Path(made).is_dir()
    for name in (" leading", "trailing "):  # trimmed like any typed text
        assert Path(service.create_folder(ACTOR, str(tmp_path), name)).name == name.strip()


# ----- hardening: the folder browser stays inside the base folders and lists every name -------------

def test_the_folder_browser_stays_inside_the_base_folders(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    svc = service_with(env, EHR_BACKUP_CUSTOM_ROOTS=str(root))
    for outside in ("/root", "/proc", "/", "/etc", str(tmp_path)):
        with pytest.raises(InvalidInput) as err:
            svc.browse(outside)
        assert "outside the folders custom locations may use" in str(err.value) and str(root) in str(err.value)
    top = svc.browse(None)
    assert top["path"] == str(root) and top["parent"] is None and top["dirs"] == ["sub"]
    assert top["roots"] == [str(root)]
    sub = svc.browse(str(root / "sub"))
    assert sub["parent"] == str(root) and sub["allowed"] is True
    os.symlink("/etc", root / "to-etc")
    with pytest.raises(InvalidInput):
        svc.browse(str(root / "to-etc"))  # a link inside a root leads outside: refused, not listed
    assert "to-etc" not in svc.browse(str(root))["dirs"]


def test_the_browser_lists_every_folder_but_marks_those_that_cannot_be_chosen(
        service: BackupService, tmp_path: Path) -> None:
    for name in [*HOSTILE_NAMES, "fine name"]:
        (tmp_path / "mixed" / name).mkdir(parents=True)
    listing = service.browse(str(tmp_path / "mixed"))
    assert sorted(listing["dirs"]) == sorted([*HOSTILE_NAMES, "fine name"])
    marks = {e["name"]: (e["allowed"], e["reason"]) for e in listing["entries"]}
    assert marks["fine name"] == (True, "")
    for name in HOSTILE_NAMES:
        assert marks[name][0] is False and ALLOWED_TEXT in marks[name][1]
    inside = service.browse(str(tmp_path / "mixed" / 'a"b'))  # navigable, never choosable
    assert inside["allowed"] is False and ALLOWED_TEXT in inside["reason"]
    shared = tmp_path / "mixed" / "fine name"
    shared.chmod(0o777)
    assert "written by other users" in service.browse(str(shared))["reason"]


def test_a_backup_whose_folder_is_gone_is_missing_and_can_still_be_deleted(
        service: BackupService, tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    record = service.create(ACTOR, description="folder removed", location="custom", custom_path=str(custom))
    (custom / record.id).unlink()
    (custom / (record.id + ".verified")).unlink()  # its verification record: the folder goes as a whole
    custom.rmdir()
    with pytest.raises(NotFound) as err:
        service.verify(ACTOR, record.id)
    assert "missing" in str(err.value)
    service.delete(ACTOR, record.id)
    assert service.list() == [] and not custom.exists()
