"""User text is one visible line: control, bidirectional-control and other invisible format characters
are refused wherever text enters (descriptions, token labels, folder names, user names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehr_backup.audit import Actor
from ehr_backup.auth import AuthService
from ehr_backup.errors import InvalidInput
from ehr_backup.service import BackupService
from ehr_backup.text import clean_text

from .conftest import ACTOR

# right-to-left/left-to-right overrides, embeddings and isolates, marks, the Arabic letter mark, and
# other invisible format characters (zero-width space and joiners, BOM, soft hyphen), line separators
HIDDEN = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
          "\u200f", "\u061c", "\u200b", "\u200d", "\ufeff", "\u00ad", "\u2028", "\u2029", "\x00", "\n", "\x7f"]


@pytest.mark.parametrize("char", HIDDEN)
def test_the_shared_cleaner_refuses_control_and_invisible_format_characters(char: str) -> None:
    with pytest.raises(InvalidInput) as err:
        clean_text(f"invoice{char}fdp.exe", 100, "the description")
    assert "the description must be a single line" in str(err.value)
    assert f"U+{ord(char):04X}" in str(err.value)


def test_the_shared_cleaner_keeps_ordinary_text_in_any_script() -> None:
    for text in ("Monthly backup", "Sicherung für Ärzte", "نسخة احتياطية شهرية", "每月备份", "backup ✔ 🙂"):
        assert clean_text(f"  {text} ", 100, "x") == text
    with pytest.raises(InvalidInput):
        clean_text("x" * 101, 100, "x")


@pytest.mark.parametrize("char", ["\u202e", "\u2067", "\u200f", "\u061c", "\u200b"])
def test_descriptions_with_bidirectional_or_invisible_characters_are_refused_and_audited(
        service: BackupService, char: str) -> None:
    with pytest.raises(InvalidInput):
        service.create(ACTOR, description=f"nightly{char}exe.pdf")
    entry = service.audit.entries(action="create", limit=1)[0]
    assert entry.outcome == "refused" and "U+" in entry.detail
    assert list(Path(service.settings.default_dir).glob("backup_*")) == []


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200e", "\u200b", "\n"])
def test_token_labels_with_bidirectional_or_invisible_characters_are_refused(
        service: BackupService, char: str) -> None:
    auth = AuthService(service.db, service.audit, service.settings)
    auth.add_user(Actor("setup"), "alice", "correct-horse-battery", admin=True)
    with pytest.raises(InvalidInput):
        auth.create_token(Actor("setup"), "alice", f"nightly{char}script")
    assert list(auth.tokens()) == []
    assert auth.create_token(Actor("setup"), "alice", "nightly script").startswith("ehrb_")


@pytest.mark.parametrize("char", ["\u202e", "\u2067", "\u200b"])
def test_user_names_and_folder_names_with_bidirectional_characters_are_refused(
        service: BackupService, tmp_path: Path, char: str) -> None:
    auth = AuthService(service.db, service.audit, service.settings)
    with pytest.raises(InvalidInput):
        auth.add_user(Actor("setup"), f"admin{char}", "correct-horse-battery", admin=True)
    with pytest.raises(InvalidInput):
        service.create_folder(ACTOR, str(tmp_path), f"backups{char}")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("backups")]
