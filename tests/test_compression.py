"""Compressors: parallel gzip members read back by any gzip reader, at every size and write pattern."""

from __future__ import annotations

import gzip
import io
import os
import subprocess

import pytest

from ehr_backup.compression import FRAME, decompress, open_compressor


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 5 * FRAME + 7])
@pytest.mark.parametrize("algorithm", ["gzip", "zstd"])
@pytest.mark.parametrize("piece", [1000, FRAME, 3 * FRAME])
def test_what_goes_in_comes_out(size: int, algorithm: str, piece: int) -> None:
    data = (os.urandom(size // 3) + b"SELECT 1;\n" * (size // 15))[:size]
    out = io.BytesIO()
    comp = open_compressor(algorithm, out, 6 if algorithm == "gzip" else 3, threads=2)
    for i in range(0, len(data), piece):
        comp.write(data[i:i + piece])
    comp.close()
    assert b"".join(decompress(algorithm, iter([out.getvalue()]))) == data
    if algorithm == "gzip":
        assert gzip.decompress(out.getvalue()) == data
        assert subprocess.run(["gunzip", "-c"], input=out.getvalue(), capture_output=True).stdout == data


def test_parallel_gzip_is_smaller_than_gzip_9_on_sql_text() -> None:
    rows = b"".join(b"%d\tpatient %d\t2024-01-%02d\tstable, review in %d weeks\n" % (i, i * 7, i % 28 + 1, i % 9)
                    for i in range(200_000))
    out = io.BytesIO()
    comp = open_compressor("gzip", out, 6, threads=2)
    comp.write(rows)
    comp.close()
    assert len(out.getvalue()) <= len(gzip.compress(rows, 9))
