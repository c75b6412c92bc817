"""Admin-defined drill check queries: stored in the metadata database, run read-only with a time limit.

A check is one SELECT (or WITH … SELECT) returning one value. It runs in a READ ONLY transaction with a
statement timeout, as a prepared statement (the extended protocol refuses a second statement, so
`SELECT 1; COMMIT; DROP …` cannot slip out of the transaction), against the drill's scratch database;
its result is compared with an expected value, or with what the same query gives on the live database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from .audit import Actor
from .catalogue import utcnow
from .errors import InvalidInput, NotFound
from .models import DrillCheck
from .pg import ConnInfo
from .text import clean_text

if TYPE_CHECKING:
    from .service import BackupService

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_SQL = 4000
MAX_VALUE = 500
MAX_CHECKS = 100


def check_sql(text: Any) -> str:
    """A check query: a single SELECT (or WITH … SELECT), at most 4000 characters, no second statement."""
    if not isinstance(text, str):
        raise InvalidInput("a check query is text: one SELECT returning one value")
    query = text.strip().rstrip(";").strip()
    if not query or len(query) > MAX_SQL:
        raise InvalidInput(f"a check query is one SELECT of 1 to {MAX_SQL} characters")
    if not re.match(r"(?is)(select|with)\b", query):
        raise InvalidInput("a check query starts with SELECT (or WITH): it only reads")
    if ";" in query:
        raise InvalidInput("a check query is a single statement: no ';' inside it")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in query):
        raise InvalidInput("a check query may not hold control characters")
    return query


def check_name(name: Any) -> str:
    """A check's name: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most 64."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput("a check name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or "
                           "digit (e.g. patients-count)")
    return name


def as_text(value: Any) -> str | None:
    """A query's single value as the text it is compared by (None stays None)."""
    return None if value is None else str(value)


@dataclass(frozen=True)
class CheckResult:
    """One check as it ran in a drill."""

    name: str
    sql: str
    expected: str | None
    actual: str | None
    compare_live: bool
    passed: bool
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "sql": self.sql, "expected": self.expected, "actual": self.actual,
                "compareLive": self.compare_live, "passed": self.passed, "error": self.error or None}


def run_query(info: ConnInfo, query: str, timeout_s: int) -> str | None:
    """Run one check query read-only with a statement timeout; its single value as text."""
    try:
        # read-only and time-limited for the whole session from its start, not only for the transaction
        options = f"{info.params.get('options', '')} -c default_transaction_read_only=on " \
                  f"-c statement_timeout={timeout_s}s -c lock_timeout={timeout_s}s".strip()
        with psycopg.connect(info.conninfo(), autocommit=False, connect_timeout=10, options=options) as conn:
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                         (f"{timeout_s}s", f"{timeout_s}s"))
            rows = conn.execute(query, prepare=True).fetchall()  # type: ignore[call-overload]
            conn.rollback()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InvalidInput(info.redact(first)[:300]) from None
    if len(rows) != 1 or len(rows[0]) != 1:
        raise InvalidInput(f"the query returned {len(rows)} rows of {len(rows[0]) if rows else 0} columns; "
                           "a check returns one value")
    return as_text(rows[0][0])


def run_checks(checks: Sequence[DrillCheck], scratch: ConnInfo, live: ConnInfo | None,
               timeout_s: int) -> list[CheckResult]:
    """Run every check against the scratch database (and the live one for compare-live checks)."""
    out = []
    for c in checks:
        expected = c.expect
        try:
            if c.compare_live:
                if live is None:
                    raise InvalidInput("the live database is not known for this backup")
                expected = run_query(live, c.sql, timeout_s)
            actual = run_query(scratch, c.sql, timeout_s)
        except InvalidInput as exc:
            out.append(CheckResult(c.name, c.sql, expected, None, c.compare_live, False, exc.message))
            continue
        out.append(CheckResult(c.name, c.sql, expected, actual, c.compare_live, actual == expected))
    return out


class DrillChecks:
    """Add, list and remove the check queries every drill runs."""

    def __init__(self, service: BackupService) -> None:
        self.s = service

    def all(self) -> list[DrillCheck]:
        """Every check, by name."""
        with self.s.db.reading() as s:
            return list(s.exec(select(DrillCheck).order_by(col(DrillCheck.name))))

    def add(self, actor: Actor, name: str, sql: str, *, expect: str | None = None,
            compare_live: bool = False) -> DrillCheck:
        """Store a check: an expected value, or compare_live (the same query on the live database)."""
        try:
            check_name(name)
            query = check_sql(sql)
            if compare_live == (expect is not None):
                raise InvalidInput("give either an expected value (--expect) or --compare-live")
            value = clean_text(expect, MAX_VALUE, "the expected value") if expect is not None else None
            if len(self.all()) >= MAX_CHECKS:
                raise InvalidInput(f"at most {MAX_CHECKS} checks; remove one first")
        except InvalidInput as exc:
            self.s.audit.record(actor, "drill.check-add", str(name)[:64], "refused", exc.message)
            raise
        row = DrillCheck(name=name, sql=query, expect=value, compare_live=compare_live, created_at=utcnow(),
                         created_by=actor.name)
        try:
            with self.s.db.writing() as s:
                s.add(row)
        except IntegrityError:
            self.s.audit.record(actor, "drill.check-add", name, "refused", "the name is taken")
            raise InvalidInput(f"a check named {name!r} exists already; remove it first") from None
        self.s.audit.record(actor, "drill.check-add", name, "ok",
                            f"{query[:1000]} — expect {'the live value' if compare_live else repr(value)}")
        return row

    def remove(self, actor: Actor, name: str) -> None:
        """Delete a check."""
        check_name(name)
        with self.s.db.writing() as s:
            row = s.exec(select(DrillCheck).where(DrillCheck.name == name)).first()
            if row is not None:
                s.delete(row)
        if row is None:
            self.s.audit.record(actor, "drill.check-remove", name, "refused", "no such check")
            raise NotFound(f"no drill check named {name!r}")
        self.s.audit.record(actor, "drill.check-remove", name, "ok")


def view(c: DrillCheck) -> dict[str, Any]:
    """The JSON form of a stored check."""
    return {"name": c.name, "sql": c.sql, "expect": c.expect, "compareLive": c.compare_live,
            "createdBy": c.created_by, "createdAt": c.created_at.isoformat() if c.created_at else None}
