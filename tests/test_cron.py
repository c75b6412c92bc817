"""Cron expressions and due runs as pure functions: no database, no clock, no sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ehr_backup import cron
from ehr_backup.errors import InvalidInput
from ehr_backup.scheduler import due
from ehr_backup.schedules import check_name, check_template, render

NY = "America/New_York"
BERLIN = "Europe/Berlin"


def at(text: str, tz: str = "UTC") -> datetime:
    """An aware time from 'YYYY-MM-DD HH:MM' in a zone."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def local(times: list[datetime]) -> list[str]:
    return [t.strftime("%Y-%m-%d %H:%M %Z") for t in times]


def test_reading_in_words_and_shortcuts() -> None:
    assert cron.describe("30 2 * * *") == "At 02:30, every day"
    assert cron.describe("0 */6 * * 1-5") == "Every 6 hours, Monday through Friday"
    assert cron.normalize("@daily") == "0 0 * * *"
    assert cron.normalize("  30   2 * *  * ") == "30 2 * * *"


@pytest.mark.parametrize(("expression", "says"), [
    ("61 * * * *", "out of range"), ("* * * *", "has five fields"), ("* * * * * *", "has five fields"),
    ("", "give a cron expression"), ("30 2 * * mon-xyz", "invalid cron expression"),
    ("30 2 * * *\x1b[2J", "printable"), ("1 " * 100, "at most"),
])
def test_invalid_expressions_get_a_clear_message(expression: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        cron.normalize(expression)


def test_next_five_runs_in_the_schedules_zone() -> None:
    runs = cron.next_runs("30 2 * * *", BERLIN, at("2026-11-30 12:00", BERLIN))
    assert local(runs) == [f"2026-12-0{d} 02:30 CET" for d in range(1, 6)]
    assert runs[0].astimezone(UTC) == datetime(2026, 12, 1, 1, 30, tzinfo=UTC)


def test_spring_forward_a_time_that_does_not_exist_runs_once_after_the_change() -> None:
    # 2026-03-08: New York clocks go from 02:00 EST to 03:00 EDT; 02:30 does not exist that day
    runs = cron.next_runs("30 2 * * *", NY, at("2026-03-06 12:00", NY), 4)
    assert local(runs) == ["2026-03-07 02:30 EST", "2026-03-08 03:00 EDT", "2026-03-09 02:30 EDT",
                           "2026-03-10 02:30 EDT"]
    assert runs[1].astimezone(UTC) - runs[0].astimezone(UTC) == timedelta(hours=23, minutes=30)  # none lost


def test_fall_back_a_repeated_time_runs_once() -> None:
    # 2026-11-01: New York clocks go back from 02:00 EDT to 01:00 EST; 01:30 happens twice
    runs = cron.next_runs("30 1 * * *", NY, at("2026-10-31 12:00", NY), 3)
    assert local(runs) == ["2026-11-01 01:30 EDT", "2026-11-02 01:30 EST", "2026-11-03 01:30 EST"]
    # a job on every hour keeps running every real hour, the repeated one included
    hourly = cron.next_runs("0 * * * *", NY, at("2026-11-01 00:30", NY), 3)
    assert [t.astimezone(UTC).hour for t in hourly] == [5, 6, 7]


def test_due_none_before_the_time_then_the_run_then_none_again() -> None:
    since = at("2026-11-30 00:00")
    assert due("30 2 * * *", "UTC", since, at("2026-11-30 02:29")) is None
    d = due("30 2 * * *", "UTC", since, at("2026-11-30 02:30"))
    assert d is not None and d.at == at("2026-11-30 02:30") and d.missed == 0 and not d.catch_up
    assert due("30 2 * * *", "UTC", d.at, at("2026-11-30 23:59")) is None


def test_a_week_of_missed_runs_is_one_catch_up_run() -> None:
    d = due("30 2 * * *", "UTC", at("2026-11-20 03:00"), at("2026-11-27 09:15"))
    assert d is not None
    assert d.at == at("2026-11-27 02:30") and d.missed == 6 and d.catch_up
    # found within a couple of minutes of its time, a run is on time
    d = due("30 2 * * *", "UTC", at("2026-11-26 03:00"), at("2026-11-27 02:31"))
    assert d is not None and not d.catch_up and d.missed == 0


def test_due_across_daylight_saving_in_the_schedules_zone() -> None:
    # the run of 2026-03-08 (02:30 does not exist in New York) is due at 03:00 EDT = 07:00 UTC
    since = at("2026-03-07 12:00", NY)
    assert due("30 2 * * *", NY, since, at("2026-03-08 06:59")) is None
    d = due("30 2 * * *", NY, since, at("2026-03-08 07:00"))
    assert d is not None and d.at == at("2026-03-08 07:00")


def test_names_and_templates() -> None:
    assert check_name("nightly-db_1.x") == "nightly-db_1.x"
    for bad in ("", "-x", "a b", "x" * 65, "../etc", "a\x1b"):
        with pytest.raises(InvalidInput, match="schedule name"):
            check_name(bad)
    when = at("2026-11-30 02:30", BERLIN)
    assert render("Nightly {date} {time} ({weekday}) {schedule}/{database} {{x}}", when, "n", "ehr") == \
        "Nightly 2026-11-30 02:30 (Monday) n/ehr {x}"
    for bad, says in (("{date.__class__}", "unknown placeholder"), ("{0}", "unknown placeholder"),
                      ("{date!r}", "unknown placeholder"), ("{date:>99999}", "unknown placeholder"),
                      ("Nightly {", "unmatched brace"), ("", "give a description")):
        with pytest.raises(InvalidInput, match=says):
            check_template(bad)


def test_an_expression_that_never_fires_is_refused() -> None:
    for never in ("0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"):
        with pytest.raises(InvalidInput, match="never fires"):
            cron.normalize(never)
    assert cron.normalize("0 0 29 2 *") == "0 0 29 2 *"  # leap days exist


def test_localtime_and_other_non_iana_names_are_refused() -> None:
    for name in ("localtime", "posixrules", "../../etc/passwd", "Europe/Nowhere"):
        with pytest.raises(InvalidInput, match="unknown time zone"):
            cron.next_runs("30 2 * * *", name, at("2026-11-30 00:00"))


def test_a_scheduler_ticking_through_the_fall_back_night_runs_a_fixed_time_once() -> None:
    # each tick asks again from the run it took, as the scheduler does with `fired_until`; hourly jobs
    # keep every real hour (23:00 to 07:00 with 01:00 twice)
    for expression, expected in (("30 1 * * *", 1), ("15 1-2 * * *", 2), ("0 * * * *", 10)):
        fired_until, runs = at("2026-10-31 22:00", NY), []
        t = at("2026-10-31 22:00", NY).astimezone(UTC)
        while t < at("2026-11-01 08:00", NY).astimezone(UTC):
            d = due(expression, NY, fired_until, t)
            if d is not None:
                runs.append(d.at)
                fired_until = d.at
            t += timedelta(minutes=5)
        assert len(runs) == expected, (expression, local([r.astimezone(ZoneInfo(NY)) for r in runs]))
