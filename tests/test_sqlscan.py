"""The dump scanner splits a dump exactly as psql does, at any chunking, and only pg_dump's COPY starts data."""

from __future__ import annotations

import subprocess

import pytest

from ehr_backup.dumptoc import DumpAnalyzer, entry_type
from ehr_backup.pg import ConnInfo
from ehr_backup.sqlscan import (
    Comment,
    CopyData,
    CopyEnd,
    CopyStart,
    DumpSyntaxError,
    Ident,
    Meta,
    SqlScanner,
    Statement,
    parse_copy,
)

from .conftest import run_sql
from .helpers import AWKWARD_SQL

# Objects whose text is full of what a naive splitter gets wrong: semicolons, COPY lines and TOC headers
# inside strings, dollar quotes with tags, nested comments, escape strings, SQL-standard function bodies.
TORTURE_SQL = r'''
CREATE TYPE status AS ENUM ('ok', 'COPY public.t FROM stdin;', E'line\nCOPY x; DROP TABLE t; -- FROM stdin;');
CREATE TABLE notes (id int PRIMARY KEY, body text DEFAULT 'a;b', "we;ird ""col""" text);
COMMENT ON TABLE notes IS 'harmless looking comment
COPY public.notes; CREATE TABLE public.pwned (); -- FROM stdin;
\.
end';
COMMENT ON COLUMN notes.body IS E'escaped \' quote; COPY y FROM stdin;\n\\.\n';
CREATE FUNCTION f_dollar() RETURNS text LANGUAGE plpgsql AS $body$
BEGIN
  -- a semicolon; and a $$ inside
  RETURN 'x;
--
-- TOC entry 99999 (class 0 OID 0)
-- Data for Name: notes; Type: TABLE DATA; Schema: public; Owner: postgres
--

COPY public.notes (id, body) FROM stdin;
7	fake
\.
';
END
$body$;
CREATE FUNCTION f_atomic(a int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN a > 0 THEN a ELSE 0 END;
  SELECT a + 1;
END;
CREATE VIEW v_weird AS SELECT /* nested /* comment; */ still; */ 'a'';b' AS x, U&'\0041;' AS y;
CREATE TABLE "Tab;le ""x""" (a int);
INSERT INTO notes VALUES (1, E'tab\there', 'c'), (2, '\.', NULL), (3, 'COPY public.notes FROM stdin;', 'd');
INSERT INTO "Tab;le ""x""" VALUES (1), (2);
'''


def _events(data: bytes, size: int) -> list:
    scanner = SqlScanner()
    out = []
    for i in range(0, len(data), size):
        for e in scanner.feed(data[i:i + size]):
            out.append(CopyData(memoryview(bytes(e.data))) if isinstance(e, CopyData) else e)
    return out + scanner.finish()


def _statements(events: list) -> bytes:
    return b"".join(e.sql + b"\n" for e in events if isinstance(e, (Statement, CopyStart)))


def _dump(url: str) -> bytes:
    return subprocess.run(["pg_dump", "--verbose", "--no-password"], env=ConnInfo.parse(url).child_env(),
                          capture_output=True, check=True).stdout


@pytest.fixture
def torture_dump(make_db) -> bytes:
    src = make_db()
    run_sql(src, TORTURE_SQL + AWKWARD_SQL)
    return _dump(src)


def test_statements_are_exactly_the_ones_psql_sends(torture_dump: bytes, make_db, tmp_path) -> None:
    target = make_db()
    path = tmp_path / "dump.sql"
    path.write_bytes(torture_dump)
    echoed = subprocess.run(["psql", "-X", "-q", "-e", "-o", "/dev/null", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
                            env=ConnInfo.parse(target).child_env(), capture_output=True, check=True).stdout
    assert _statements(_events(torture_dump, len(torture_dump))) == echoed
    run_sql(target, "SELECT 1")
    assert [r for r in subprocess.run(["psql", "-X", "-At", "-c", "SELECT count(*) FROM pg_class WHERE relname = "
                                       "'pwned'"], env=ConnInfo.parse(target).child_env(),
                                      capture_output=True, text=True).stdout.split()] == ["0"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 4096])
def test_any_chunking_gives_the_same_events(torture_dump: bytes, size: int) -> None:
    whole = _events(torture_dump, len(torture_dump))
    pieces = _events(torture_dump, size)

    def shape(events: list) -> list:
        out = []
        for e in events:
            if isinstance(e, CopyData):
                if out and isinstance(out[-1], tuple):
                    out[-1] = ("data", out[-1][1] + bytes(e.data))
                else:
                    out.append(("data", bytes(e.data)))
            else:
                out.append(e)
        return out

    assert shape(pieces) == shape(whole)


def test_only_pg_dumps_own_copy_lines_start_data(torture_dump: bytes) -> None:
    events = _events(torture_dump, 1000)
    copies = {e.target.text() for e in events if isinstance(e, CopyStart)}
    assert "public.notes" in copies and '"Schéma ""quoted"""."Table With Spaces"' in copies
    assert not [c for c in copies if ";" in c and "Tab;le" not in c]  # nothing from inside a string
    rows = {e.target.text(): n.rows for e, n in zip(events, events[1:] + [None])
            if isinstance(e, CopyStart) and isinstance(n, CopyEnd)}
    ends = [e for e in events if isinstance(e, CopyEnd)]
    assert len(ends) == len([e for e in events if isinstance(e, CopyStart)])
    analyzer = DumpAnalyzer()
    analyzer.feed(torture_dump)
    index = analyzer.finish()
    assert index.complete
    counts = analyzer.rows_by_table()
    assert counts["public.notes"] == 3 and counts['public."Tab;le ""x"""'] == 2
    assert not [t for t in counts if "pwned" in t or "DROP" in t]
    del rows


def test_copy_statements_are_parsed_strictly() -> None:
    assert parse_copy(b'COPY "S p"."T ""q""" (a, "b c") FROM stdin;') == Ident(b"S p", b'T "q"')
    assert parse_copy(b"COPY public.t FROM stdin;") == Ident(b"public", b"t")
    for bad in (b"COPY public.t; DROP TABLE x; -- FROM stdin;", b"COPY public.t (a) FROM stdin WITH (x);",
                b"COPY (SELECT 1) FROM stdin;", b"COPY public.t FROM '/etc/passwd';", b"COPY public.t\nFROM stdin;"):
        with pytest.raises(DumpSyntaxError):
            parse_copy(bad)


def test_a_copy_that_pg_dump_would_not_write_is_refused_not_guessed() -> None:
    scanner = SqlScanner()
    with pytest.raises(DumpSyntaxError):
        scanner.feed(b"COPY public.t; DROP TABLE x; -- FROM stdin;\n1\n\\.\n")


def test_meta_commands_and_comments_outside_statements() -> None:
    events = _events(b"\\restrict abc\n-- a comment\nSELECT 1;\n-- TOC entry 1 (class 0 OID 0)\n", 3)
    assert [type(e) for e in events] == [Meta, Comment, Statement, Comment]
    with pytest.raises(DumpSyntaxError):
        SqlScanner().feed(b"SELECT 1 \\gexec\n;")


def test_the_header_type_is_unknown_when_a_name_could_fake_it() -> None:
    assert entry_type(b"-- Name: a; Type: TABLE; Schema: public; Owner: postgres") == "TABLE"
    assert entry_type(b"-- Data for Name: a; Type: TABLE DATA; Schema: public; Owner: postgres") == "TABLE DATA"
    assert entry_type(b"-- Name: x; Type: INDEX; Schema: y; Type: TABLE; Schema: public; Owner: postgres") is None


@pytest.mark.parametrize("name", ["SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004"])
def test_a_dump_in_a_client_only_encoding_is_refused(name: str) -> None:
    dump = (f"SET client_encoding = '{name}';\n".encode() + b"COMMENT ON TABLE t IS '\x83\\';\n")
    with pytest.raises(DumpSyntaxError) as err:
        list(SqlScanner().feed(dump))
    assert name in str(err.value)
    assert [type(e) for e in SqlScanner().feed(b"SET client_encoding = 'LATIN1';\nSELECT 1;\n")] == [
        Statement, Statement]


def test_a_scanner_started_after_a_jump_keeps_the_dumps_string_setting() -> None:
    text = b"SELECT 'a\\';\nSELECT 2;\n"  # with standard_conforming_strings off, \\' does not end the string
    off = [e.sql for e in SqlScanner(std_strings=False).feed(text) if isinstance(e, Statement)]
    assert off == []  # still inside the string
    on = [e.sql for e in SqlScanner().feed(text) if isinstance(e, Statement)]
    assert len(on) == 2
