"""The dump scanner: row counts and completion at any chunking, blob transaction stripping."""

from __future__ import annotations

import pytest

from ehr_backup.dumpstream import DumpScanner

DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET x = 1;\n"
    b"COPY public.t (a, b) FROM stdin;\n1\tx\n2\ta\\nb\n3\t\\\\.\n\\.\n\n"
    b'COPY "S p"."T ""q""" (a) FROM stdin;\n\\.\n\n'
    b"COPY public.big (a) FROM stdin;\n" + b"".join(b"%d\t" % i + b"y" * (i % 700) + b"\n" for i in range(500))
    + b"\\.\n\n"
    b"--\n-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -\n--\n\nBEGIN;\n\n"
    b"SELECT pg_catalog.lo_open('16393', 131072);\nSELECT pg_catalog.lowrite(0, '\\x0102');\n"
    b"SELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n\n"
    b"CREATE FUNCTION f() AS $$\nBEGIN;\nCOMMIT;\n$$;\n"
    b"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n"
)
ROWS = {"public.t": 3, '"S p"."T ""q"""': 0, "public.big": 500}


def feed_in(data: bytes, size: int, **kw: bool) -> tuple[DumpScanner, bytes]:
    s = DumpScanner(**kw)
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out += s.feed(data[i:i + size])
    out += s.finish()
    return s, b"".join(out)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, 4096, 10**6])
def test_row_counts_and_completion_do_not_depend_on_chunk_boundaries(size: int) -> None:
    s, out = feed_in(DUMP, size)
    assert s.rows == ROWS and s.complete and s.bytes == len(DUMP)
    assert out == DUMP


@pytest.mark.parametrize("size", [1, 5, 333, 10**6])
def test_blob_begin_commit_are_stripped_only_around_large_objects(size: int) -> None:
    s, out = feed_in(DUMP, size, strip_blob_transaction=True)
    assert out == DUMP.replace(b"\n\nBEGIN;\n\n", b"\n\n\n", 1).replace(b"\n\nCOMMIT;\n\n", b"\n\n\n", 1)
    assert b"$$\nBEGIN;\nCOMMIT;\n$$" in out  # function bodies keep theirs


@pytest.mark.parametrize("cut", [10, len(DUMP) // 2, len(DUMP) - 40])
def test_a_dump_cut_short_is_not_complete(cut: int) -> None:
    s, _ = feed_in(DUMP[:cut], 100)
    assert not s.complete


def test_text_after_the_completion_marker_makes_it_incomplete() -> None:
    s, _ = feed_in(DUMP + b"DROP TABLE x;\n", 50)
    assert not s.complete
