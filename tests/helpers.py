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
    return re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.M)
