"""Prove a restore complete: count the rows of every table the dump loaded, the way its data went in.

Names are raw bytes from a strict parse of the dump's COPY statements, quoted by libpq for the
database's own encoding (so `SQL_ASCII` names that are not UTF-8 count like any other), and only
ever used as identifiers. A table whose data went in through a partitioned table (pg_dump
--load-via-partition-root) is counted through that table, partitions included; any other table is
counted on its own (`ONLY`), as its COPY filled it.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.pq import Escaping

from ..errors import DatabaseUnavailable
from ..pg import ConnInfo
from ..sqlscan import Ident
from .workers import Loaded


@dataclass
class TableCount:
    """One table: rows the dump held, rows its COPY reported loading, rows the database holds now."""

    name: str
    dumped: int
    loaded: int
    actual: int | None
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether all three agree."""
        return self.dumped == self.loaded == self.actual


def _qualified(esc: Any, target: Ident) -> bytes:
    parts = [p for p in (target.schema, target.name) if p is not None]
    return b".".join(esc.escape_identifier(p) for p in parts)


def count_tables(info: ConnInfo, loaded: Iterable[Loaded], jobs: int) -> list[TableCount]:
    """Count every loaded table, on up to `jobs` connections, and compare."""
    totals: dict[Ident, list[int]] = {}
    for item in loaded:
        t = totals.setdefault(item.target, [0, 0])
        t[0] += item.dumped
        t[1] += item.loaded
    if not totals:
        return []
    conns = [_connect(info) for _ in range(max(1, min(jobs, len(totals))))]
    try:
        kinds = _kinds(conns[0], list(totals))
        through = _routed_through(conns[0], totals, kinds)
        plain = [t for t in totals if t not in through]
        with ThreadPoolExecutor(len(conns)) as pool:
            counted = list(pool.map(lambda i: _count(conns[i], plain[i::len(conns)], kinds),
                                    range(len(conns))))
        actual = {t: n for part in counted for t, n in part.items()}
    finally:
        for c in conns:
            c.close()
    out = []
    for target, (dumped, loaded_rows) in totals.items():
        if target in through:
            out.append(TableCount(target.text(), dumped, loaded_rows, None,
                                  f"counted through {through[target].text()}"))
            continue
        if kinds.get(target) == "p":  # data through a partitioned table: its rows live in the partitions
            for part, root in through.items():
                if root == target:
                    dumped += totals[part][0]
                    loaded_rows += totals[part][1]
        out.append(TableCount(target.text(), dumped, loaded_rows, actual.get(target)))
    return sorted(out, key=lambda c: c.name)


def _connect(info: ConnInfo) -> psycopg.Connection:
    try:
        return psycopg.connect(info.conninfo(), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to {info.display} to count rows: "
                                  f"{info.redact(str(exc).strip().splitlines()[0])}") from None


def _kinds(conn: psycopg.Connection, targets: list[Ident]) -> dict[Ident, str]:
    """pg_class.relkind of each table (missing tables are left out)."""
    esc = Escaping(conn.pgconn)
    out: dict[Ident, str] = {}
    for t in targets:
        literal = esc.escape_literal(_qualified(esc, t))
        row = conn.execute(b"SELECT relkind::text FROM pg_class WHERE oid = to_regclass(" + literal + b")").fetchone()
        if row is not None:
            out[t] = str(row[0])
    return out


def _routed_through(conn: psycopg.Connection, totals: dict[Ident, list[int]],
                    kinds: dict[Ident, str]) -> dict[Ident, Ident]:
    """Loaded tables that are partitions of another loaded, partitioned table: counted through it."""
    esc = Escaping(conn.pgconn)
    out: dict[Ident, Ident] = {}
    roots = [t for t in totals if kinds.get(t) == "p"]
    for root in roots:
        literal = esc.escape_literal(_qualified(esc, root))
        rows = conn.execute(b"SELECT n.nspname::bytea, c.relname::bytea FROM pg_partition_tree(to_regclass("
                            + literal + b")) p JOIN pg_class c ON c.oid = p.relid "
                            b"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.relid <> to_regclass("
                            + literal + b")").fetchall()
        for schema, name in rows:
            part = Ident(bytes(schema), bytes(name))
            if part in totals:
                out[part] = root
    return out


def _count(conn: psycopg.Connection, targets: list[Ident], kinds: dict[Ident, str]) -> dict[Ident, int | None]:
    esc = Escaping(conn.pgconn)
    out: dict[Ident, int | None] = {}
    for t in targets:
        if t not in kinds:
            out[t] = None
            continue
        only = b"" if kinds[t] == "p" else b"ONLY "
        try:
            row = conn.execute(b"SELECT count(*) FROM " + only + _qualified(esc, t)).fetchone()
            out[t] = int(row[0]) if row else None
        except psycopg.Error:
            out[t] = None
    return out
