"""Restores are exact: a fresh database swapped in, with the database's own properties and roles; nothing made
after the backup survives; the previous database can be put back."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid

import psycopg
import pytest

from ehr_backup.errors import RowCountsDiffer
from ehr_backup.pg import ConnInfo
from ehr_backup.restore.counts import count_tables
from ehr_backup.restore.workers import Loaded
from ehr_backup.service import BackupService
from ehr_backup.sqlscan import Ident

from .conftest import ACTOR, ADMIN_URL, drop_databases, query, run_sql, url_for
from .helpers import AWKWARD_SQL, dump_text

# Database-wide objects a DROP ... CASCADE of schemas leaves behind (the old in-place restore failed on
# them, or let them survive), plus ordinary content.
EVERYTHING_SQL = AWKWARD_SQL + r"""
CREATE FUNCTION tf_from(internal) RETURNS internal LANGUAGE internal IMMUTABLE AS 'int4recv';
CREATE FUNCTION tf_to(internal) RETURNS int LANGUAGE internal IMMUTABLE AS 'int4recv';
CREATE TRANSFORM FOR int LANGUAGE sql (FROM SQL WITH FUNCTION tf_from(internal), TO SQL WITH FUNCTION tf_to(internal));
CREATE ACCESS METHOD heap_copy TYPE TABLE HANDLER heap_tableam_handler;
CREATE TABLE on_heap_copy (a int) USING heap_copy;
CREATE FUNCTION mood_rank(mood) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT 1 $$;
CREATE CAST (mood AS int) WITH FUNCTION mood_rank(mood);
ALTER DEFAULT PRIVILEGES GRANT SELECT ON SEQUENCES TO PUBLIC;
CREATE FUNCTION et_noop() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER et_noop ON ddl_command_end EXECUTE FUNCTION et_noop();
CREATE PUBLICATION pub_notes FOR TABLE patient_notes;
CREATE SUBSCRIPTION sub_elsewhere CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' PUBLICATION pub_notes
    WITH (connect = false);
CREATE TABLE with_index (id int PRIMARY KEY, ref int REFERENCES patient_notes (id), v text);
CREATE INDEX with_index_v ON with_index (v);
INSERT INTO with_index SELECT g, 1 + g % 2, md5(g::text) FROM generate_series(1, 2000) g;
COMMENT ON INDEX with_index_v IS 'an index with a comment';
"""
# Hash partitions on an enum: pg_dump writes their data through the partitioned table (the enum's
# hash differs in a new database, so rows may land in other partitions than before).
PAINT_SQL = """
CREATE TYPE color AS ENUM ('red', 'green', 'blue');
CREATE TABLE paint (id int, c color) PARTITION BY HASH (c);
CREATE TABLE paint_0 PARTITION OF paint FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE paint_1 PARTITION OF paint FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO paint SELECT g, (ARRAY['red', 'green', 'blue'])[1 + g % 3]::color FROM generate_series(1, 70) g;
"""


def full_dump(url: str) -> str:
    """pg_dump --create: the database's own properties too (owner, comment, ACL, settings, role settings)."""
    info = ConnInfo.parse(url)
    out = subprocess.run(["pg_dump", "--create", "--no-password"], env=info.child_env(), capture_output=True,
                         check=True).stdout.decode()
    return re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.MULTILINE)


@pytest.fixture
def role(make_db):
    """A throwaway role, dropped with every test database."""
    name = f"ehr_r_{uuid.uuid4().hex[:8]}"
    run_sql(ADMIN_URL, f"CREATE ROLE {name} LOGIN")
    yield name
    drop_databases(list(make_db.made))
    run_sql(ADMIN_URL, f"DROP ROLE IF EXISTS {name}")


def _set_properties(db: str, role: str) -> None:
    name = db.rsplit("/", 1)[1]
    run_sql(ADMIN_URL, f"""
        ALTER DATABASE "{name}" SET work_mem = '7MB';
        ALTER DATABASE "{name}" SET search_path = "$user", public, 'odd, name';
        ALTER ROLE {role} IN DATABASE "{name}" SET statement_timeout = '42s';
        ALTER DATABASE "{name}" CONNECTION LIMIT 33;
        COMMENT ON DATABASE "{name}" IS 'the clinic''s records';
        REVOKE CONNECT, TEMPORARY ON DATABASE "{name}" FROM PUBLIC;
        GRANT CONNECT ON DATABASE "{name}" TO {role};
        GRANT CREATE ON DATABASE "{name}" TO {role} WITH GRANT OPTION;""")


def test_restoring_over_the_same_objects_gives_an_identical_database_with_its_properties(
        service: BackupService, env: dict[str, str], role: str) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, EVERYTHING_SQL + f"ALTER TABLE with_index OWNER TO {role};")
    _set_properties(db, role)
    before = full_dump(db)
    record = service.create(ACTOR, description="everything")
    # restoring a database's own fresh backup over it (the old in-place restore failed here)
    report = service.restore(ACTOR, record.id)
    assert report.ok
    assert full_dump(db) == before
    assert report.as_dict()["tables"]["public.with_index"]["actual"] == 2000


def test_data_dumped_through_a_partitioned_table_is_counted_through_it(service: BackupService,
                                                                      env: dict[str, str], make_db) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, PAINT_SQL)
    record = service.create(ACTOR, description="paint")
    for jobs in (1, 4):
        target = make_db()
        report = service.restore(ACTOR, record.id, target_url=target, jobs=jobs)
        assert report.as_dict()["tables"] == {"public.paint": {"expected": 70, "loaded": 70, "actual": 70}}
        assert query(target, "SELECT id, c::text FROM paint ORDER BY id") == \
            query(db, "SELECT id, c::text FROM paint ORDER BY id")


def test_objects_and_default_privileges_made_after_the_backup_are_gone(
        service: BackupService, env: dict[str, str], role: str) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, EVERYTHING_SQL)
    _set_properties(db, role)
    before = full_dump(db)
    record = service.create(ACTOR, description="before the exposure")
    name = db.rsplit("/", 1)[1]
    run_sql(db, """
        ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;
        CREATE TABLE later (a int);
        CREATE ACCESS METHOD later_am TYPE TABLE HANDLER heap_tableam_handler;
        CREATE PUBLICATION later_pub;
        CREATE SCHEMA later_schema;
        SELECT lo_from_bytea(0, '\\x01');""")
    run_sql(ADMIN_URL, f"""ALTER DATABASE "{name}" SET work_mem = '99MB';
        ALTER DATABASE "{name}" SET default_transaction_read_only = on;
        GRANT TEMPORARY ON DATABASE "{name}" TO PUBLIC;
        COMMENT ON DATABASE "{name}" IS 'changed'""")
    report = service.restore(ACTOR, record.id)
    assert report.ok
    assert full_dump(db) == before
    # the default privilege made after the backup does not apply to the restored tables
    assert query(db, "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'PUBLIC' "
                     "AND table_name = 'with_index'") == [(0,)]


def test_rollback_puts_the_previous_database_back(service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, "CREATE TABLE t (a int); INSERT INTO t VALUES (1);")
    record = service.create(ACTOR, description="one row")
    run_sql(db, "INSERT INTO t VALUES (2);")
    changed = dump_text(db)
    report = service.restore(ACTOR, record.id)
    assert query(db, "SELECT count(*) FROM t") == [(1,)]
    result = service.rollback(ACTOR)
    assert result["restoredFrom"] == report.outcome.previous
    assert dump_text(db) == changed
    undone = result["undoneKeptAs"]
    assert query(url_for(undone), "SELECT count(*) FROM t") == [(1,)]
    assert [k["name"] for k in service.kept_databases()] == [undone]
    service.drop_kept(ACTOR, undone)
    assert query(ADMIN_URL, f"SELECT count(*) FROM pg_database WHERE datname = '{undone}'") == [(0,)]
    steps = [(e.action, e.outcome) for e in service.audit.entries() if e.action.startswith("restore")]
    assert ("restore.rollback", "ok") in steps and ("restore.drop-previous", "ok") in steps
    assert ("restore", "swapped") in steps


def test_a_parallel_restore_gives_the_same_database_as_a_single_connection(service: BackupService,
                                                                           env: dict[str, str], make_db) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, EVERYTHING_SQL)
    record = service.create(ACTOR, description="parallel")
    one, four = make_db(), make_db()
    assert service.restore(ACTOR, record.id, target_url=one, jobs=1).ok
    assert service.restore(ACTOR, record.id, target_url=four, jobs=4).ok
    assert dump_text(one) == dump_text(four) == dump_text(db)


def test_a_sql_ascii_database_with_names_that_are_not_utf8_round_trips(service: BackupService, env: dict[str, str],
                                                                       make_db) -> None:
    name = f"t_ascii_{uuid.uuid4().hex[:8]}"
    run_sql(ADMIN_URL, f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'")
    make_db.made.append(name)
    src = url_for(name)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(b'CREATE TABLE "caf\xe9 \xff" (v text); INSERT INTO "caf\xe9 \xff" VALUES (\'\xfe\xfd\'), (\'x\')')
    from ehr_backup.config import Settings
    svc = BackupService(Settings.from_env({**env, "DATABASE_URL": src}))
    record = svc.create(ACTOR, description="sql ascii")
    target = f"t_ascii_{uuid.uuid4().hex[:8]}"
    make_db.made.append(target)
    report = svc.restore(ACTOR, record.id, target_url=url_for(target))  # created with the backup's encoding
    assert report.ok and [t.actual for t in report.outcome.tables] == [2]
    assert query(url_for(target), "SELECT pg_encoding_to_char(encoding) FROM pg_database "
                                  "WHERE datname = current_database()") == [(b"SQL_ASCII",)]
    info = ConnInfo.parse(src)

    def raw_dump(url: str) -> bytes:
        out = subprocess.run(["pg_dump", "--no-password"], env=ConnInfo.parse(url).child_env(), capture_output=True,
                             check=True).stdout
        return re.sub(rb"(?m)^\\(un)?restrict .*$", b"", out)

    assert raw_dump(url_for(target)) == raw_dump(src) and info.dbname == name
    svc.db.dispose()


def test_roles_missing_on_a_bare_server_are_created_and_existing_ones_left_alone(
        service: BackupService, env: dict[str, str], cluster) -> None:
    db = env["DATABASE_URL"]
    owner, reader = f"ehr_own_{uuid.uuid4().hex[:6]}", f"ehr_rd_{uuid.uuid4().hex[:6]}"
    run_sql(ADMIN_URL, f"CREATE ROLE {owner} LOGIN CONNECTION LIMIT 5 PASSWORD 'a-secret-password';"
                       f"CREATE ROLE {reader}; GRANT {reader} TO {owner};"
                       f"ALTER ROLE {owner} SET work_mem = '3MB'")
    try:
        run_sql(db, f"CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2); ALTER TABLE t OWNER TO {owner};"
                    f"GRANT SELECT ON t TO {reader};")
        record = service.create(ACTOR, description="for a new server")
        bare = cluster.url("clinic")
        report = service.restore(ACTOR, record.id, target_url=bare)
        assert report.ok
        roles = report.as_dict()["roles"]
        assert owner in roles["created"] and reader in roles["created"] and "postgres" in roles["existing"]
        assert query(cluster.url(), f"SELECT r.rolcanlogin, r.rolconnlimit, a.rolpassword IS NOT NULL, r.rolconfig "
                                    f"FROM pg_roles r JOIN pg_authid a USING (oid) WHERE r.rolname = '{owner}'") \
            == [(True, 5, True, ["work_mem=3MB"])]
        assert query(cluster.url(), f"SELECT pg_has_role('{owner}', '{reader}', 'MEMBER')") == [(True,)]
        assert query(bare, "SELECT count(*), pg_get_userbyid(c.relowner) FROM t, pg_class c "
                           "WHERE c.relname = 't' GROUP BY 2") == [(2, owner)]
        assert dump_text(bare) == dump_text(db)
        # a second restore finds them: nothing is created or altered
        run_sql(cluster.url(), f"ALTER ROLE {owner} CONNECTION LIMIT 9")
        again = service.restore(ACTOR, record.id, target_url=bare).as_dict()["roles"]
        assert again["created"] == [] and owner in again["existing"]
        assert query(cluster.url(), f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{owner}'") == [(9,)]
    finally:
        drop_databases([db.rsplit("/", 1)[1]])
        run_sql(ADMIN_URL, f"DROP ROLE IF EXISTS {owner}; DROP ROLE IF EXISTS {reader}")


def test_counts_follow_the_way_data_went_in(make_db) -> None:
    db = make_db()
    run_sql(db, """
        CREATE TABLE p (id int, k int) PARTITION BY RANGE (k);
        CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);
        CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20);
        INSERT INTO p SELECT g, g % 20 FROM generate_series(1, 70) g;
        CREATE TABLE parent (a int); CREATE TABLE child () INHERITS (parent);
        INSERT INTO parent VALUES (1); INSERT INTO child VALUES (2), (3);""")
    info = ConnInfo.parse(db)
    pub = b"public"
    through_root = count_tables(info, [Loaded(1, Ident(pub, b"p"), 70, 70)], 2)
    assert [(c.name, c.dumped, c.actual) for c in through_root] == [("public.p", 70, 70)]
    per_partition = count_tables(info, [Loaded(1, Ident(pub, b"p1"), 39, 39), Loaded(2, Ident(pub, b"p2"), 31, 31)], 2)
    assert [(c.name, c.actual) for c in per_partition] == [("public.p1", 39), ("public.p2", 31)]
    inherited = count_tables(info, [Loaded(1, Ident(pub, b"parent"), 1, 1), Loaded(2, Ident(pub, b"child"), 2, 2)], 1)
    assert [(c.name, c.actual) for c in inherited] == [("public.child", 2), ("public.parent", 1)]
    assert all(c.ok for c in through_root + per_partition + inherited)


def test_a_restore_whose_counts_differ_is_a_failure_and_leaves_the_database(service: BackupService,
                                                                          env: dict[str, str], make_db) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, """CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 10);
        -- an index that takes a while to build, after t is loaded (load first, then indexes)
        CREATE FUNCTION slowly(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN PERFORM pg_sleep(0.4); RETURN $1; END $$;
        CREATE TABLE slow (a int); INSERT INTO slow SELECT generate_series(1, 6);
        CREATE INDEX slow_idx ON slow (slowly(a));""")
    record = service.create(ACTOR, description="counts")
    target = make_db()
    run_sql(target, "CREATE TABLE precious (a int)")
    before = dump_text(target)
    name = target.rsplit("/", 1)[1]

    def meddle() -> None:  # another session changes the copy while it is being built
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            copies = query(ADMIN_URL, f"SELECT datname FROM pg_database WHERE starts_with(datname, '{name}__restore_')")
            if copies:
                try:
                    if query(url_for(copies[0][0]), "SELECT count(*) FROM t") == [(10,)]:
                        run_sql(url_for(copies[0][0]), "DELETE FROM t WHERE a = 1")
                        return
                except psycopg.Error:
                    pass
            time.sleep(0.02)

    thread = threading.Thread(target=meddle)
    thread.start()
    with pytest.raises(RowCountsDiffer) as err:
        service.restore(ACTOR, record.id, target_url=target, jobs=1)
    thread.join()
    assert "row counts differ" in err.value.message
    assert err.value.report["tables"]["public.t"] == {"expected": 10, "loaded": 10, "actual": 9}
    assert err.value.report["tables"]["public.slow"]["actual"] == 6
    assert dump_text(target) == before
    assert service.audit.entries(action="restore")[0].outcome == "failed"


def test_roles_are_recorded_as_the_database_needs_and_never_revived_on_the_same_server(
        service: BackupService, env: dict[str, str]) -> None:
    db = env["DATABASE_URL"]
    owner, group, member, stranger = (f"ehr_{k}_{uuid.uuid4().hex[:6]}" for k in ("own", "grp", "mem", "str"))
    run_sql(ADMIN_URL, f"CREATE ROLE {owner}; CREATE ROLE {group}; CREATE ROLE {member} LOGIN; "
                       f"GRANT {group} TO {member}; CREATE ROLE {stranger} LOGIN SUPERUSER PASSWORD 'old-secret-pw'")
    try:
        run_sql(db, f"CREATE TABLE t (a int); ALTER TABLE t OWNER TO {owner}; GRANT SELECT ON t TO {group};")
        record = service.create(ACTOR, description="roles")
        roles = service.contents(ACTOR, record.id)["roles"]
        assert {owner, group, member} <= set(roles) and stranger not in roles  # not this database's
        run_sql(ADMIN_URL, f"DROP ROLE {stranger}; DROP ROLE {member}")
        report = service.restore(ACTOR, record.id).as_dict()  # the same server: nothing is revived
        assert report["roles"] is None and any("same" in n or "made on" in n for n in report["notes"])
        assert query(ADMIN_URL, f"SELECT count(*) FROM pg_roles WHERE rolname IN ('{stranger}', '{member}')") == [(0,)]
        again = service.restore(ACTOR, record.id, roles=True).as_dict()  # asked for: the needed ones only
        assert again["roles"]["created"] == [member]
    finally:
        drop_databases([db.rsplit("/", 1)[1]])
        for r in (member, group, owner, stranger):
            run_sql(ADMIN_URL, f"DROP ROLE IF EXISTS {r}")


def test_tables_that_cannot_be_emptied_are_loaded_with_a_plain_copy(make_db) -> None:
    import queue as queue_module

    from ehr_backup.restore.workers import Worker
    db = make_db()
    run_sql(db, "CREATE TABLE config (id int PRIMARY KEY); CREATE TABLE item (c int REFERENCES config (id));"
                "CREATE TABLE filled (a int); INSERT INTO filled VALUES (1); CREATE TABLE fresh (a int);")
    worker = Worker(0, ConnInfo.parse(db), queue_module.Queue(), threading.Event(), None)
    worker.conn = psycopg.connect(db, autocommit=True)
    try:
        assert not worker._begin_frozen(Ident(b"public", b"config"))  # referenced by a foreign key
        assert not worker._begin_frozen(Ident(b"public", b"filled"))  # rows already there: never emptied
        assert query(db, "SELECT count(*) FROM filled") == [(1,)]
        assert worker.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert worker._begin_frozen(Ident(b"public", b"fresh"))
        worker.conn.execute("ROLLBACK")
    finally:
        worker.conn.close()


def test_a_column_named_begin_in_a_standard_sql_function_body_backs_up_and_restores(
        service: BackupService, env: dict[str, str], make_db) -> None:
    db = env["DATABASE_URL"]
    run_sql(db, 'CREATE TABLE visits ("begin" timestamptz, "end" timestamptz);'
                "INSERT INTO visits VALUES (now(), now());"
                "CREATE FUNCTION first_visit() RETURNS timestamptz LANGUAGE sql "
                "BEGIN ATOMIC SELECT v.begin FROM visits v LIMIT 1; END;"
                "CREATE TABLE after_it (a int); INSERT INTO after_it VALUES (7);")
    record = service.create(ACTOR, description="begin and end")
    target = make_db()
    assert service.restore(ACTOR, record.id, target_url=target).ok
    assert dump_text(target) == dump_text(db)


def test_a_database_that_asks_for_a_client_only_encoding_is_dumped_in_its_own(service: BackupService,
                                                                                env: dict[str, str], make_db) -> None:
    from ehr_backup.pipeline import plaintext

    db = env["DATABASE_URL"]
    name = db.rsplit("/", 1)[1]
    run_sql(db, f"""ALTER DATABASE "{name}" SET client_encoding = 'SJIS';
                    CREATE TABLE kanji (v text); INSERT INTO kanji VALUES ('表ソ\\');
                    COMMENT ON TABLE kanji IS '表ソ';""")
    record = service.create(ACTOR, description="sjis")
    opened = service._open(record)
    try:
        head = next(iter(plaintext(opened)))[:4096]
    finally:
        opened.fh.close()
    assert b"SET client_encoding = 'UTF8';" in head
    target = make_db()
    assert service.restore(ACTOR, record.id, target_url=target).ok
    assert query(target, "SELECT v, obj_description('kanji'::regclass) FROM kanji") \
        == [("表ソ\\", "表ソ")]
