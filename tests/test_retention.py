"""The rotation rules as a pure function: no database, no clock, no files."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ehr_backup.errors import InvalidInput
from ehr_backup.retention import Candidate, Plan, RetentionPolicy, plan

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def backup(bid: str, when: datetime, **facts) -> Candidate:
    return Candidate(id=bid, database=facts.pop("database", "ehr"), place=facts.pop("place", "/backups"),
                     created_at=when, status=facts.pop("status", "completed"), **facts)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def run(backups, policy=None, *, tz=UTC_ZONE, now=NOW, safety_keep_days=30, **options) -> Plan:
    return plan(backups, policy or RetentionPolicy(), now, tz=tz, safety_keep_days=safety_keep_days, **options)


def kept(result: Plan) -> dict[str, list[str]]:
    return {d.backup.id: list(d.reasons) for d in result.keep}


def gone(result: Plan) -> dict[str, str]:
    return {d.backup.id: d.reasons[0] for d in result.forget}


def three_years_with_gaps() -> list[Candidate]:
    """A backup at 02:30 UTC every day of 2023-2025, except: 2024-12-20..31, the whole of October 2025,
    ISO week 47 of 2025 and 2025-12-27..29; and a second backup at 14:00 on 2025-12-30."""
    gaps = {date(2024, 12, d) for d in range(20, 32)} | {date(2025, 10, d) for d in range(1, 32)} \
        | {date(2025, 11, d) for d in range(17, 24)} | {date(2025, 12, d) for d in (27, 28, 29)}
    out = []
    day = date(2023, 1, 1)
    while day <= date(2025, 12, 31):
        if day not in gaps:
            out.append(backup(f"b{day}", datetime(day.year, day.month, day.day, 2, 30, tzinfo=UTC)))
        day += timedelta(days=1)
    out.append(backup("b2025-12-30-pm", at("2025-12-30T14:00")))
    return out


def test_three_years_of_daily_backups_with_gaps_keep_exactly_the_7_4_12_5_set() -> None:
    result = run(three_years_with_gaps(), RetentionPolicy(daily=7, weekly=4, monthly=12, yearly=5))
    assert kept(result) == {
        # newest of each of the last 7 days that have a backup (12-27..29 have none; the 14:00 one wins 12-30)
        "b2025-12-31": ["daily", "weekly", "monthly", "yearly", "newest-good"],
        "b2025-12-30-pm": ["daily"],
        "b2025-12-26": ["daily", "weekly"],  # ISO week 52 (12-31 is in week 1 of 2026)
        "b2025-12-25": ["daily"], "b2025-12-24": ["daily"], "b2025-12-23": ["daily"], "b2025-12-22": ["daily"],
        "b2025-12-21": ["weekly"], "b2025-12-14": ["weekly"],
        # newest of each of the last 12 months that have a backup: October 2025 has none
        "b2025-11-30": ["monthly"], "b2025-09-30": ["monthly"], "b2025-08-31": ["monthly"],
        "b2025-07-31": ["monthly"], "b2025-06-30": ["monthly"], "b2025-05-31": ["monthly"],
        "b2025-04-30": ["monthly"], "b2025-03-31": ["monthly"], "b2025-02-28": ["monthly"],
        "b2025-01-31": ["monthly"],
        "b2024-12-19": ["monthly", "yearly"],  # the last of 2024: 12-20..31 are missing
        "b2023-12-31": ["yearly"],
        "b2023-01-01": ["yearly"],  # restic: counts left at the oldest backup keep it (longest history)
    }
    assert len(result.forget) == len(three_years_with_gaps()) - 22
    assert set(gone(result).values()) == {"not kept by the policy (7 daily, 4 weekly, 12 monthly, 5 yearly)"}
    assert result.holds == {}


def test_keep_within_keeps_every_backup_within_n_days_of_the_newest_exclusive_at_the_edge() -> None:
    result = run(three_years_with_gaps(), RetentionPolicy(daily=0, weekly=0, monthly=0, yearly=0,
                                                          keep_within_days=10))
    # the newest is 2025-12-31 02:30; 2025-12-21 02:30 is exactly ten days before it, so not within
    assert sorted(kept(result)) == ["b2025-12-22", "b2025-12-23", "b2025-12-24", "b2025-12-25", "b2025-12-26",
                                    "b2025-12-30", "b2025-12-30-pm", "b2025-12-31"]
    assert kept(result)["b2025-12-30"] == ["within"]
    assert gone(result)["b2025-12-21"] == "not kept by the policy (all within 10 days)"


def test_days_are_counted_in_the_policys_time_zone() -> None:
    history = [backup("late", at("2025-06-11T00:30")), backup("evening", at("2025-06-10T23:30")),
               backup("night", at("2025-06-10T22:30")), backup("day-before", at("2025-06-09T12:00"))]
    policy = RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0)
    # UTC: 06-11 and 06-10 are the two newest days; in Berlin (UTC+2) the first three are all on 06-11
    assert sorted(kept(run(history, policy, tz=UTC_ZONE))) == ["evening", "late"]
    assert sorted(kept(run(history, policy, tz=BERLIN))) == ["day-before", "late"]


def test_iso_weeks_end_at_local_midnight_on_sunday_also_on_the_night_summer_time_ends() -> None:
    # 2025-10-26 is the Sunday Berlin goes back to UTC+1: 23:30 UTC is already Monday 00:30 there (week 44)
    history = [backup("mon-berlin", at("2025-10-26T23:30")), backup("sun", at("2025-10-26T22:30")),
               backup("week43", at("2025-10-20T10:00")), backup("week42", at("2025-10-13T10:00"))]
    policy = RetentionPolicy(daily=0, weekly=2, monthly=0, yearly=0)
    assert sorted(kept(run(history, policy, tz=UTC_ZONE))) == ["mon-berlin", "week42"]
    assert sorted(kept(run(history, policy, tz=BERLIN))) == ["mon-berlin", "sun"]


def test_keep_within_counts_calendar_days_so_the_day_summer_time_ends_has_25_hours() -> None:
    history = [backup("newest", at("2025-10-26T12:00")), backup("edge", at("2025-10-25T11:30")),
               backup("old", at("2025-10-20T12:00"))]
    policy = RetentionPolicy(daily=0, weekly=0, monthly=0, yearly=0, keep_within_days=1)
    # one calendar day before 13:00 CET on the 26th is 13:00 CEST on the 25th, i.e. 11:00 UTC
    assert sorted(kept(run(history, policy, tz=BERLIN, now=at("2025-10-27T00:00")))) == ["edge", "newest"]
    assert sorted(kept(run(history, policy, tz=UTC_ZONE, now=at("2025-10-27T00:00")))) == ["newest"]


def test_the_newest_verified_good_backup_stays_even_when_nothing_else_keeps_it() -> None:
    history = [backup("unverified", at("2025-12-31T02:30"), verify_ok=None),
               backup("corrupt", at("2025-12-30T02:30"), verify_ok=False),
               backup("old-safety", at("2025-10-01T02:30"), kind="safety"),
               backup("older-safety", at("2025-09-01T02:30"), kind="safety")]
    result = run(history, safety_keep_days=30)
    # the only backup proven good is a safety backup past its age limit: it stays all the same
    assert kept(result) == {"unverified": ["unverified"], "corrupt": ["verify-failed"],
                            "old-safety": ["newest-good"]}
    assert gone(result) == {"older-safety": "safety backup older than 30 days"}


def test_unverified_and_corrupt_backups_never_take_a_good_ones_place() -> None:
    history = [backup("new-unverified", at("2025-12-31T02:30"), verify_ok=None),
               backup("new-corrupt", at("2025-12-30T02:30"), verify_ok=False),
               backup("good-29", at("2025-12-29T02:30")), backup("good-28", at("2025-12-28T02:30")),
               backup("good-27", at("2025-12-27T02:30"))]
    result = run(history, RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0))
    assert kept(result) == {"new-unverified": ["unverified"], "new-corrupt": ["verify-failed"],
                            "good-29": ["daily", "newest-good"], "good-28": ["daily"]}
    assert list(gone(result)) == ["good-27"]


def test_pinned_backups_stay_whatever_the_policy_says() -> None:
    history = [backup(f"d{n}", at(f"2025-12-{n:02d}T02:30"), pinned=n == 3) for n in range(1, 11)]
    result = run(history, RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0))
    assert kept(result) == {"d10": ["daily", "newest-good"], "d9": ["daily"], "d3": ["pinned"]}
    assert "d2" in gone(result) and "d1" in gone(result)


def test_a_week_of_failures_deletes_nothing_not_even_the_failed_records() -> None:
    good = [backup(f"good-{n}", at(f"2025-12-{n:02d}T02:30")) for n in range(1, 21)]
    failed = [backup(f"failed-{n}", at(f"2025-12-{n:02d}T02:30"), status="failed", exists=False)
              for n in range(21, 28)]
    result = run(good + failed, RetentionPolicy(daily=3, weekly=0, monthly=0, yearly=0), now=at("2025-12-28T00:00"))
    assert result.forget == []
    assert result.holds == {"ehr": "the latest backup of ehr (failed-27) failed"}
    assert kept(result)["good-20"] == ["daily", "newest-good"]
    assert kept(result)["good-1"] == ["hold"] and kept(result)["failed-21"] == ["hold"]


def test_after_the_failures_end_the_good_copies_from_before_them_keep_their_daily_places() -> None:
    good = [backup(f"good-{n}", at(f"2025-12-{n:02d}T02:30")) for n in range(1, 21)]
    failed = [backup(f"failed-{n}", at(f"2025-12-{n:02d}T02:30"), status="failed", exists=False)
              for n in range(21, 28)]
    result = run([*good, *failed, backup("good-28", at("2025-12-28T02:30"))],
                 RetentionPolicy(daily=3, weekly=0, monthly=0, yearly=0), now=at("2025-12-29T00:00"))
    assert sorted(kept(result)) == ["good-19", "good-20", "good-28"]  # failed days hold no place
    assert gone(result)["failed-21"] == "record of a failed backup (no file was kept)"
    assert result.holds == {}


@pytest.mark.parametrize(("latest", "why"), [
    ({"verify_ok": False}, "failed verification"),
    ({"exists": False}, "is missing from its location"),
])
def test_nothing_goes_while_the_latest_backup_failed_verification_or_is_missing(latest, why) -> None:
    history = [backup("latest", at("2025-12-31T02:30"), **latest)] + \
        [backup(f"d{n}", at(f"2025-12-{n:02d}T02:30")) for n in range(1, 31)]
    result = run(history, RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0))
    assert result.forget == [] and why in result.holds["ehr"]


def test_a_hold_covers_every_location_of_that_database_and_no_other_database() -> None:
    history = [backup("ehr-nas-failed", at("2025-12-31T02:30"), place="/nas", status="failed", exists=False),
               *[backup(f"ehr-local-{n}", at(f"2025-12-{n:02d}T02:30")) for n in range(1, 5)],
               *[backup(f"lab-{n}", at(f"2025-12-{n:02d}T02:30"), database="lab") for n in range(1, 5)]]
    result = run(history, RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0))
    assert sorted(gone(result)) == ["lab-1", "lab-2", "lab-3"]
    assert set(result.holds) == {"ehr"}


def test_a_running_or_cancelled_backup_does_not_decide_the_hold_and_is_not_deleted_while_running() -> None:
    history = [backup("running", at("2025-12-31T02:30"), status="running", exists=False, verify_ok=None),
               backup("cancelled", at("2025-12-30T02:30"), status="cancelled", exists=False, verify_ok=None),
               backup("d29", at("2025-12-29T02:30")), backup("d28", at("2025-12-28T02:30"))]
    result = run(history, RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0))
    assert kept(result) == {"running": ["running"], "d29": ["daily", "newest-good"]}
    assert gone(result) == {"cancelled": "record of a cancelled backup (no file was kept)",
                            "d28": "not kept by the policy (1 daily)"}


def test_files_the_catalogue_did_not_make_stay_unless_asked() -> None:
    history = [backup("ours", at("2025-12-31T02:30")),
               backup("found-verified", at("2025-12-20T02:30"), ours=False),
               backup("found-unverified", at("2025-12-19T02:30"), ours=False, status="discovered", verify_ok=None),
               backup("ours-old", at("2025-12-01T02:30"))]
    policy = RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0)
    default = run(history, policy)
    assert kept(default)["found-verified"] == ["not-ours"] and kept(default)["found-unverified"] == ["not-ours"]
    assert list(gone(default)) == ["ours-old"]
    asked = run(history, policy, include_discovered=True)
    assert sorted(gone(asked)) == ["found-verified", "ours-old"]
    assert kept(asked)["found-unverified"] == ["unverified"]  # never a file that is not proven a backup


def test_safety_backups_have_their_own_age_limit_and_take_no_daily_place() -> None:
    history = [backup("safety-new", at("2025-12-31T10:00"), kind="safety"),
               backup("regular", at("2025-12-31T02:30")),
               backup("safety-20d", at("2025-12-12T02:30"), kind="safety"),
               backup("safety-40d", at("2025-11-22T02:30"), kind="safety"),
               backup("safety-40d-pinned", at("2025-11-22T01:30"), kind="safety", pinned=True)]
    result = run(history, RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0), safety_keep_days=30)
    assert kept(result) == {"safety-new": ["newest-good", "safety-age"], "regular": ["daily"],
                            "safety-20d": ["safety-age"], "safety-40d-pinned": ["pinned"]}
    assert gone(result) == {"safety-40d": "safety backup older than 30 days"}


def test_each_location_and_each_schedule_is_rotated_on_its_own() -> None:
    history = [backup(f"{where}-{n}", at(f"2025-12-{n:02d}T02:30"), place=f"/{where}") for where in ("a", "b")
               for n in range(1, 4)]
    history += [backup(f"nightly-{n}", at(f"2025-12-{n:02d}T03:30"), place="/a", schedule="nightly", kind="scheduled")
                for n in range(1, 4)]
    result = run(history, RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0),
                 schedule_policies={"nightly": RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0)})
    assert sorted(kept(result)) == ["a-3", "b-3", "nightly-2", "nightly-3"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"daily": -1}, "keep-daily must be a whole number"),
    ({"weekly": 10_001}, "keep-weekly must be a whole number"),
    ({"monthly": True}, "keep-monthly must be a whole number"),
    ({"yearly": "5"}, "keep-yearly must be a whole number"),
    ({"keep_within_days": 0}, "keep-within-days must be"),
    ({"daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}, "keeps nothing"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"timezone": "../../etc/passwd"}, "unknown time zone"),
])
def test_a_policy_that_makes_no_sense_is_refused_with_a_clear_message(fields, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        RetentionPolicy(**fields)


def test_the_defaults_are_7_daily_4_weekly_12_monthly_5_yearly() -> None:
    policy = RetentionPolicy()
    assert (policy.daily, policy.weekly, policy.monthly, policy.yearly) == (7, 4, 12, 5)
    assert policy.describe() == "7 daily, 4 weekly, 12 monthly, 5 yearly"


@pytest.mark.parametrize("policy", [RetentionPolicy(), RetentionPolicy(daily=3, weekly=2, monthly=0, yearly=9),
                                    RetentionPolicy(daily=0, weekly=0, monthly=0, yearly=0, keep_within_days=40),
                                    RetentionPolicy(daily=1, weekly=0, monthly=30, yearly=0, timezone="Asia/Tokyo")])
def test_planning_again_after_the_deletions_changes_nothing(policy) -> None:
    history = three_years_with_gaps()
    history[5] = backup(history[5].id, history[5].created_at, pinned=True)
    history[9] = backup(history[9].id, history[9].created_at, verify_ok=None)
    first = run(history, policy, tz=ZoneInfo(policy.timezone or "UTC"))
    gone_ids = {d.backup.id for d in first.forget}
    again = run([b for b in history if b.id not in gone_ids], policy, tz=ZoneInfo(policy.timezone or "UTC"))
    assert again.forget == [] and kept(again) == kept(first)


def test_a_policy_survives_its_json_form_and_unknown_fields_are_refused() -> None:
    policy = RetentionPolicy(daily=3, weekly=2, monthly=1, yearly=0, keep_within_days=9, timezone="Europe/Berlin")
    assert RetentionPolicy.from_dict(policy.as_dict()) == policy
    assert RetentionPolicy.from_dict({"daily": 2}) == RetentionPolicy(daily=2)
    with pytest.raises(InvalidInput, match="unknown policy field 'hourly'"):
        RetentionPolicy.from_dict({"hourly": 24})
