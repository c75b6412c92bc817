"""Which dump entries may load side by side: a pure decision, made per entry as the dump streams past.

pg_dump writes a plain dump in an order that respects every dependency (schema, then data, then
indexes and constraints). Reading that order back with several connections is safe when:

* an entry of unknown or unusual kind is a barrier: it waits for everything before it, and everything
  after it waits for it (dump order, one at a time: always correct);
* table data, sequence values and large objects are independent of one another (pg_restore -j assumes
  the same) and need only the schema before them;
* an index, a primary/unique/exclusion constraint or a foreign key needs the tables it names to be
  loaded, and must not run beside another entry that locks one of those tables (except two index
  builds, or two loads, which share their locks), as pg_restore's lock-conflict check does; a foreign
  key waits for all data, since it checks rows that may reach a table through its partitions;
* a comment or security label names the entry it belongs to and waits for just that one.

Plain dumps list dependencies only for some entries, so the tables an index or constraint uses are
read from its statement, which pg_dump writes in a fixed form. Whatever cannot be read that way is a
barrier.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from ..dumptoc import DATA_TYPES
from ..sqlscan import Ident, split_qualified

_IDENT = rb'(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)'
_QUAL = _IDENT + rb"(?:\." + _IDENT + rb")?"
_INDEX = re.compile(rb"CREATE (?:UNIQUE )?INDEX " + _IDENT + rb" ON (?:ONLY )?(" + _QUAL + rb") USING ", re.DOTALL)
_ALTER = re.compile(rb"ALTER TABLE (?:ONLY )?(" + _QUAL + rb")\s+ADD CONSTRAINT " + _IDENT + rb" ", re.DOTALL)
_TOKEN = re.compile(rb"""'(?:[^']|'')*'|"(?:[^"]|"")*"|\$([A-Za-z_]\w*)?\$|[A-Za-z_][A-Za-z0-9_$]*|[()]|.""", re.DOTALL)
_SESSION = re.compile(rb"\s*(?:SET\s+(?:SESSION\s+)?(?!LOCAL\b)(SESSION\s+AUTHORIZATION|ROLE|[A-Za-z_][A-Za-z0-9_.]*)\b"
                      rb"|RESET\s+([A-Za-z_][A-Za-z0-9_.]*)\s*;"
                      rb"|SELECT\s+pg_catalog\.set_config\('([A-Za-z_][A-Za-z0-9_.]*)',\s*'(?:[^']|'')*',\s*false\)\s*;)",
                      re.IGNORECASE)

PARALLEL_POST = {"INDEX", "CONSTRAINT", "FK CONSTRAINT"}
DEPENDENT = {"COMMENT", "SECURITY LABEL"}


class Kind(enum.Enum):
    """How an entry is scheduled."""

    BARRIER = "barrier"
    DATA = "data"
    POST = "post"
    DEPENDENT = "dependent"


@dataclass(frozen=True)
class Plan:
    """How one entry is scheduled: its kind, the tables it locks, the entries it names as dependencies."""

    kind: Kind
    locks: frozenset[Ident] = frozenset()
    shared: str = ""  # entries with the same non-empty value may run beside each other ("index")
    deps: tuple[int, ...] = ()
    after_data: bool = False  # waits for every table's data (a foreign key checks rows of other tables,
    #                           which may reach a partitioned table through partitions it cannot name)


BARRIER = Plan(Kind.BARRIER)


def session_key(sql: bytes) -> str | None:
    """The session setting a statement changes (SET, RESET, set_config(..., false)), else None."""
    m = _SESSION.match(sql)
    if m is None:
        return None
    name = next(g for g in m.groups() if g is not None)
    return re.sub(rb"\s+", b" ", name).decode().lower()


def plan_entry(entry_type: str | None, statements: list[bytes], copy_target: Ident | None,
               deps: tuple[int, ...]) -> Plan:
    """Decide how an entry is scheduled from its type, its statements (settings excluded) and its COPY."""
    if entry_type in DATA_TYPES:
        locks = frozenset([copy_target]) if copy_target is not None else frozenset()
        return Plan(Kind.DATA, locks)
    if entry_type in DEPENDENT and deps:
        return Plan(Kind.DEPENDENT, deps=deps)
    if entry_type not in PARALLEL_POST or copy_target is not None or len(statements) != 1:
        return BARRIER
    sql = statements[0]
    if entry_type == "INDEX":
        m = _INDEX.match(sql)
        if m is None:
            return BARRIER
        return Plan(Kind.POST, frozenset([_unqualified(m.group(1))]), "index")
    m = _ALTER.match(sql)
    if m is None:
        return BARRIER
    tables = {_unqualified(m.group(1))}
    if entry_type == "FK CONSTRAINT":
        referenced = references(sql[m.end():])
        if referenced is None:
            return BARRIER
        tables.add(referenced)
        return Plan(Kind.POST, frozenset(tables), after_data=True)
    return Plan(Kind.POST, frozenset(tables))


_ADD_FK = re.compile(rb"(ALTER TABLE ONLY " + _QUAL + rb")\n    ADD CONSTRAINT (" + _IDENT + rb") FOREIGN KEY ", re.DOTALL)


def split_foreign_key(sql: bytes) -> tuple[bytes, bytes] | None:
    """`ADD CONSTRAINT … FOREIGN KEY …;` as `… NOT VALID;` and `VALIDATE CONSTRAINT …;`.

    Adding takes a lock that two foreign keys on one table cannot share, and checks every row while it
    holds it; validating separately takes a weaker lock, so that the checks of several foreign keys run
    side by side. The end state is the same constraint, validated. Only the plain form pg_dump writes
    for an ordinary table (ALTER TABLE ONLY, not already NOT VALID) is split; anything else is run as it is.
    """
    m = _ADD_FK.match(sql)
    if m is None or not sql.endswith(b";") or sql.rstrip(b";").endswith(b"NOT VALID"):
        return None
    return sql[:-1] + b" NOT VALID;", m.group(1) + b" VALIDATE CONSTRAINT " + m.group(2) + b";"


def _unqualified(raw: bytes) -> Ident:
    return split_qualified(raw)


def references(tail: bytes) -> Ident | None:
    """The table after the first REFERENCES outside parentheses and quotes, if it can be read."""
    depth = 0
    tokens = [m.group() for m in _TOKEN.finditer(tail) if not m.group().isspace()]
    for i, tok in enumerate(tokens):
        if tok == b"(":
            depth += 1
        elif tok == b")":
            depth -= 1
        elif depth == 0 and tok.upper() == b"REFERENCES":
            rest = tokens[i + 1:i + 4]
            if len(rest) >= 3 and rest[1] == b".":
                raw = rest[0] + b"." + rest[2]
            elif rest:
                raw = rest[0]
            else:
                return None
            try:
                return split_qualified(raw)
            except ValueError:
                return None
    return None


def conflicts(a: Plan, b: Plan) -> bool:
    """Whether two entries must not run at the same time (they lock a common table incompatibly)."""
    if a.kind == Kind.BARRIER or b.kind == Kind.BARRIER:
        return True
    if not (a.locks & b.locks):
        return False
    # two loads into one table (data dumped through a partitioned table) go in dump order, so that its
    # rows end up in the same order as a single-connection restore would put them
    return not (a.shared and a.shared == b.shared and a.kind != Kind.DATA)


@dataclass
class Ledger:
    """What has been dispatched since the last barrier, to decide what a new entry waits for."""

    running: dict[int, Plan] = field(default_factory=dict)  # job number -> plan, not yet finished
    by_toc: dict[int, int] = field(default_factory=dict)  # TOC id -> job number

    def waits_for(self, plan: Plan) -> set[int]:
        """The unfinished jobs a new entry must wait for."""
        if plan.kind == Kind.BARRIER:
            return set(self.running)
        out = {job for job, other in self.running.items()
               if conflicts(plan, other) or (plan.after_data and other.kind == Kind.DATA)}
        if plan.kind == Kind.DEPENDENT:
            out |= {self.by_toc[d] for d in plan.deps if d in self.by_toc and self.by_toc[d] in self.running}
        return out
