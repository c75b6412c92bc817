"""The pure parts of drills: names, the table comparison, the verdict, the report's PDF and its check."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from ehr_backup.drill_checks import CheckResult, check_sql
from ehr_backup.drill_report import ReportAltered, audit_detail, render_pdf, to_json, verify_file
from ehr_backup.drill_verdict import (
    compare_tables,
    is_scratch,
    may_drop,
    newest_verified,
    scratch_name,
    verdict,
)
from ehr_backup.errors import InvalidInput
from ehr_backup.models import BackupRecord
from ehr_backup.restore.counts import TableCount
from ehr_backup.restore.workers import Loaded
from ehr_backup.sqlscan import Ident


def loaded(name: str, n: int) -> Loaded:
    return Loaded(None, Ident(b"public", name.encode()), n, n)


def test_scratch_names_keep_the_suffix_within_63_bytes_and_are_never_the_live_name() -> None:
    name = scratch_name("é" * 40, "0a1b2c3d")
    assert len(name.encode()) <= 63 and name.endswith("__drill_0a1b2c3d") and is_scratch(name)
    assert not is_scratch("clinic")


def test_only_a_scratch_shaped_name_that_is_no_live_database_may_be_dropped() -> None:
    assert may_drop("clinic__drill_0a1b2c3d", ["clinic", None])
    assert not may_drop("clinic", ["other"]) and not may_drop("clinic__drill_", [])
    assert not may_drop("clinic__drill_0a1b2c3d_x", []) and not may_drop("a__drill_0a1b2c3d", ["a__drill_0a1b2c3d"])


def test_tables_match_only_when_recorded_dumped_and_restored_agree() -> None:
    items = [loaded("a", 5), loaded("b", 3)]
    counts = [TableCount("public.a", 5, 5, 5), TableCount("public.b", 3, 3, 3)]
    assert all(t["ok"] for t in compare_tables({"public.a": 5, "public.b": 3}, items, counts).values())
    doctored = compare_tables({"public.a": 9, "public.b": 3}, items, counts)
    assert doctored["public.a"] == {"expected": 9, "restored": 5, "ok": False}
    lost = compare_tables({"public.a": 5, "public.b": 3}, items, [TableCount("public.a", 5, 5, 4),
                                                                   TableCount("public.b", 3, 3, 3)])
    assert lost["public.a"] == {"expected": 5, "restored": 4, "ok": False}
    extra = compare_tables({"public.a": 5}, items, counts)
    assert extra["public.b"] == {"expected": None, "restored": 3, "ok": False}
    missing = compare_tables({"public.a": 5, "public.c": 1}, items[:1], counts[:1])
    assert missing["public.c"] == {"expected": 1, "restored": None, "ok": False}


def test_the_verdict_names_what_failed() -> None:
    good = {"public.a": {"expected": 1, "restored": 1, "ok": True}}
    assert verdict(good, []) == (True, "1 tables restored with exactly the rows recorded at backup time")
    bad_check = CheckResult("n", "SELECT 1", "2", "1", False, False)
    passed, message = verdict({**good, "public.b": {"expected": 2, "restored": 1, "ok": False}}, [bad_check])
    assert not passed and "public.b" in message and "1 of 1 checks failed (n)" in message
    assert verdict({}, [])[0] is False


def test_scheduled_drills_take_the_newest_verified_completed_backup_per_database() -> None:
    def rec(i: str, db: str, day: int, ok: bool | None, status: str = "completed") -> BackupRecord:
        return BackupRecord(id=i, location="default", directory="/x", status=status, database=db,
                            created_at=datetime(2026, 1, day, tzinfo=UTC), verify_ok=ok)
    chosen = newest_verified([rec("a1", "a", 1, True), rec("a2", "a", 2, True), rec("a3", "a", 3, False),
                              rec("a4", "a", 4, None), rec("b1", "b", 1, True), rec("b2", "b", 5, True, "failed")])
    assert [r.id for r in chosen] == ["a2", "b1"]


@pytest.mark.parametrize("sql", ["SELECT 1; SELECT 2", "UPDATE t SET a = 1", "selectx", "SELECT \x00"])
def test_check_sql_refuses_anything_but_one_select(sql: str) -> None:
    with pytest.raises(InvalidInput):
        check_sql(sql)
    assert check_sql("  with x as (select 1) select * from x ;") == "with x as (select 1) select * from x"


def test_the_pdf_draws_awkward_text_and_the_report_check_finds_its_hash() -> None:
    report = {"drillId": 7, "outcome": "failed", "message": "x\n\x1b[31m漢字 ü" * 50,
              "tables": {'"we""ird".' + "t" * 300: {"expected": 1, "restored": None, "ok": False}},
              "checks": [{"name": "n", "sql": "SELECT '<script>'", "expected": "1", "actual": None,
                          "compareLive": True, "passed": False, "error": "boom"}],
              "phases": {"load": 1.0, "authenticate": 0.5}, "backup": {"id": "b"}, "server": {}, "app": {}}
    pdf = render_pdf(report)
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    blob = to_json(report)
    entry = (5, "b", "drill 7: " + audit_detail(hashlib.sha256(blob).hexdigest(), hashlib.sha256(pdf).hexdigest()))
    assert verify_file(blob, [entry])["kind"] == "json"
    assert verify_file(pdf, [entry])["auditEntry"] == 5
    with pytest.raises(ReportAltered) as err:
        verify_file(blob.replace(b'"failed"', b'"passed"'), [entry])
    assert "drill 7" in err.value.message
