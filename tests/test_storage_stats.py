"""Storage monitoring: the fill forecast from a synthetic history, and the status of a real installation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from ehr_backup.storage_stats import forecast

from .conftest import run_sql
from .test_cli import cli

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
GB = 1024 ** 3


def test_a_steadily_filling_location_is_forecast_to_fill_on_the_right_day() -> None:
    # 100 GB free 20 days ago, losing 2 GB a day (with nightly noise): 60 GB now, full in 30 days
    samples = [(NOW - timedelta(days=20 - d), int((100 - 2 * d) * GB + (d % 3) * 10_000_000)) for d in range(21)]
    fc = forecast(samples, NOW)
    assert fc.bytes_per_day is not None and abs(fc.bytes_per_day / GB + 2) < 0.01
    assert fc.full_at is not None and abs((fc.full_at - (NOW + timedelta(days=30))).total_seconds()) < 86400
    assert abs((fc.days_left(NOW) or 0) - 30) < 1


def test_no_forecast_when_space_is_not_shrinking_or_history_is_too_short() -> None:
    growing = [(NOW - timedelta(days=d), (50 - d) * GB) for d in range(10)]  # free space grows
    assert forecast(growing, NOW).full_at is None
    assert forecast([(NOW, GB)], NOW).full_at is None
    assert forecast([(NOW - timedelta(hours=1), 2 * GB), (NOW, GB)], NOW).full_at is None  # one hour says nothing
    old = [(NOW - timedelta(days=60 + d), (100 - d) * GB) for d in range(10)]  # outside the window
    assert forecast(old, NOW).full_at is None


def test_status_reports_used_free_and_sizes_per_database(env: dict[str, str]) -> None:
    run_sql(env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 3000) g;")
    sizes = [json.loads(cli(env, "create", "--description", f"s{i}", "--json").stdout)["size"] for i in range(2)]
    res = cli(env, "status", "--json")
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    default = next(loc for loc in status["locations"] if loc["key"] == "default")
    assert default["backups"] == 2 and default["usedBytes"] == sum(sizes) and default["freeBytes"] > 0
    assert len(default["history"]) >= 1
    db = status["databases"][0]
    assert db["database"] == env["DATABASE_URL"].rsplit("/", 1)[1] and db["backups"] == 2
    assert [h["size"] for h in db["history"]] == sizes
    human = cli(env, "status")
    assert "2 backups" in human.stdout
