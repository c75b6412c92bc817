"""Text in the database is data: a planted COPY line never becomes a table name, and no SQL is composed
from dump text (the penetration test's injection through the restore's row-count check)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import ACTOR, ADMIN_URL, drop_databases, query, run_sql
from .helpers import dump_text

OLD_FILE = Path(__file__).parent / "data" / \
    "backup_2026-11-29T21-35-49-854Z_format_one_with_a_planted_comment.sql.gz.enc"
OLD_KEY = "hex:" + "ab" * 32

# Where a role that can only write strings into its own objects may plant text, and what it plants.
PLANTS = {
    "table comment (the pentest's payload)": "COMMENT ON TABLE app_notes IS 'harmless looking comment\n"
                                             "COPY public.app_notes; {sql} -- FROM stdin;\n\\.\nend';",
    "function body": "CREATE FUNCTION planted() RETURNS text LANGUAGE sql AS $f$ SELECT 'x\n"
                     "COPY public.app_notes; {sql} -- FROM stdin;\n\\.\n'::text $f$;",
    "enum label": "CREATE TYPE planted AS ENUM (E'\\nCOPY a; DROP TABLE app_notes; -- FROM stdin;\\n\\\\.\\n');",
    "column default": "ALTER TABLE app_notes ADD COLUMN planted text DEFAULT 'x\n"
                      "COPY public.app_notes; {sql} -- FROM stdin;\n\\.\n';",
    "fake TOC header in a comment": "COMMENT ON COLUMN app_notes.body IS '\n--\n-- TOC entry 99999 (class 0 OID 0)\n"
                                    "-- Data for Name: app_notes; Type: TABLE DATA; Schema: public; Owner: x\n--\n\n"
                                    "COPY public.app_notes; {sql} -- FROM stdin;\n7\tfake\n\\.\n';",
}


@pytest.fixture
def app_role(env: dict[str, str], make_db):
    """A role that owns the table it writes to, and may do nothing else."""
    role = f"ehr_app_{uuid.uuid4().hex[:8]}"
    run_sql(env["DATABASE_URL"], f"CREATE ROLE {role} NOSUPERUSER; CREATE TABLE app_notes (id int PRIMARY KEY, "
                                 f"body text); INSERT INTO app_notes VALUES (1, 'a'), (2, 'b');"
                                 f"ALTER TABLE app_notes OWNER TO {role}; GRANT CREATE ON SCHEMA public TO {role};")
    yield role
    drop_databases(list(make_db.made))  # the source, targets and kept copies: then the role can go
    run_sql(ADMIN_URL, f"DROP ROLE {role}")


def _superuser(url: str, role: str) -> bool:
    return bool(query(url, f"SELECT rolsuper FROM pg_roles WHERE rolname = '{role}'")[0][0])


@pytest.mark.parametrize("where", list(PLANTS))
def test_planted_copy_lines_are_never_tables_and_run_nothing(service: BackupService, env: dict[str, str],
                                                             make_db, app_role: str, where: str) -> None:
    db = env["DATABASE_URL"]
    marker = f"pwned_{uuid.uuid4().hex[:8]}"
    payload = f"ALTER ROLE {app_role} SUPERUSER; CREATE TABLE public.{marker} ();"
    run_sql(db, f"SET ROLE {app_role}; " + PLANTS[where].format(sql=payload))
    record = service.create(ACTOR, description="planted")
    assert json.loads(record.table_counts or "{}") == {"public.app_notes": 2}
    for target in (make_db(), None):  # into another database, and over the configured one
        report = service.restore(ACTOR, record.id, **({"target_url": target} if target else {}))
        assert report.ok and list(report.as_dict()["tables"]) == ["public.app_notes"]
        assert not _superuser(db, app_role)
        check = target or db
        assert query(check, f"SELECT count(*) FROM pg_class WHERE relname = '{marker}'") == [(0,)]
        assert query(check, "SELECT count(*) FROM app_notes") == [(2,)]
    assert service.verify(ACTOR, record.id)["tableRowCounts"] == {"public.app_notes": 2}


def test_an_old_format_file_with_a_planted_name_restores_without_running_it(tmp_path: Path, env: dict[str, str],
                                                                            make_db) -> None:
    # made by the version before this fix (format 1); its trailer records the planted "table"
    service = BackupService(Settings.from_env({**env, "BACKUP_ENCRYPTION_KEY": OLD_KEY}))
    Path(env["EHR_BACKUP_DEFAULT_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy(OLD_FILE, Path(env["EHR_BACKUP_DEFAULT_DIR"]) / OLD_FILE.name)
    record = service.get(OLD_FILE.name)
    assert record.status == "discovered"
    verified = service.verify(ACTOR, record.id)
    assert "public.app_notes; CREATE TABLE public.pwned_by_comment (); --" in verified["tableRowCounts"]
    target = make_db()
    report = service.restore(ACTOR, record.id, target_url=target)
    assert report.ok
    assert report.as_dict()["tables"] == {"public.app_notes": {"expected": 2, "loaded": 2, "actual": 2},
                                          "public.visits": {"expected": 500, "loaded": 500, "actual": 500}}
    assert query(target, "SELECT count(*) FROM pg_class WHERE relname = 'pwned_by_comment'") == [(0,)]
    assert "harmless looking comment" in dump_text(target)
    service.db.dispose()
