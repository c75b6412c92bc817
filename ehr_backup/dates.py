"""Days typed by people (filters): understood exactly, or refused with a sentence saying what is accepted."""

from __future__ import annotations

import re
from datetime import date

from .errors import InvalidInput

ACCEPTED = "use YYYY-MM-DD (e.g. 2026-11-29), or pick the day from the calendar"
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_SLASHED = re.compile(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})")


def parse_day(text: str | None, what: str = "date") -> date | None:
    """A calendar day from YYYY-MM-DD, or from D/M/YYYY when it can only be read one way (29/11/2026);
    None for an empty field; InvalidInput naming the text otherwise (03/04/2026 could be either)."""
    text = (text or "").strip()
    if not text:
        return None
    shown = text[:40]
    m = _ISO.fullmatch(text)
    if m:
        y, mo, d = (int(x) for x in m.groups())
    else:
        m = _SLASHED.fullmatch(text)
        if not m:
            raise InvalidInput(f"the {what} {shown!r} is not understood: {ACCEPTED}")
        a, b, y = (int(x) for x in m.groups())
        if a > 12 >= b:
            d, mo = a, b
        elif b > 12 >= a:
            mo, d = a, b
        elif a == b:
            d = mo = a
        else:
            raise InvalidInput(f"the {what} {shown!r} could be day/month or month/day: {ACCEPTED}")
    try:
        return date(y, mo, d)
    except ValueError:
        raise InvalidInput(f"the {what} {shown!r} is not a day of the calendar: {ACCEPTED}") from None
