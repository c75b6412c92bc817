"""Alert state as a pure function: open alerts + current conditions + now -> notices to send.

A condition that appears is sent at once; one still open is sent again only after the repeat interval;
one that clears gets a single `resolved` notice (only when someone was told it was open). An alert whose
notice could not be delivered anywhere stays unnotified and is tried again at the next evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

EVENTS = ("backup.failed", "backup.overdue", "verify.failed", "drill.failed", "storage.low", "schedule.failed",
          "audit.broken", "copy.failed")


@dataclass(frozen=True)
class Condition:
    """Something wrong now: a stable key (e.g. `backup.failed:ehr`), its event, where, what, since when."""

    key: str
    event: str
    message: str
    since: datetime
    database: str = ""
    location: str = ""


@dataclass(frozen=True)
class OpenAlert:
    """An alert raised earlier: its condition (with the first time seen) and when it was last delivered."""

    condition: Condition
    notified_at: datetime | None = None  # None: no channel has received it yet
    notices: int = 0


@dataclass(frozen=True)
class Notice:
    """One message to send: new, repeat or resolved."""

    kind: str
    condition: Condition


@dataclass(frozen=True)
class Decision:
    """What to send, which alerts stay open (merged with the current facts), which keys closed."""

    notices: list[Notice] = field(default_factory=list)
    still_open: list[OpenAlert] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)


def decide(previous: Iterable[OpenAlert], conditions: Sequence[Condition], now: datetime,
           repeat: timedelta) -> Decision:
    """The notices due now and the open alerts after this evaluation."""
    before = {a.condition.key: a for a in previous}
    current: dict[str, Condition] = {}
    for c in conditions:  # one condition per key: the first wins
        current.setdefault(c.key, c)
    out = Decision()
    for key, cond in current.items():
        old = before.get(key)
        if old is None:
            out.notices.append(Notice("new", cond))
            out.still_open.append(OpenAlert(cond))
            continue
        # keep when it began; take today's words (the error may have changed)
        merged = replace(cond, since=min(old.condition.since, cond.since))
        alert = replace(old, condition=merged)
        if alert.notified_at is None:
            out.notices.append(Notice("new", merged))
        elif now - alert.notified_at >= repeat:
            out.notices.append(Notice("repeat", merged))
        out.still_open.append(alert)
    for key, old in before.items():
        if key in current:
            continue
        out.closed.append(key)
        if old.notified_at is not None:
            out.notices.append(Notice("resolved", old.condition))
    return out
