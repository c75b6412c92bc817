"""The audit trail: append-only entries, each carrying a MAC chained to the one before (see audit_chain)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import exists, func
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from .audit_anchor import AnchorScan, SyslogAnchor, field_value
from .audit_chain import GENESIS, SWITCH, AuditKeys, ChainReport, HeadFile, check_chain, entry_hash
from .catalogue import as_utc, utcnow
from .db import Database
from .errors import AuditError
from .models import AuditEntry, BackupRecord, User

__all__ = ["Actor", "AuditLog", "ChainReport"]


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where."""

    name: str
    address: str = ""
    is_admin: bool = True


FINAL = ("ok", "failed", "cancelled", "refused", "interrupted")  # outcomes that end an operation


class AuditLog:
    """Append and read audit entries.

    Besides the chain inside the database, the newest entry's number and MAC are kept in a signed
    file beside it (`head_dir`), in every new backup file's header, and optionally in syslog, so that
    removing the newest entries is detected too.
    """

    def __init__(self, db: Database, head_dir: Path | None = None, keys: Callable[[], AuditKeys] | None = None,
                 syslog: str | None = None) -> None:
        self._db = db
        self._head = HeadFile(head_dir) if head_dir else None
        self._load_keys = keys or AuditKeys
        self._keys: AuditKeys | None = None
        self._syslog = SyslogAnchor(syslog) if syslog else None
        self.shared = False  # True: other instances write this log too (PostgreSQL metadata)

    def keys(self) -> AuditKeys:
        """The audit keys, derived once (a passphrase costs one scrypt)."""
        if self._keys is None:
            self._keys = self._load_keys()
        return self._keys

    def _append(self, s: Session, last: AuditEntry | None, keys: AuditKeys, actor: Actor, action: str,
                target: str, outcome: str, detail: str) -> AuditEntry:
        prev = last.hash if last else GENESIS
        entry = AuditEntry(seq=(last.seq or 0) + 1 if last else 1, ts=utcnow(), actor=actor.name[:200],
                           action=action, target=target[:500], outcome=outcome, detail=detail[:2000],
                           address=actor.address[:100], prev_hash=prev, key_id=keys.current_id)
        entry.hash = entry_hash(prev, entry, keys.current)
        s.add(entry)
        return entry

    def record(self, actor: Actor, action: str, target: str = "", outcome: str = "ok",
               detail: str = "") -> AuditEntry:
        """Append one entry; raise AuditError when it cannot be written (the caller then stops)."""
        keys = self.keys()
        try:
            with self._db.writing() as s:
                last = s.exec(select(AuditEntry).order_by(col(AuditEntry.seq).desc()).limit(1)).first()
                if last is not None and last.key_id and keys.current is None:
                    # an unkeyed entry after keyed ones is what a downgrade looks like: never write one
                    raise AuditError(f"the audit log is keyed (audit key {last.key_id}) but no audit key "
                                     "is configured: set BACKUP_ENCRYPTION_KEY (or EHR_BACKUP_AUDIT_KEY) as "
                                     "before; the action was not carried out")
                if last is not None and keys.current is not None and last.key_id != keys.current_id:
                    detail_ = (f"from this entry on, entries carry HMAC-SHA256 under audit key "
                               f"{keys.current_id} ({keys.source})"
                               + (f"; before, under {last.key_id}" if last.key_id else ""))
                    last = self._append(s, last, keys, Actor("system"), SWITCH, keys.current_id, "ok", detail_)
                entry = self._append(s, last, keys, actor, action, target, outcome, detail)
            self._save_head(entry, keys)
        except (SQLAlchemyError, OSError) as exc:
            raise AuditError(f"the audit log cannot be written ({exc.__class__.__name__}); "
                             "the action was not carried out") from None
        if self._syslog is not None and entry.seq is not None:
            self._syslog.send(entry.seq, entry.hash)
        return entry

    def _save_head(self, entry: AuditEntry, keys: AuditKeys) -> None:
        """Move the saved head to this entry, unless the log no longer matches it (keep that evidence)."""
        if self._head is None or entry.seq is None:
            return
        self.adopt_head()
        with self._head.locked():
            head = self._head.read(keys)
            if head is None:
                if entry.seq != 1:
                    return  # the head vanished from a non-empty log: leave it missing for verify to report
            elif not head.valid or head.seq >= entry.seq or self._hash_at(head.seq) != head.hash:
                return  # a newer head, or evidence of tampering that a new head would hide
            self._head.write(entry.seq, entry.hash, keys)

    def adopt_head(self) -> None:
        """With a log other instances write too (`shared`), start this data directory's head at the newest
        entry when none was ever kept here; a head that vanished stays missing (evidence)."""
        if not self.shared or self._head is None or self._head.path.exists() or self._head.ever_kept():
            return
        with self._db.reading() as s:
            last = s.exec(select(AuditEntry).order_by(col(AuditEntry.seq).desc()).limit(1)).first()
        if last is None or last.seq is None:
            return  # an empty log: the first entry written here starts the head
        with self._head.locked():
            if not self._head.path.exists():
                self._head.write(last.seq, last.hash, self.keys())

    def _hash_at(self, seq: int) -> str | None:
        with self._db.reading() as s:
            e = s.get(AuditEntry, seq)
            return e.hash if e else None

    def anchor(self) -> dict[str, Any] | None:
        """The newest entry as recorded in a backup file's header (`auditHead`)."""
        with self._db.reading() as s:
            last = s.exec(select(AuditEntry).order_by(col(AuditEntry.seq).desc()).limit(1)).first()
        return field_value(last.seq, last.hash) if last else None

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
        """"started" entries of these actions with no later final outcome for the same target, newest first
        (steps in between, such as a restore's "building" or "swapped", are not outcomes)."""
        later = aliased(AuditEntry)
        with self._db.reading() as s:
            q = (select(AuditEntry)
                 .where(col(AuditEntry.action).in_(actions), AuditEntry.outcome == "started",
                        ~exists().where(later.action == AuditEntry.action, later.target == AuditEntry.target,
                                        col(later.seq) > col(AuditEntry.seq), col(later.outcome).in_(FINAL)))
                 .order_by(col(AuditEntry.seq).desc()).limit(limit))
            return list(s.exec(q).all())

    def verify(self, anchors: AnchorScan | None = None) -> ChainReport:
        """Recompute the chain; check it against the saved head and the anchors found in backup files."""
        keys = self.keys()
        self.adopt_head()
        head = self._head.read(keys) if self._head else None  # before the entries: it may only lag them
        with self._db.reading() as s:
            report = check_chain(s.exec(select(AuditEntry).order_by(col(AuditEntry.seq))), keys, head,
                                 self._head is not None, anchors or AnchorScan(), self._evidence(s))
        return report

    @staticmethod
    def _evidence(s: Session) -> str:
        """Rows that exist only after audited actions, proving that the log once held entries."""
        users = s.exec(select(func.count()).select_from(User)).one()
        made = s.exec(select(func.count()).select_from(BackupRecord)
                      .where(BackupRecord.origin == "catalogue")).one()
        found = ([f"{users} user(s)"] if users else []) + ([f"{made} backup(s) made here"] if made else [])
        return f"the catalogue holds {' and '.join(found)}, each added with an audit entry" if found else ""

    def export_csv(self, out: IO[str], entries: Sequence[AuditEntry] | None = None) -> int:
        """Write entries (all, oldest first, by default) as CSV; return how many."""
        rows = list(entries) if entries is not None else list(reversed(self.entries()))
        w = csv.writer(out)
        w.writerow(["seq", "time_utc", "actor", "address", "action", "target", "outcome", "detail", "hash"])
        for e in rows:
            ts = as_utc(e.ts)
            w.writerow([e.seq, ts.isoformat() if ts else "", *(_cell(text) for text in (
                e.actor, e.address, e.action, e.target, e.outcome, e.detail)), e.hash])
        return len(rows)


# What makes a spreadsheet read a cell as a formula, also after leading blanks and in full-width forms.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _cell(text: str) -> str:
    """Neutralise spreadsheet formulas in a CSV text cell (every text column goes through here)."""
    return "'" + text if text.lstrip(" ")[:1] in FORMULA_STARTS else text
