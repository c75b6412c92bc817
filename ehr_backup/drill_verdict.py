"""Pure decisions of a restore drill: the scratch database's name, the table comparison, the verdict,
and which backups a scheduled drill takes. No database, no clock."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .drill_checks import CheckResult
from .models import BackupRecord, Status
from .restore.counts import TableCount
from .restore.database import derived_name
from .restore.workers import Loaded

SCRATCH_KIND = "__drill_"


def scratch_name(database: str, token: str) -> str:
    """`<database>__drill_<token>`, cut to PostgreSQL's 63 bytes (the database part is shortened)."""
    return derived_name(database or "database", f"{SCRATCH_KIND}{token}")


def is_scratch(name: str) -> bool:
    """Whether a database name is one a drill makes: `…__drill_` and 8 hex digits at its end."""
    return isinstance(name, str) and re.search(r"__drill_[0-9a-f]{8}\Z", name) is not None


def may_drop(scratch: str, live: Iterable[str | None]) -> bool:
    """Whether a recorded scratch name may be dropped WITH (FORCE): it has the scratch shape and is none of
    the live databases' names (a damaged drill row must never drop a real database)."""
    return is_scratch(scratch) and scratch not in {n for n in live if n}


def compare_tables(recorded: Mapping[str, int], loaded: Iterable[Loaded],
                   counts: Sequence[TableCount]) -> dict[str, dict[str, Any]]:
    """Every table: rows recorded at backup time (expected) against rows in the restored copy.

    A table is right when the dump held the recorded rows, the server loaded them all and the restored
    table holds exactly them. A partitioned table loaded through its root (pg_dump
    --load-via-partition-root) is counted as its COPY loaded it, the root without its partitions' rows.
    """
    own: dict[str, list[int]] = {}
    for item in loaded:
        o = own.setdefault(item.target.text(), [0, 0])
        o[0] += item.dumped
        o[1] += item.loaded
    by_name = {t.name: t for t in counts}
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(recorded) | set(own)):
        expected = recorded.get(name)
        t = by_name.get(name)
        dumped, loaded_rows = own.get(name, [None, None])
        restored: int | None
        if t is None or dumped is None:
            restored = None
        elif t.actual is None:
            restored = loaded_rows if t.note else None  # counted through its root, which is checked itself
        else:
            restored = t.actual - (t.dumped - dumped)  # a root's count includes the rows routed to partitions
        fine = t is not None and (t.ok or bool(t.note) and t.loaded == t.dumped)
        ok = expected is not None and dumped == expected and restored == expected and fine
        out[name] = {"expected": expected, "restored": restored, "ok": ok}
    return out


def verdict(tables: Mapping[str, Mapping[str, Any]], checks: Sequence[CheckResult]) -> tuple[bool, str]:
    """Passed or failed, and the one-line reason."""
    bad = [name for name, t in tables.items() if not t["ok"]]
    failed = [c.name for c in checks if not c.passed]
    problems = []
    if bad:
        problems.append(f"row counts differ from the backup's record in {len(bad)} of {len(tables)} tables "
                        f"({', '.join(bad[:5])}{' …' if len(bad) > 5 else ''})")
    if failed:
        problems.append(f"{len(failed)} of {len(checks)} checks failed ({', '.join(failed[:5])})")
    if not tables:
        problems.append("the restored copy holds no tables to compare")
    if problems:
        return False, "; ".join(problems)
    said = f"; {len(checks)} checks passed" if checks else ""
    return True, f"{len(tables)} tables restored with exactly the rows recorded at backup time{said}"


def newest_verified(records: Iterable[BackupRecord]) -> list[BackupRecord]:
    """Per database, the newest completed backup whose last verification succeeded (for scheduled drills)."""
    best: dict[str, BackupRecord] = {}
    for r in records:
        if r.status != Status.COMPLETED or r.verify_ok is not True:
            continue
        current = best.get(r.database)
        if current is None or _key(r) > _key(current):
            best[r.database] = r
    return [best[k] for k in sorted(best)]


def _key(r: BackupRecord) -> tuple[datetime, str]:
    from .catalogue import as_utc
    return (as_utc(r.created_at) or datetime.min.replace(tzinfo=UTC), r.id)
