"""Helpers shared by tests: comparing databases through their dumps."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ehr_backup.pg import ConnInfo

AWKWARD_SQL = (Path(__file__).parent / "awkward.sql").read_text()


def dump_text(url: str) -> str:
    """A full plain dump with the per-run random lines removed, for comparing two databases."""
    info = ConnInfo.parse(url)
    out = subprocess.run(["pg_dump", "--format=plain", "--no-password"], env=info.child_env(),
                         capture_output=True, check=True).stdout.decode()
    return re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.MULTILINE)


def fill(url: str, rows: int, width: int = 4, table: str = "big") -> None:
    """Give a database one table of `rows` rows of `width` x 32 characters."""
    from .conftest import run_sql
    run_sql(url, f"CREATE TABLE {table} AS SELECT g, repeat(md5(g::text), {width}) s "
                 f"FROM generate_series(1, {rows}) g;")


def precious_target(make_db) -> tuple[str, str]:
    """A fresh database holding data that must survive a failed restore, and its dump."""
    from .conftest import run_sql
    target = make_db()
    run_sql(target, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep me');")
    return target, dump_text(target)
