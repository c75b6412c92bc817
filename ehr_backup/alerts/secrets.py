"""Channel secrets at rest: AES-256-GCM under a subkey derived (HKDF) from the master encryption key.

Stored as `v1:<key id>:<base64 nonce+ciphertext>`; the key id finds the right key after a rotation
(BACKUP_ENCRYPTION_OLD_KEYS). The subkey is never a file key nor the audit key (its own HKDF info).
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ConfigError
from ..keys import KEY_BYTES, SCRYPT_N, SCRYPT_P, SCRYPT_R, KeyRing, MasterKey

INFO = b"ehr-backup/v1/alert-secrets"
_cache: dict[str, bytes] = {}


def subkey(master: MasterKey) -> bytes:
    """The alert-secrets key of a master key (a passphrase is stretched once per process)."""
    cached = _cache.get(master.key_id)
    if cached is not None:
        return cached
    if master.kind == "raw":
        ikm = master.secret
    else:
        ikm = hashlib.scrypt(master.secret, salt=INFO, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                             maxmem=128 * 1024 * 1024, dklen=KEY_BYTES)
    key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=INFO, info=INFO).derive(ikm)
    _cache[master.key_id] = key
    return key


def seal(keys: KeyRing, plaintext: str, context: str) -> str:
    """Encrypt a secret; `context` (the channel's kind and target) is authenticated with it."""
    master = keys.encryption_key()
    nonce = os.urandom(12)
    sealed = AESGCM(subkey(master)).encrypt(nonce, plaintext.encode(), context.encode())
    return f"v1:{master.key_id}:{base64.b64encode(nonce + sealed).decode()}"


def unseal(keys: KeyRing, stored: str, context: str) -> str:
    """Decrypt a stored secret, or a ConfigError that never shows it."""
    try:
        version, key_id, data = stored.split(":", 2)
        raw = base64.b64decode(data, validate=True)
        if version != "v1" or len(raw) < 28:
            raise ValueError
        return AESGCM(subkey(keys.get(key_id))).decrypt(raw[:12], raw[12:], context.encode()).decode()
    except (ValueError, InvalidTag, UnicodeDecodeError):
        raise ConfigError("a stored alert channel secret cannot be read (damaged, or made with another key); "
                          "remove the channel and add it again") from None
