"""Refused requests are audited with bounded entries and exact counts; failure counters stay bounded."""

from __future__ import annotations

from pathlib import Path

from ehr_backup.audit import Actor
from ehr_backup.refusals import FailureCounter, RefusalAudit, refusals_in
from ehr_backup.service import BackupService

from .live_server import LiveServer, raw_request


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refusals(service: BackupService) -> list:
    return [e for e in reversed(service.audit.entries()) if e.outcome == "refused"]


def _total(entries: list) -> int:
    return sum(refusals_in(e.detail) for e in entries)


def test_a_flood_writes_one_entry_per_kind_and_minute_and_counts_every_refusal(service: BackupService) -> None:
    clock = Clock()
    refusals = RefusalAudit(service.audit, clock=clock)
    mallory, eve = Actor("anonymous", "203.0.113.5"), Actor("anonymous", "198.51.100.7")
    for _ in range(150):
        refusals.record(mallory, "access", "GET /api/admin/backup/list", "please sign in")
        clock.now += 0.1
    refusals.record(eve, "access", "GET /api/admin/backup/list", "please sign in")
    refusals.record(mallory, "access", "GET /api/admin/backup/list", "invalid token")
    assert len(_refusals(service)) == 3  # one per (address, reason)
    clock.now += 60
    refusals.record(mallory, "access", "POST /api/admin/backup/create", "please sign in")
    entries = _refusals(service)
    assert len(entries) == 5  # the first minute's count, then a new first entry
    summary = next(e for e in entries if "repeated" in e.detail)
    assert summary.address == "203.0.113.5" and "please sign in (repeated 149 more times" in summary.detail
    for _ in range(10):
        refusals.record(mallory, "access", "GET /x", "please sign in")
    refusals.flush()  # nothing is due yet
    assert len(_refusals(service)) == 5
    refusals.flush(everything=True)  # shutdown
    entries = _refusals(service)
    assert _total(entries) == 150 + 1 + 1 + 1 + 10
    assert service.audit.verify().ok


def test_counts_of_a_window_are_written_once_the_minute_is_over(service: BackupService) -> None:
    clock = Clock()
    refusals = RefusalAudit(service.audit, clock=clock)
    for _ in range(5):
        refusals.record(Actor("bob", "192.0.2.1"), "access", "GET /admin/users", "administrators only")
    clock.now += 61
    refusals.flush()
    entries = _refusals(service)
    assert [refusals_in(e.detail) for e in entries] == [1, 4]
    assert entries[1].actor == "bob" and entries[1].target == "GET /admin/users"


def test_many_addresses_at_once_share_one_window(service: BackupService) -> None:
    clock = Clock()
    refusals = RefusalAudit(service.audit, clock=clock)
    for n in range(1100):
        refusals.record(Actor("anonymous", f"2001:db8::{n:x}"), "access", "GET /api", "please sign in")
    refusals.flush(everything=True)
    entries = _refusals(service)
    assert len(entries) <= 1000 + 2
    assert _total(entries) == 1100


def test_the_failure_counter_forgets_after_its_window_and_bounds_its_keys() -> None:
    clock = Clock()
    counter = FailureCounter(window=900, limit=3, max_keys=2, clock=clock)
    for _ in range(3):
        counter.add("203.0.113.5")
    assert counter.exceeded("203.0.113.5") and not counter.exceeded("198.51.100.7")
    clock.now += 901
    assert not counter.exceeded("203.0.113.5")
    counter.add("a")
    counter.add("b")
    counter.add("c")
    assert len(counter._hits) == 2


def test_an_anonymous_flood_against_a_real_server_writes_a_bounded_audit_with_exact_counts(
        tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    try:
        for _ in range(300):
            status, _ = raw_request(server.port, "GET", "/api/admin/backup/list")
            assert status == 401
        during = [e for e in server.audit() if e.outcome == "refused"]
        assert 1 <= len(during) <= 2
    finally:
        server.stop()  # SIGTERM: the pending count is written at shutdown
    after = [e for e in server.audit() if e.outcome == "refused"]
    assert len(after) <= 3
    assert _total(after) == 300
    assert server._service.audit.verify().ok


def test_an_entry_stands_for_one_refusal_or_for_the_count_it_carries() -> None:
    assert refusals_in("please sign in (repeated 41 more times in the minute after 2026-01-01 00:00:00 UTC)") == 41
    assert refusals_in("please sign in") == 1
