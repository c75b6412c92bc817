"""`<backup id>.verified`: the last verification of a backup, beside its file, MACed with a key from the master key.

The catalogue keeps verification results; this small JSON record keeps the last one with the file, so a
catalogue rebuilt from storage alone (rebuild.py) still knows when each backup was last proven and how
it went. It is bound to the file it speaks for (id, SHA-256 and size of the whole file) and MACed with
HMAC-SHA256 under HKDF(master key, info `ehr-backup/v1/verified`) of the key the backup is encrypted
with: without the key nobody can forge one or move one to another backup. It is written atomically
(temporary file, fsync, rename) and deleted with its backup (storage.unlink_in).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import BackupError
from .keys import SCRYPT_N, SCRYPT_P, SCRYPT_R, KeyRing, MasterKey
from .rebuild_source import MAX_SIDECAR
from .storage import SIDECAR_SUFFIX, atomic_file
from .text import printable

log = logging.getLogger("ehr_backup.verified")
FORMAT = "ehr-backup/verified/v1"
INFO = b"ehr-backup/v1/verified"
MAX_MESSAGE = 1000


class SidecarInvalid(BackupError):
    """A sidecar that does not authenticate, or speaks for another file: it is ignored."""


@dataclass(frozen=True)
class Verified:
    """The last verification a sidecar records."""

    at: datetime
    ok: bool
    message: str
    seconds: float | None


@lru_cache(maxsize=16)
def sidecar_key(master: MasterKey) -> bytes:
    """The sidecar MAC key of one master key (a passphrase is stretched once, with a fixed salt)."""
    if master.kind == "raw":
        ikm = master.secret
    else:
        ikm = hashlib.scrypt(master.secret, salt=INFO, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                             maxmem=128 * 1024 * 1024, dklen=32)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=INFO, info=INFO).derive(ikm)


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode()


def build(master: MasterKey, *, backup_id: str, sha256: str, size: int, verified: Verified) -> bytes:
    """The sidecar's bytes for one verification of one file."""
    body = {"format": FORMAT, "backupId": backup_id, "sha256": sha256, "size": size, "keyId": master.key_id,
            "verifiedAt": verified.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "ok": verified.ok, "message": printable(verified.message)[:MAX_MESSAGE],
            "durationSeconds": verified.seconds}
    mac = hmac.new(sidecar_key(master), _canonical(body), hashlib.sha256).hexdigest()
    return _canonical({**body, "mac": mac}) + b"\n"


def check(data: bytes, keyring: KeyRing, *, backup_id: str, sha256: str, size: int) -> Verified:
    """The verification a sidecar records, once its MAC and its binding to this file hold (else SidecarInvalid)."""
    if len(data) > MAX_SIDECAR:
        raise SidecarInvalid("the verification record is too large")
    try:
        doc = json.loads(data)
        mac = bytes.fromhex(doc.pop("mac"))
        master = keyring.get(doc["keyId"])
    except (ValueError, KeyError, TypeError, AttributeError, BackupError):
        raise SidecarInvalid("the verification record is not readable, or its key is not configured") from None
    expected = hmac.new(sidecar_key(master), _canonical(doc), hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise SidecarInvalid("the verification record does not authenticate (forged or altered)")
    if (doc.get("format") != FORMAT or doc.get("backupId") != backup_id or doc.get("sha256") != sha256
            or doc.get("size") != size):
        raise SidecarInvalid("the verification record speaks for another file")
    try:
        at = datetime.fromisoformat(str(doc["verifiedAt"]))  # 3.11 reads a trailing Z
        seconds = doc.get("durationSeconds")
        return Verified(at if at.tzinfo else at.replace(tzinfo=UTC), doc["ok"] is True,
                        printable(str(doc.get("message") or ""))[:MAX_MESSAGE],
                        float(seconds) if isinstance(seconds, (int, float)) else None)
    except (ValueError, KeyError, TypeError):
        raise SidecarInvalid("the verification record is not readable") from None


def write(directory: Path, backup_id: str, data: bytes) -> None:
    """Put the sidecar beside its backup atomically: a temporary file, fsync, rename over the old one."""
    with atomic_file(directory, backup_id + SIDECAR_SUFFIX, private=False, replace=True) as fh:
        fh.write(data)


def record(directory: Path, backup_id: str, master: MasterKey, *, sha256: str, size: int,
           verified: Verified) -> bool:
    """Write the sidecar of a verification that just finished; a failure is only logged (the catalogue has it)."""
    try:
        write(directory, backup_id, build(master, backup_id=backup_id, sha256=sha256, size=size, verified=verified))
        return True
    except (OSError, BackupError) as exc:
        log.warning("could not write the verification record beside %s: %s", backup_id,
                    getattr(exc, "strerror", None) or getattr(exc, "message", None) or exc.__class__.__name__)
        return False
