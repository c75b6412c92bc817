"""Cron expressions: validation, a reading in words, and fire times in a time zone across daylight saving.

Parsing and iteration are croniter's, the words cron-descriptor's. On top, the daylight-saving rule of
Vixie cron that people expect of a nightly job: a job at a fixed hour runs once when clocks go back (the
repeated wall-clock time fires once, not twice), and once when clocks go forward past it (croniter moves a
time that does not exist to the first one that does). Jobs on every hour keep firing every real hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from cron_descriptor import ExpressionDescriptor, Options
from croniter import CroniterBadDateError, CroniterError, croniter

from .errors import InvalidInput
from .retention import zone

MAX_LENGTH = 120
MAX_COUNTED = 1000  # missed runs counted after an outage; beyond, "1000 or more"
SHORTCUTS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
FIELDS = "minute hour day-of-month month day-of-week"


def normalize(expression: str) -> str:
    """The five-field form of an expression (shortcuts such as @daily expanded), or a clear InvalidInput."""
    if not isinstance(expression, str):
        raise InvalidInput("a cron expression is text such as `30 2 * * *`")
    text = " ".join(expression.split())
    if not text:
        raise InvalidInput(f"give a cron expression: five fields ({FIELDS}), e.g. `30 2 * * *` for 02:30 every day")
    if len(text) > MAX_LENGTH or not text.isprintable():
        raise InvalidInput(f"a cron expression is at most {MAX_LENGTH} printable characters")
    text = SHORTCUTS.get(text.lower(), text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise InvalidInput(f"a cron expression has five fields ({FIELDS}); {text[:60]!r} has {len(fields)}")
    try:
        it = croniter(text, datetime(2026, 1, 1, tzinfo=UTC))
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"invalid cron expression {text[:60]!r}: {_why(exc)}") from None
    try:
        it.get_next(datetime)
    except (CroniterBadDateError, ValueError, KeyError, TypeError):  # e.g. 0 0 31 2 * (31 February)
        raise InvalidInput(f"the cron expression {text[:60]!r} never fires (no date matches it)") from None
    return text


def _why(exc: Exception) -> str:
    message = str(exc).strip() or exc.__class__.__name__
    return message.replace("[", "").replace("]", "")[:200]


def describe(expression: str) -> str:
    """The expression in words, e.g. `At 02:30, every day`."""
    text = normalize(expression)
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = True
    try:
        return str(ExpressionDescriptor(text, options).get_description())
    except Exception:  # noqa: BLE001 - the words are a courtesy; the expression itself was validated
        return text


def fires(expression: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after `after` (aware), as aware datetimes in the time zone, oldest first."""
    text = normalize(expression)
    tz = zone(timezone)
    fixed_hour = text.split(" ")[1] != "*"
    start = after.astimezone(tz)
    it = croniter(text, start)
    # seeded with `after`: a scheduler asking again from the run it just took (01:30 summer time) must not
    # be given the repeated 01:30 of winter time as a new run
    previous_wall: datetime | None = start.replace(tzinfo=None, second=0, microsecond=0)
    while True:
        when: datetime = it.get_next(datetime)
        wall = when.replace(tzinfo=None)
        if fixed_hour and wall == previous_wall:
            continue  # clocks went back: the same wall-clock time again; a fixed-time job runs once
        previous_wall = wall
        yield when


def next_runs(expression: str, timezone: str, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` fire times after `after`."""
    out: list[datetime] = []
    for when in fires(expression, timezone, after):
        out.append(when)
        if len(out) >= count:
            break
    return out


def latest_due(expression: str, timezone: str, since: datetime, now: datetime) -> tuple[datetime | None, int]:
    """The newest fire time in (since, now], and how many fell in that span (counted up to MAX_COUNTED)."""
    count = 0
    for when in fires(expression, timezone, since):
        if when > now or count >= MAX_COUNTED:
            break
        count += 1
    if not count:
        return None, 0
    latest: datetime = croniter(normalize(expression), (now + timedelta(seconds=1)).astimezone(zone(timezone))
                                ).get_prev(datetime)
    return latest, count
