"""Pages of the backup list: filtered, searched and sorted in SQLite; keptBy and lastDrill for one page only.

A page is read with keyset paging: the cursor holds the sort value and id of the last row shown, so a
walk sees every backup once even while new backups are added. Rotation's reasons (keptBy) come from a
plan of each database on the page, read from the few columns rotation needs (prune.facts()), and kept
while the catalogue is unchanged (its change counter, moved by any process), so paging through ten
thousand backups does not plan ten thousand backups per page.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from . import storage
from .catalogue import as_utc
from .errors import InvalidInput
from .models import BackupRecord, Drill, Status
from .profiles import DEFAULT, check_name
from .prune import DEFAULT_POLICY, candidate, facts, file_exists
from .text import clean_text

if TYPE_CHECKING:
    from .service import BackupService

MAX_LIMIT = 500
# How long a database's rotation plan is reused while no backup row changed. Any change, by any process
# (the catalogue's change counter, see db.py), a new policy, or a backup the plan does not know makes a
# new one at once; the time bound only covers what no row records: files removed by hand, and time
# passing (a day's or week's backup becoming the newest of its period, keep-within-days running out).
# Planning reads every backup of a database (about 0.25 s at 10,000): a page view must not pay it.
PLAN_SECONDS = 300.0
# sortable fields (API names) -> column, and the value that stands for NULL so that keyset comparisons work
SORTS: dict[str, tuple[Any, Any]] = {
    "createdAt": (BackupRecord.created_at, None), "description": (BackupRecord.description, ""),
    "size": (BackupRecord.size, -1), "status": (BackupRecord.status, ""), "location": (BackupRecord.location, ""),
    "database": (BackupRecord.database, ""), "kind": (BackupRecord.kind, ""),
    "createdBy": (BackupRecord.created_by, ""),
}
KINDS = ("manual", "scheduled", "safety", "discovered")
STATUSES = (Status.COMPLETED, Status.RUNNING, Status.FAILED, Status.CANCELLED, Status.DISCOVERED, "verified",
            "verify-failed", "unverified")


@dataclass(frozen=True)
class ListQuery:
    """What a page of the list shows: filters, a search over description and id, the order, and where it starts."""

    location: str | None = None
    database: str | None = None
    kind: str | None = None
    status: str | None = None
    search: str | None = None
    sort: str = "createdAt"
    descending: bool = True
    limit: int = 100
    cursor: str | None = None
    offset: int = 0  # rows to skip when there is no cursor (a table's page number); a cursor is steadier
    profile: str | None = None  # a database profile's backups ("default": DATABASE_URL's, rows without one)

    def checked(self) -> ListQuery:
        """The query with its values validated (InvalidInput names the first bad one)."""
        if self.location is not None and self.location not in storage.LOCATIONS:
            raise InvalidInput(f"unknown location {self.location!r}: choose one of {', '.join(storage.LOCATIONS)}")
        if self.kind is not None and self.kind not in KINDS:
            raise InvalidInput(f"unknown kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.status is not None and self.status not in STATUSES:
            raise InvalidInput(f"unknown status {self.status!r}: choose one of {', '.join(STATUSES)}")
        if self.sort not in SORTS:
            raise InvalidInput(f"cannot sort by {self.sort!r}: choose one of {', '.join(SORTS)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= 10_000_000:
            raise InvalidInput("offset must be a number of rows, 0 or more")
        database = clean_text(self.database, 63, "the database name") if self.database else None
        search = clean_text(self.search, 200, "the search text").strip() if self.search else None
        return ListQuery(self.location or None, database, self.kind or None, self.status or None, search or None,
                         self.sort, self.descending, self.limit, self.cursor or None, self.offset,
                         check_name(self.profile) if self.profile else None)


def encode_cursor(query: ListQuery, value: Any, backup_id: str) -> str:
    """A cursor after this row, bound to the query's order (the sort value travels as text)."""
    text = value.isoformat() if isinstance(value, datetime) else value
    raw = json.dumps([query.sort, query.descending, text, backup_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(query: ListQuery, cursor: str) -> tuple[Any, str]:
    """The (sort value, id) a cursor continues after; InvalidInput when it is not one of ours for this order."""
    try:
        if len(cursor) > 2000:
            raise ValueError("too long")
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        sort, descending, value, backup_id = raw
        if sort != query.sort or descending != query.descending or not isinstance(backup_id, str):
            raise InvalidInput("the cursor belongs to another sort order: start again without a cursor")
        if query.sort == "createdAt":
            value = as_utc(datetime.fromisoformat(value))
        elif query.sort == "size":
            value = int(value)
        elif not isinstance(value, str):
            raise ValueError("not text")
    except InvalidInput:
        raise
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput("the cursor is not valid: use nextCursor of the previous page") from None
    return value, backup_id


def _filters(q: ListQuery) -> list[Any]:
    """The WHERE clauses of a query's filters and search."""
    where: list[Any] = []
    if q.location:
        where.append(BackupRecord.location == q.location)
    if q.database is not None:
        where.append(BackupRecord.database == q.database)
    if q.profile == DEFAULT:
        where.append(or_(col(BackupRecord.profile).is_(None), BackupRecord.profile == DEFAULT))
    elif q.profile:
        where.append(BackupRecord.profile == q.profile)
    if q.kind == "discovered":
        where.append(BackupRecord.origin == "discovered")
    elif q.kind:
        where.append(and_(BackupRecord.kind == q.kind, BackupRecord.origin != "discovered"))
    if q.status == "verified":
        where.append(col(BackupRecord.verify_ok).is_(True))
    elif q.status == "verify-failed":
        where.append(col(BackupRecord.verify_ok).is_(False))
    elif q.status == "unverified":
        where.append(and_(col(BackupRecord.verify_ok).is_(None),
                          col(BackupRecord.status).in_((Status.COMPLETED, Status.DISCOVERED))))
    elif q.status:
        where.append(BackupRecord.status == q.status)
    if q.search:
        pattern = "%" + q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # ILIKE: case-insensitive as SQLite's LIKE is, on PostgreSQL metadata too
        where.append(or_(col(BackupRecord.description).ilike(pattern, escape="\\"),
                         col(BackupRecord.id).ilike(pattern, escape="\\")))
    return where


def page_records(db: Any, q: ListQuery) -> tuple[list[Any], int, str | None]:
    """One page of records, the number matching the filters, and the cursor of the next page (None: last).

    The records are rows of the backups table, read like a BackupRecord (same attribute names) but
    without building ORM instances, which was a third of the cost of a page.
    """
    column, null = SORTS[q.sort]
    key = column if null is None else func.coalesce(column, null)
    where = _filters(q)
    with db.reading() as s:
        total = s.execute(sa_select(func.count()).select_from(BackupRecord).where(*where)).scalar_one()
        page_where = list(where)
        if q.cursor:
            value, after = decode_cursor(q, q.cursor)
            if q.descending:
                page_where.append(or_(key < value, and_(key == value, col(BackupRecord.id) < after)))
            else:
                page_where.append(or_(key > value, and_(key == value, col(BackupRecord.id) > after)))
        order = (key.desc(), col(BackupRecord.id).desc()) if q.descending else (key.asc(), col(BackupRecord.id).asc())
        rows = list(s.execute(sa_select(BackupRecord.__table__).where(*page_where)  # type: ignore[attr-defined]
                              .order_by(*order).limit(q.limit + 1).offset(0 if q.cursor else q.offset)).all())
    more = len(rows) > q.limit
    rows = rows[:q.limit]
    cursor = None
    if more and rows:
        last = rows[-1]
        value = getattr(last, column.key)
        cursor = encode_cursor(q, null if value is None else value, last.id)
    return rows, int(total), cursor


def json_stream(backups: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """`{"backups": [...]}` as bytes, one backup at a time (for a response that never holds the whole list)."""
    parts: list[bytes] = [b'{"backups":[']
    size = 0
    for i, backup in enumerate(backups):
        part = (b"," if i else b"") + json.dumps(backup, separators=(",", ":")).encode()
        parts.append(part)
        size += len(part)
        if size >= 256 * 1024:  # chunks of about 256 kB: each one is a hop to a worker thread
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(b"]}")
    yield b"".join(parts)


def last_drills(db: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The newest finished drill of each of these backups, in one query (as `lastDrill` shows it)."""
    out: dict[str, dict[str, Any]] = {}
    if not ids:
        return out
    with db.reading() as s:
        rows = s.exec(select(Drill).where(col(Drill.backup_id).in_(ids), col(Drill.outcome).in_(("passed", "failed")))
                      .order_by(col(Drill.id).desc())).all()
    for r in rows:
        if r.backup_id not in out:
            finished = as_utc(r.finished_at)
            out[r.backup_id] = {"at": finished.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                                if finished else None, "outcome": r.outcome, "recoverySeconds": r.recovery_s,
                                "drillId": r.id}
    return out


class Listing:
    """The paged backup list of one installation, with a short-lived rotation plan per database."""

    def __init__(self, service: BackupService) -> None:
        self.s = service
        self._plans: dict[str, tuple[float, Any, dict[str, list[str]]]] = {}
        self._plan_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def page(self, query: ListQuery) -> dict[str, Any]:
        """{backups, total, nextCursor}: one page of backups in their public JSON form."""
        q = query.checked()
        if q.cursor is None:
            self.s._import_discovered(if_changed=True)  # files found on disk join when the list is read from the top
        records, total, cursor = page_records(self.s.db, q)
        by_database: dict[str, list[str]] = {}
        for r in records:
            by_database.setdefault(r.database, []).append(r.id)
        kept = self.kept_by(by_database)
        drills = last_drills(self.s.db, [r.id for r in records])
        copies = self.s.copies.rows_of([r.id for r in records])  # one query for the page, not one per backup
        return {"backups": [self.s.view(r, kept.get(r.id, []), last_drill=drills.get(r.id), copies=copies[r.id])
                            for r in records],
                "total": total, "nextCursor": cursor}

    def databases(self) -> list[str]:
        """The names of the databases the catalogue has backups of (for a filter)."""
        with self.s.db.reading() as s:
            return [d for d in s.exec(select(BackupRecord.database).distinct().order_by(BackupRecord.database)).all()]

    def walk(self, query: ListQuery) -> Iterator[dict[str, Any]]:
        """Every backup the query selects, page by page (memory stays that of one page)."""
        page = self.page(query)
        yield from page["backups"]
        while page["nextCursor"]:
            page = self.page(ListQuery(**{**query.__dict__, "cursor": page["nextCursor"]}))
            yield from page["backups"]

    def kept_by(self, ids: dict[str, list[str]]) -> dict[str, list[str]]:
        """The rules that keep these backups (ids by database) now: one plan per database, reused briefly."""
        from .schedules import policy_of

        policies = {s.name: p for s in self.s.schedules.all() if (p := policy_of(s)) is not None}
        stamp = (self.s.catalogue.changes(), repr(sorted(policies.items())))
        out: dict[str, list[str]] = {}
        for database, wanted in ids.items():
            reasons = self._reusable(database, stamp, wanted)
            if reasons is None:
                # one plan per database at a time: 20 requests arriving after a change used to plan the same
                # 5,000 backups 20 times over (seconds of GIL); the others wait for it and reuse it
                with self._planning(database):
                    reasons = self._reusable(database, stamp, wanted)
                    if reasons is None:
                        rows = self.s.catalogue.columns(facts(), database=database)
                        plan = self.s.rotation.plan(DEFAULT_POLICY, [candidate(r, file_exists(r)) for r in rows],
                                                    schedule_policies=policies)
                        reasons = plan.reasons()
                        with self._lock:
                            self._plans[database] = (time.monotonic(), stamp, reasons)
            out.update(reasons)
        return out

    def _reusable(self, database: str, stamp: Any, wanted: list[str]) -> dict[str, list[str]] | None:
        """The kept plan's reasons for a database, if it is current and knows every wanted backup."""
        with self._lock:
            cached = self._plans.get(database)
        if (cached and cached[1] == stamp and time.monotonic() - cached[0] < PLAN_SECONDS
                and all(i in cached[2] for i in wanted)):
            return cached[2]
        return None

    def _planning(self, database: str) -> threading.Lock:
        """The lock that lets one thread at a time plan a database."""
        with self._lock:
            return self._plan_locks.setdefault(database, threading.Lock())
