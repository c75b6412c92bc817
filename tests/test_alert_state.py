"""Alert state as a pure function: new, repeat after the interval, resolved once; no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ehr_backup.alerts.conditions import clean_message, expected_interval, grace, overdue
from ehr_backup.alerts.state import Condition, OpenAlert, decide

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def cond(key: str = "backup.failed:ehr", message: str = "boom", since: datetime = T0) -> Condition:
    return Condition(key, key.split(":")[0], message, since, database="ehr")


def test_a_new_condition_is_sent_once_and_stays_open() -> None:
    d = decide([], [cond()], T0, DAY)
    assert [(n.kind, n.condition.key) for n in d.notices] == [("new", "backup.failed:ehr")]
    assert [a.condition.key for a in d.still_open] == ["backup.failed:ehr"] and d.closed == []


def test_an_open_alert_that_was_delivered_is_not_repeated_before_the_interval() -> None:
    opened = OpenAlert(cond(), notified_at=T0, notices=1)
    assert decide([opened], [cond()], T0 + DAY - timedelta(seconds=1), DAY).notices == []
    again = decide([opened], [cond(message="boom again")], T0 + DAY, DAY)
    assert [(n.kind, n.condition.message) for n in again.notices] == [("repeat", "boom again")]


def test_an_alert_not_delivered_anywhere_is_tried_again_as_new() -> None:
    pending = OpenAlert(cond(), notified_at=None)
    assert [n.kind for n in decide([pending], [cond()], T0 + timedelta(minutes=5), DAY).notices] == ["new"]


def test_a_cleared_condition_is_resolved_once_and_closed() -> None:
    opened = OpenAlert(cond(), notified_at=T0, notices=1)
    d = decide([opened], [], T0 + timedelta(hours=1), DAY)
    assert [(n.kind, n.condition.key) for n in d.notices] == [("resolved", "backup.failed:ehr")]
    assert d.closed == ["backup.failed:ehr"] and d.still_open == []
    assert decide(d.still_open, [], T0 + timedelta(hours=2), DAY).notices == []


def test_a_condition_nobody_was_told_about_closes_silently() -> None:
    d = decide([OpenAlert(cond())], [], T0, DAY)
    assert d.notices == [] and d.closed == ["backup.failed:ehr"]


def test_an_open_alert_keeps_the_time_it_began() -> None:
    opened = OpenAlert(cond(since=T0), notified_at=T0)
    later = decide([opened], [cond(since=T0 + timedelta(hours=3))], T0 + timedelta(hours=3), DAY)
    assert later.still_open[0].condition.since == T0


def test_expected_interval_is_the_longest_gap_of_the_most_frequent_schedule() -> None:
    assert expected_interval([("30 2 * * *", "UTC")], T0) == DAY
    assert expected_interval([("0 3 * * 1-5", "UTC")], T0) == timedelta(days=3)  # over the weekend
    assert expected_interval([("0 0 * * 0", "UTC"), ("0 */6 * * *", "UTC")], T0) == timedelta(hours=6)
    assert expected_interval([], T0) is None
    assert grace(DAY) == timedelta(hours=6) and grace(timedelta(hours=1)) == timedelta(hours=1)


def test_overdue_after_interval_and_grace_or_the_maximum_age() -> None:
    last = T0 - timedelta(hours=30)
    assert overdue("ehr", last, None, DAY, None, T0) is None  # 24 h + 6 h grace: just in time
    late = overdue("ehr", last, None, DAY, None, T0 + timedelta(minutes=1))
    assert late is not None and late.key == "backup.overdue:ehr" and late.since == T0
    assert overdue("ehr", None, T0 - timedelta(days=2), DAY, None, T0) is not None  # never backed up since made
    assert overdue("ehr", last, None, None, timedelta(hours=48), T0) is None
    assert overdue("ehr", last, None, None, timedelta(hours=12), T0) is not None
    assert overdue("ehr", last, None, None, None, T0) is None  # no schedule, no maximum age: no expectation


def test_messages_lose_credentials_and_control_characters() -> None:
    text = clean_message("connection to postgresql://admin:s3cret@db:5432/ehr failed\npassword=hunter2 x")
    assert "s3cret" not in text and "hunter2" not in text and "\n" not in text
    assert "postgresql://***@db:5432/ehr" in text
