"""Days typed into filters: understood, or refused with a sentence (never silently ignored)."""

from __future__ import annotations

from datetime import date

import pytest

from ehr_backup.dates import parse_day
from ehr_backup.errors import InvalidInput


@pytest.mark.parametrize("text, day", [("2026-11-29", date(2026, 11, 29)), ("29/11/2026", date(2026, 11, 29)),
                                       ("11/29/2026", date(2026, 11, 29)), ("29.11.2026", date(2026, 11, 29)),
                                       (" 2026-1-5 ", date(2026, 1, 5)), ("04/04/2026", date(2026, 4, 4)),
                                       ("", None), (None, None)])
def test_days_are_understood_when_they_can_only_mean_one_day(text, day) -> None:
    assert parse_day(text) == day


@pytest.mark.parametrize("text, says", [("03/04/2026", "day/month or month/day"), ("yesterday", "not understood"),
                                        ("2026-02-30", "not a day of the calendar"), ("31/31/2026", "not a day")])
def test_other_text_is_refused_saying_what_is_accepted(text, says) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_day(text, "from date")
    assert says in err.value.message and "YYYY-MM-DD" in err.value.message and "from date" in err.value.message
