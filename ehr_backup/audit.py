"""The audit trail: append-only entries, each carrying a hash chained to the one before."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from sqlalchemy import exists
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from .catalogue import as_utc, utcnow
from .db import Database
from .errors import AuditError
from .models import AuditEntry

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where."""

    name: str
    address: str = ""
    is_admin: bool = True


def _digest(prev: str, e: AuditEntry) -> str:
    ts = as_utc(e.ts)
    assert ts is not None
    body = json.dumps([prev, e.seq, ts.isoformat(timespec="microseconds"), e.actor, e.action, e.target,
                       e.outcome, e.detail, e.address], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """The result of checking the chain."""

    ok: bool
    entries: int
    first_bad: int | None = None
    reason: str = ""


class AuditLog:
    """Append and read audit entries.

    Besides the chain inside the database, the newest entry's number and hash are kept in a small
    HMAC-signed file beside it (`head_dir`), so that deleting the newest entries is detected too.
    """

    def __init__(self, db: Database, head_dir: Path | None = None) -> None:
        self._db = db
        self._head = head_dir / "audit-head.json" if head_dir else None
        self._head_key = head_dir / "audit-head.key" if head_dir else None

    def _mac_key(self) -> bytes:
        assert self._head_key is not None
        if not self._head_key.exists():
            try:
                fd = os.open(self._head_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(secrets.token_bytes(32))
            except FileExistsError:
                pass
        return self._head_key.read_bytes()

    def _sign(self, seq: int, digest: str) -> str:
        return hmac.new(self._mac_key(), f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()

    def _save_head(self, entry: AuditEntry) -> None:
        if self._head is None or entry.seq is None:
            return
        current = self._read_head()
        if current and current[0] >= entry.seq:
            return  # another process wrote a newer head already
        tmp = self._head.with_name(f".audit-head.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps({"seq": entry.seq, "hash": entry.hash, "mac": self._sign(entry.seq, entry.hash)}))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._head)

    def _read_head(self) -> tuple[int, str, bool] | None:
        """(seq, hash, signature valid) of the saved head, if any."""
        if self._head is None or not self._head.exists():
            return None
        try:
            data = json.loads(self._head.read_text())
            seq, digest = int(data["seq"]), str(data["hash"])
            return seq, digest, hmac.compare_digest(self._sign(seq, digest), str(data["mac"]))
        except (OSError, ValueError, KeyError, TypeError):
            return 0, "", False

    def record(self, actor: Actor, action: str, target: str = "", outcome: str = "ok",
               detail: str = "") -> AuditEntry:
        """Append one entry; raise AuditError when it cannot be written (the caller then stops)."""
        try:
            with self._db.writing() as s:
                last = s.exec(select(AuditEntry).order_by(col(AuditEntry.seq).desc()).limit(1)).first()
                prev = last.hash if last else GENESIS
                entry = AuditEntry(seq=(last.seq or 0) + 1 if last else 1, ts=utcnow(),
                                   actor=actor.name[:200], action=action, target=target[:500],
                                   outcome=outcome, detail=detail[:2000], address=actor.address[:100],
                                   prev_hash=prev)
                entry.hash = _digest(prev, entry)
                s.add(entry)
            self._save_head(entry)
            return entry
        except (SQLAlchemyError, OSError) as exc:
            raise AuditError(f"the audit log cannot be written ({exc.__class__.__name__}); "
                             "the action was not carried out") from None

    def entries(self, *, actor: str | None = None, action: str | None = None,
                since: datetime | None = None, until: datetime | None = None,
                limit: int | None = None) -> Sequence[AuditEntry]:
        """Entries, newest first, filtered."""
        with self._db.reading() as s:
            q = select(AuditEntry).order_by(col(AuditEntry.seq).desc())
            if actor:
                q = q.where(AuditEntry.actor == actor)
            if action:
                q = q.where(AuditEntry.action == action)
            if since:
                q = q.where(AuditEntry.ts >= since)
            if until:
                q = q.where(AuditEntry.ts < until)
            if limit:
                q = q.limit(limit)
            return s.exec(q).all()

    def unfinished(self, actions: tuple[str, ...], limit: int = 500) -> list[AuditEntry]:
        """"started" entries of these actions with no later outcome for the same target, newest first."""
        later = aliased(AuditEntry)
        with self._db.reading() as s:
            q = (select(AuditEntry)
                 .where(col(AuditEntry.action).in_(actions), AuditEntry.outcome == "started",
                        ~exists().where(later.action == AuditEntry.action, later.target == AuditEntry.target,
                                        col(later.seq) > col(AuditEntry.seq), later.outcome != "started"))
                 .order_by(col(AuditEntry.seq).desc()).limit(limit))
            return list(s.exec(q).all())

    def verify(self) -> ChainReport:
        """Recompute the chain; report the first entry that was edited, removed or reordered."""
        prev, count, expected = GENESIS, 0, 1
        hashes: dict[int, str] = {}
        with self._db.reading() as s:
            for e in s.exec(select(AuditEntry).order_by(col(AuditEntry.seq))):
                count += 1
                if e.seq != expected:
                    return ChainReport(False, count, e.seq, f"entry {expected} is missing")
                if e.prev_hash != prev or _digest(prev, e) != e.hash:
                    return ChainReport(False, count, e.seq, f"entry {e.seq} was modified")
                prev, expected = e.hash, expected + 1
                hashes[e.seq] = e.hash
        head = self._read_head()
        if head is not None:
            seq, digest, valid = head
            if not valid:
                return ChainReport(False, count, None, "the saved head of the log was modified")
            if hashes.get(seq) != digest:
                return ChainReport(False, count, seq, f"entries up to {seq} existed; the log now ends at "
                                                      f"{expected - 1}: newest entries were removed or changed")
        return ChainReport(True, count)

    def export_csv(self, out: IO[str], entries: Sequence[AuditEntry] | None = None) -> int:
        """Write entries (all, oldest first, by default) as CSV; return how many."""
        rows = list(entries) if entries is not None else list(reversed(self.entries()))
        w = csv.writer(out)
        w.writerow(["seq", "time_utc", "actor", "address", "action", "target", "outcome", "detail", "hash"])
        for e in rows:
            ts = as_utc(e.ts)
            w.writerow([e.seq, ts.isoformat() if ts else "", _cell(e.actor), e.address, e.action,
                        _cell(e.target), e.outcome, _cell(e.detail), e.hash])
        return len(rows)


def _cell(text: str) -> str:
    """Neutralise spreadsheet formulas in CSV cells."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
