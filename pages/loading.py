"""Read a card's data off the event loop: the result, or the sentence a card shows when it cannot be read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from nicegui import run, ui

from ehr_backup.errors import BackupError

from .frame import tid

T = TypeVar("T")
log = logging.getLogger(__name__)


async def read(what: str, work: Callable[..., T], *args: Any) -> tuple[T | None, str]:
    """(result, "") or (None, why): a card that cannot be read says so instead of staying "Loading…"."""
    try:
        return await run.io_bound(work, *args), ""
    except BackupError as exc:
        log.warning("%s could not be read: %s", what, exc.message)  # expected while e.g. PostgreSQL is down
        return None, f"{what} could not be read: {exc.message}"
    except OSError as exc:
        log.warning("%s could not be read: %s", what, exc.strerror or exc.__class__.__name__)
        return None, f"{what} could not be read: {exc.strerror or exc.__class__.__name__}; try Refresh"


def error_line(text: str, testid: str) -> ui.label:
    """The error state of a card: one red sentence, announced to screen readers."""
    label = tid(ui.label(text).classes("text-negative text-sm ehr-wrap"), testid)
    label.props["role"] = "alert"
    return label
