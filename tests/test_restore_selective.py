"""Restoring chosen tables beside the live ones, and listing what a backup holds."""

from __future__ import annotations

import pytest

from ehr_backup.errors import InvalidInput, ToolError
from ehr_backup.service import BackupService

from .conftest import ACTOR, query, run_sql
from .helpers import dump_text

SCHEMA = """
CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE notes (id serial PRIMARY KEY, patient_id int REFERENCES patients (id), body text,
                    written date DEFAULT '2026-01-01', CHECK (length(body) < 1000));
CREATE INDEX notes_patient ON notes (patient_id);
COMMENT ON TABLE notes IS 'clinical notes; public.notes is what they say';
COMMENT ON COLUMN notes.body IS 'the text';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM public.patients; RETURN NEW; END $$;
CREATE TRIGGER notes_touch AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION touch();
INSERT INTO patients (name) SELECT 'p' || g FROM generate_series(1, 20) g;
ALTER TABLE notes DISABLE TRIGGER notes_touch;
INSERT INTO notes (patient_id, body) SELECT 1 + g % 20, 'note ' || g FROM generate_series(1, 300) g;
ALTER TABLE notes ENABLE TRIGGER notes_touch;
"""


def test_one_emptied_table_comes_back_beside_the_live_one(service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, SCHEMA)
    record = service.create(ACTOR, description="before the accident")
    run_sql(db, "ALTER TABLE notes DISABLE TRIGGER notes_touch; DELETE FROM notes; INSERT INTO patients (name) "
                "VALUES ('new after the backup');")
    live = dump_text(db)
    report = service.restore(ACTOR, record.id, tables=["public.notes"], into_schema="restored_20261129").as_dict()
    assert report["rowCountsMatch"] and report["tables"] == {
        "restored_20261129.notes": {"expected": 300, "loaded": 300, "actual": 300}}
    assert query(db, "SELECT count(*) FROM public.notes") == [(0,)]  # the live table is untouched
    assert query(db, "SELECT count(*) FROM public.patients") == [(21,)]
    assert query(db, "SELECT count(*), min(body) FROM restored_20261129.notes") == [(300, "note 1")]
    # its index, its check constraint and its comments came with it; the trigger and the foreign key to a
    # table not restored did not, and the comment's text (which names public.notes) was not rewritten
    assert query(db, "SELECT indexname FROM pg_indexes WHERE schemaname = 'restored_20261129' ORDER BY 1") == [
        ("notes_patient",), ("notes_pkey",)]
    assert query(db, "SELECT obj_description('restored_20261129.notes'::regclass)") == [
        ("clinical notes; public.notes is what they say",)]
    assert query(db, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'restored_20261129.notes'::regclass") == [(0,)]
    assert query(db, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'restored_20261129.notes'::regclass "
                     "AND contype = 'f'") == [(0,)]
    assert any("FK CONSTRAINT" in x for x in report["leftOut"])
    run_sql(db, "DROP SCHEMA restored_20261129 CASCADE")
    assert dump_text(db) == live


def test_a_failed_selective_restore_changes_nothing(service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, SCHEMA)
    record = service.create(ACTOR, description="sel")
    run_sql(db, "CREATE SCHEMA taken; CREATE TABLE taken.notes (a int);")
    before = dump_text(db)
    with pytest.raises(ToolError) as err:
        service.restore(ACTOR, record.id, tables=["public.notes"], into_schema="taken")
    assert "nothing was changed" in str(err.value)
    assert dump_text(db) == before
    with pytest.raises(InvalidInput):
        service.restore(ACTOR, record.id, tables=["public.nope"], into_schema="other")
    with pytest.raises(InvalidInput) as err2:
        service.restore(ACTOR, record.id, tables=["public.notes"])  # never over the live table
    assert "--into-schema" in str(err2.value)
    assert dump_text(db) == before


def test_chosen_tables_into_another_database_keep_their_foreign_keys(service: BackupService, env: dict[str, str],
                                                                     make_db) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, SCHEMA)
    record = service.create(ACTOR, description="two tables")
    target = make_db()
    report = service.restore(ACTOR, record.id, target_url=target, schemas=["public"]).as_dict()
    assert report["rowCountsMatch"] and set(report["tables"]) == {"public.notes", "public.patients"}
    assert query(target, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == [(1,)]


def test_contents_lists_schemas_tables_and_objects_without_a_database(service: BackupService,
                                                                      env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, SCHEMA + "CREATE SCHEMA billing; CREATE TABLE billing.invoices AS SELECT 1 AS id;")
    record = service.create(ACTOR, description="contents")
    out = service.contents(ACTOR, record.id)
    tables = {(t["schema"], t["name"]): (t["rows"], t["bytes"] > 0) for t in out["tables"]}
    assert tables == {("billing", "invoices"): (1, True), ("public", "notes"): (300, True),
                      ("public", "patients"): (20, True)}
    assert "billing" in out["schemas"] and out["objectCounts"]["INDEX"] == 1 and out["objectCounts"]["TRIGGER"] == 1
    assert {"type": "TRIGGER", "name": "notes notes_touch"} in [
        {k: o[k] for k in ("type", "name")} for o in out["objects"]]
    assert out["encoding"] == "UTF8" and out["format"] == 2


PARTITIONED = """
CREATE TABLE visits (id int, d date, note text, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
CREATE TABLE visits_2025 PARTITION OF visits FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE visits_2026 PARTITION OF visits FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX visits_note ON visits (note);
INSERT INTO visits SELECT g, '2025-06-01'::date + g, 'n' || g FROM generate_series(1, 400) g;
"""


def test_a_partitioned_table_comes_back_with_its_partitions_or_is_refused(service: BackupService,
                                                                          env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, PARTITIONED)
    record = service.create(ACTOR, description="partitioned")
    before = dump_text(db)
    with pytest.raises(InvalidInput) as err:  # alone it would come back empty
        service.restore(ACTOR, record.id, tables=["public.visits"], into_schema="back")
    assert "public.visits_2025" in str(err.value) and "public.visits_2026" in str(err.value)
    assert dump_text(db) == before
    report = service.restore(ACTOR, record.id, tables=["public.visits", "public.visits_2025", "public.visits_2026"],
                             into_schema="back").as_dict()
    assert report["rowCountsMatch"]
    assert query(db, "SELECT count(*) FROM back.visits") == [(400,)]
    assert query(db, "SELECT count(*) FROM back.visits WHERE d >= '2026-01-01'") == query(
        db, "SELECT count(*) FROM back.visits_2026")
    assert query(db, "SELECT c.relname, i.inhparent::regclass::text FROM pg_inherits i JOIN pg_class c "
                     "ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = 'back' ORDER BY 1") == [
        ("visits_2025", "back.visits"), ("visits_2025_note_idx", "back.visits_note"),
        ("visits_2025_pkey", "back.visits_pkey"), ("visits_2026", "back.visits"),
        ("visits_2026_note_idx", "back.visits_note"), ("visits_2026_pkey", "back.visits_pkey")]
    # one partition alone comes back as a table of its own, and the report says so
    report = service.restore(ACTOR, record.id, tables=["public.visits_2025"], into_schema="one").as_dict()
    assert report["rowCountsMatch"] and any("restored as a table of its own" in n for n in report["notes"])
    assert query(db, "SELECT relispartition FROM pg_class WHERE oid = 'one.visits_2025'::regclass") == [(False,)]
