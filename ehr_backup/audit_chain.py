"""The audit chain's integrity: keyed entry MACs, the signed head file, and the check that joins them.

Each entry's `hash` covers the previous entry's and every field. Entries written while no audit key
was configured carry plain SHA-256 (`key_id` empty); once a key is configured the log switches to
HMAC-SHA256 under it with one recorded `audit.keyed` entry, and every later entry must be keyed, so an
attacker without the key can neither rewrite keyed entries nor downgrade them. The newest entry is
also kept in `audit-head.json` (signed with the audit key) and recorded in backup files (audit_anchor).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audit_anchor import AnchorScan
from .catalogue import as_utc
from .keys import audit_key, audit_key_id, load_keyring, parse_key
from .models import AuditEntry

GENESIS = "0" * 64
SWITCH = "audit.keyed"
NO_KEY = ("NOT KEYED: neither BACKUP_ENCRYPTION_KEY nor EHR_BACKUP_AUDIT_KEY is configured (demo mode), "
          "so entries carry plain SHA-256 that anyone who can write the metadata database can recompute")


@dataclass(frozen=True)
class AuditKeys:
    """The audit key new entries are MACed with, and every key that may have MACed older ones."""

    current_id: str = ""
    source: str = ""  # the variable the current key comes from
    known: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def current(self) -> bytes | None:
        """The key for new entries, if one is configured."""
        return self.known.get(self.current_id) if self.current_id else None


def load_audit_keys(audit_keys: str | None, encryption_key: str | None, old_keys: str | None) -> AuditKeys:
    """Derive audit keys from EHR_BACKUP_AUDIT_KEY (current first, older after commas) or the backup keys."""
    known: dict[str, bytes] = {}
    current_id, source = "", ""
    ring = load_keyring(encryption_key, old_keys)
    for master in (ring.current, *ring.older):
        if master is not None:
            key = audit_key(master)
            known[audit_key_id(key)] = key
            if master is ring.current:
                current_id, source = audit_key_id(key), "derived from BACKUP_ENCRYPTION_KEY"
    texts = [t for t in re.split(r"[,\n]", audit_keys or "") if t.strip()]
    for i, text in enumerate(texts):
        key = audit_key(parse_key(text, variable="EHR_BACKUP_AUDIT_KEY"))
        known[audit_key_id(key)] = key
        if i == 0:
            current_id, source = audit_key_id(key), "EHR_BACKUP_AUDIT_KEY"
    return AuditKeys(current_id, source, known)


def entry_hash(prev: str, e: AuditEntry, key: bytes | None) -> str:
    """The chain value of an entry: SHA-256 when unkeyed, else HMAC-SHA256 under its audit key."""
    ts = as_utc(e.ts)
    assert ts is not None
    fields: list[Any] = [prev, e.seq, ts.isoformat(timespec="microseconds"), e.actor, e.action, e.target,
                         e.outcome, e.detail, e.address]
    if key is None:
        body = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()
    body = json.dumps(["ehr-backup/audit/hmac-v1", e.key_id, *fields], ensure_ascii=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Head:
    """The saved head: the newest entry's number and hash, and whether its signature holds."""

    seq: int
    hash: str
    key_id: str
    valid: bool
    reason: str = ""


class HeadFile:
    """`audit-head.json`: signed with the audit key (or, unkeyed, a local key file beside it)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "audit-head.json"
        self._legacy_key = directory / "audit-head.key"  # protects nothing against local writers
        self._lock_path = directory / "audit-head.lock"
        self._thread_lock = threading.Lock()

    def _local_key(self, create: bool) -> bytes | None:
        if create and not self._legacy_key.exists():
            try:
                fd = os.open(self._legacy_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(secrets.token_bytes(32))
            except FileExistsError:
                pass
        try:
            return self._legacy_key.read_bytes()
        except FileNotFoundError:
            return None

    @staticmethod
    def _sign(key: bytes, key_id: str, seq: int, digest: str) -> str:
        text = f"head:{key_id}:{seq}:{digest}" if key_id else f"{seq}:{digest}"  # unkeyed: the old form
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    def read(self, keys: AuditKeys) -> Head | None:
        """The saved head, or None when there is no head file."""
        try:
            data = json.loads(self.path.read_text())
            seq, digest, key_id, mac = int(data["seq"]), str(data["hash"]), str(data.get("keyId", "")), \
                str(data["mac"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return Head(0, "", "", False,
                        "the saved head of the log (audit-head.json) is damaged or was modified")
        key = keys.known.get(key_id) if key_id else self._local_key(create=False)
        if key is None:
            return Head(seq, digest, key_id, False,
                        f"the saved head is signed with audit key {key_id}, which is not configured"
                        if key_id else "the saved head's signing key (audit-head.key) is missing")
        if not hmac.compare_digest(self._sign(key, key_id, seq, digest), mac):
            return Head(seq, digest, key_id, False, "the saved head of the log (audit-head.json) was modified")
        return Head(seq, digest, key_id, True)

    def ever_kept(self) -> bool:
        """Whether a head was ever kept here (its lock file is made with the first one)."""
        return self._lock_path.exists()

    def locked(self) -> _HeadLock:
        """Hold while reading, checking and replacing the head (threads and processes)."""
        return _HeadLock(self)

    def write(self, seq: int, digest: str, keys: AuditKeys) -> None:
        """Replace the head atomically and durably."""
        key = keys.current or self._local_key(create=True)
        assert key is not None
        body = {"seq": seq, "hash": digest, "keyId": keys.current_id,
                "mac": self._sign(key, keys.current_id, seq, digest)}
        tmp = self.path.with_name(f".audit-head.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(body))
            fh.flush()
            os.fsync(fh.fileno())  # a torn head after a crash would look like tampering
        os.replace(tmp, self.path)


class _HeadLock:
    def __init__(self, head: HeadFile) -> None:
        self._head = head
        self._fd = -1

    def __enter__(self) -> None:
        self._head._thread_lock.acquire()
        try:
            self._fd = os.open(self._head._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._head._thread_lock.release()
            raise

    def __exit__(self, *_exc: object) -> None:
        os.close(self._fd)
        self._head._thread_lock.release()


@dataclass(frozen=True)
class ChainReport:
    """The result of checking the chain, its head and its anchors."""

    ok: bool
    entries: int
    first_bad: int | None = None
    reason: str = ""
    keyed_since: int | None = None
    key_id: str = ""
    head_seq: int | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"ok": self.ok, "entries": self.entries, "firstBad": self.first_bad, "reason": self.reason,
                "keyedSince": self.keyed_since, "keyId": self.key_id or None, "headSeq": self.head_seq,
                "notes": list(self.notes)}


def check_chain(entries: Iterable[AuditEntry], keys: AuditKeys, head: Head | None, head_kept: bool,
                anchors: AnchorScan, used: str = "") -> ChainReport:
    """Recompute the chain; check it against the saved head and the anchors (oldest entries first).

    `head_kept` says the log keeps a head file, so a missing one is evidence; `used` names rows
    elsewhere that prove the log once held entries.
    """
    want = {a.seq for a in anchors.anchors} | ({head.seq} if head else set())
    seen: dict[int, tuple[str, str]] = {}  # only the entries the head and anchors name
    prev, count, keyed_since, last_key = GENESIS, 0, None, ""

    def fail(seq: int | None, reason: str) -> ChainReport:
        return ChainReport(False, count, seq, reason, keyed_since, last_key)

    for e in entries:
        count += 1
        if e.seq != count:
            return fail(e.seq, f"entry {count} is missing")
        key = None
        if e.key_id:
            key = keys.known.get(e.key_id)
            if key is None:
                return fail(e.seq, f"entry {e.seq} is MACed with audit key {e.key_id}, which is not "
                                   "configured: configure the key that was in use (EHR_BACKUP_AUDIT_KEY, or "
                                   "BACKUP_ENCRYPTION_KEY / BACKUP_ENCRYPTION_OLD_KEYS)")
            if e.key_id != last_key and e.seq != 1 and e.action != SWITCH:
                return fail(e.seq, f"entry {e.seq} changes the audit key without a recorded switch: "
                                   "it was modified")
            keyed_since = keyed_since or e.seq
        elif keyed_since:
            return fail(e.seq, f"entry {e.seq} is not keyed although the log is keyed since entry "
                               f"{keyed_since}: entries were rewritten without the key (a downgrade)")
        if e.prev_hash != prev or entry_hash(prev, e, key) != e.hash:
            return fail(e.seq, f"entry {e.seq} was modified")
        prev, last_key = e.hash, e.key_id
        if e.seq in want:
            seen[e.seq] = (e.hash, e.key_id)
    if head is None:
        if head_kept and count:
            return fail(None, f"the saved head of the log (audit-head.json) is missing although the log holds "
                              f"{count} entries: newest entries may have been removed with it")
        if head_kept and used:
            return fail(None, f"the audit log is empty and its saved head is missing, but {used}: "
                              "its entries were removed")
    elif not head.valid:
        return fail(None, head.reason)
    elif head.seq not in seen:
        return fail(head.seq, f"entries up to {head.seq} existed; the log now ends at {count}: "
                              "newest entries were removed")
    elif seen[head.seq][0] != head.hash:
        return fail(head.seq, f"entry {head.seq} differs from the saved head: newest entries were removed or "
                              "changed")
    elif seen[head.seq][1] and not head.key_id:
        return fail(head.seq, f"the saved head is not keyed although entry {head.seq} is: it was replaced")
    if anchors.problem():
        return fail(None, anchors.problem())
    for a in sorted(anchors.anchors, key=lambda a: a.seq, reverse=True):
        elsewhere = f" (unless {a.source} was made by another installation and copied here)"
        if a.seq not in seen:
            return fail(a.seq, f"backup {a.source} records audit entry {a.seq}, but the log ends at {count}: "
                               f"newest entries were removed{elsewhere}")
        if seen[a.seq][0] != a.mac:
            return fail(a.seq, f"entry {a.seq} differs from the one recorded in backup {a.source}: "
                               f"the log was rewritten{elsewhere}")
    notes = [_key_note(keys, keyed_since, last_key, count)]
    notes.append(f"saved head: entry {head.seq}" + (" (keyed)" if head.key_id else " (unkeyed)")
                 if head else "saved head: none (the log is empty)")
    notes.append(anchors.summary())
    return ChainReport(True, count, None, "", keyed_since, last_key, head.seq if head else None, tuple(notes))


def _key_note(keys: AuditKeys, keyed_since: int | None, last_key: str, count: int) -> str:
    if keyed_since is None:
        if keys.current is None:
            return NO_KEY
        return (f"not keyed yet: the next entry switches the log to HMAC-SHA256 under audit key "
                f"{keys.current_id} ({keys.source}); until then only the backup files' audit heads "
                "show a rewrite")
    text = f"keyed: entries {keyed_since}-{count} carry HMAC-SHA256 (newest under audit key {last_key}"
    text += f", {keys.source})" if last_key == keys.current_id else ", no longer the configured key)"
    if keyed_since > 1:
        text += f"; entries 1-{keyed_since - 1} predate the key (plain SHA-256, sealed by entry {keyed_since})"
    if keys.current is None:
        text += "; no audit key is configured now, so no new entry can be recorded"
    return text
