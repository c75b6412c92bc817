"""Every list of the backup page has an error state; the page still draws every card with PostgreSQL down."""

from __future__ import annotations

import socket

import pytest
from nicegui import ui
from nicegui.testing import User

from ehr_backup.service import BackupService
from pages.loading import read

from .web_helpers import eventually, login


async def test_a_card_that_cannot_be_read_gets_a_sentence_and_a_warning_not_an_error(
        service: BackupService, caplog: pytest.LogCaptureFixture) -> None:
    ok, why = await read("The schedules", service.schedule_list)
    assert why == "" and isinstance(ok, list)
    missing, why = await read("The drill", service.drill_get, 987654)  # a real refusal of the service
    assert missing is None and why.startswith("The drill could not be read: ") and "987654" in why
    assert [r.levelname for r in caplog.records if "could not be read" in r.getMessage()] == ["WARNING"]


@pytest.fixture
def web_env(web_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The installation, with DATABASE_URL on a port where no server listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/gone"
    monkeypatch.setenv("DATABASE_URL", url)
    return {**web_env, "DATABASE_URL": url}


def _labels(user: User) -> list[str]:
    return [label.text for label in user.find(ui.label).elements]


async def test_with_postgresql_down_every_card_of_the_backup_page_still_draws(user: User, accounts) -> None:
    await login(user, next_="/admin/backup")
    await user.should_see(marker="backup-table", retries=100)
    await eventually(lambda: "Loading…" not in _labels(user), timeout=60, state=lambda: _labels(user))
    await user.should_see("No good backup yet")  # the dashboard
    await user.should_see(marker="storage-default")
    await user.should_see(marker="no-schedules")
    table = user.find(marker="backup-table").elements.pop()
    assert table.props["loading"] is False and table.rows == []
