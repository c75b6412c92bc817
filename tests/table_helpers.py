"""The backups table in NiceGUI user tests: its cells are Vue templates, so tests read its rows and send its events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nicegui import ui
from nicegui.testing import User


def backup_table(user: User) -> ui.table:
    """The page's backups table."""
    return next(iter(user.find(marker="backup-table").elements))  # type: ignore[return-value]


async def table_row(user: User, backup_id: str, check: Callable[[dict[str, Any]], bool] = lambda r: True,
                    timeout: float = 60) -> dict[str, Any]:
    """The table row of a backup once it is shown and `check` holds (the Refresh button is pressed meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = user.find(marker="backup-table").elements if _present(user) else set()
        for table in found:
            for row in table.rows:  # type: ignore[attr-defined]
                if row["id"] == backup_id and check(row):
                    return row
        if loop.time() > deadline:
            rows = [r for t in found for r in t.rows]  # type: ignore[attr-defined]
            raise AssertionError(f"no row {backup_id} matching the check; rows: {rows}")
        await asyncio.sleep(0.2)


async def no_row(user: User, backup_id: str, timeout: float = 30) -> None:
    """Wait until the table no longer shows a backup."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(r["id"] == backup_id for r in backup_table(user).rows):
        assert loop.time() < deadline, f"{backup_id} still listed"
        await asyncio.sleep(0.2)


def row_action(user: User, action: str, backup_id: str) -> None:
    """Press a row's action button (download, verify, drill, restore, delete, pin), as its click emits it."""
    user.find(marker="backup-table").trigger("row_action", {"action": action, "id": backup_id})


def _present(user: User) -> bool:
    try:
        user.find(marker="backup-table")
    except AssertionError:
        return False
    return True
