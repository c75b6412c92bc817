"""Encryption keys: parsing `BACKUP_ENCRYPTION_KEY`, key ids, per-file key derivation, rotation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ConfigError, KeyNotAvailable, NotAuthentic

KEY_BYTES = 32
MIN_PASSPHRASE = 16
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
ENC_INFO = b"ehr-backup/v1/enc"
MAC_INFO = b"ehr-backup/v1/mac"
KEY_ID_INFO = b"ehr-backup/v1/key-id"
AUDIT_INFO = b"ehr-backup/v1/audit"
AUDIT_ID_INFO = b"ehr-backup/v1/audit-key-id"
KEY_ID_RE = re.compile(r"[kp][0-9a-f]{16}")
HOW_TO = "generate one with `ehr-backup keygen` and set BACKUP_ENCRYPTION_KEY to what it prints"


@dataclass(frozen=True)
class MasterKey:
    """A configured key: 32 raw bytes, or a passphrase that scrypt stretches per file."""

    kind: str  # "raw" or "passphrase"
    secret: bytes = field(repr=False)
    key_id: str = ""

    def derivation(self) -> dict[str, object]:
        """Describe in the header how the file's master secret is derived from this key."""
        if self.kind == "raw":
            return {"name": "raw"}
        return {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}

    def file_keys(self, salt: bytes, derivation: dict[str, object]) -> tuple[bytes, bytes]:
        """Return (encryption key, MAC key) for a file with this salt."""
        if derivation != self.derivation():
            # only the exact parameters this version writes: a header cannot make us spend unbounded
            # memory or time, and anything else is damage
            raise NotAuthentic()
        if self.kind == "raw":
            ikm = self.secret
        else:
            ikm = hashlib.scrypt(self.secret, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                                 maxmem=128 * 1024 * 1024, dklen=KEY_BYTES)
        return _hkdf(ikm, salt, ENC_INFO), _hkdf(ikm, salt, MAC_INFO)


def audit_key(master: MasterKey) -> bytes:
    """Derive the key that MACs the audit chain: HKDF with its own info, never a file's key."""
    if master.kind == "raw":
        ikm = master.secret
    else:  # stretched once per process with a fixed salt, so every run derives the same audit key
        ikm = hashlib.scrypt(master.secret, salt=AUDIT_INFO, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                             maxmem=128 * 1024 * 1024, dklen=KEY_BYTES)
    return _hkdf(ikm, AUDIT_INFO, AUDIT_INFO)


def audit_key_id(key: bytes) -> str:
    """Fingerprint of an audit key, recorded beside each entry it MACs (never the key)."""
    return "a" + hmac.new(key, AUDIT_ID_INFO, hashlib.sha256).hexdigest()[:16]


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(ikm)


def parse_key(text: str, *, variable: str = "BACKUP_ENCRYPTION_KEY") -> MasterKey:
    """Parse a key given as `hex:…`, `base64:…`, `passphrase:…`, or bare hex/base64; never echo it."""
    value = text.strip()
    if not value:
        raise ConfigError(f"{variable} is not set: {HOW_TO}")
    prefix, sep, rest = value.partition(":")
    if sep and prefix == "passphrase":
        if len(rest) < MIN_PASSPHRASE:
            raise ConfigError(f"{variable}: a passphrase must have at least {MIN_PASSPHRASE} characters; "
                              f"better, {HOW_TO}")
        secret = rest.encode()
        ident = hashlib.scrypt(secret, salt=KEY_ID_INFO, n=2**14, r=8, p=1, dklen=32)
        return MasterKey("passphrase", secret, "p" + _fingerprint(ident))
    if sep and prefix == "hex":
        raw = _decode_hex(rest, variable)
    elif sep and prefix == "base64":
        raw = _decode_b64(rest, variable)
    elif len(value) == 2 * KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in value):
        raw = _decode_hex(value, variable)
    else:
        raw = _decode_b64(value, variable)
    return MasterKey("raw", raw, "k" + _fingerprint(raw))


def _fingerprint(secret: bytes) -> str:
    return hmac.new(secret, KEY_ID_INFO, hashlib.sha256).hexdigest()[:16]


def _decode_hex(text: str, variable: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{variable} is not valid hex: {HOW_TO}") from None
    return _check_length(raw, variable)


def _decode_b64(text: str, variable: str) -> bytes:
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{variable} is malformed (expected hex:, base64: or passphrase:): {HOW_TO}") \
            from None
    return _check_length(raw, variable)


def _check_length(raw: bytes, variable: str) -> bytes:
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{variable} must hold exactly {KEY_BYTES} bytes, not {len(raw)}: {HOW_TO}")
    return raw


def generate_key() -> str:
    """Return a new random key in the accepted `hex:` form."""
    return "hex:" + secrets.token_hex(KEY_BYTES)


@dataclass(frozen=True)
class KeyRing:
    """The current key (used to encrypt) and older keys that may still decrypt."""

    current: MasterKey | None
    older: tuple[MasterKey, ...] = ()

    def encryption_key(self) -> MasterKey:
        """Return the key new backups are encrypted with, or explain how to configure one."""
        if self.current is None:
            raise ConfigError(f"BACKUP_ENCRYPTION_KEY is not set: {HOW_TO}")
        return self.current

    def get(self, key_id: str) -> MasterKey:
        """Return the key with this id or raise KeyNotAvailable naming it (ids are checked first)."""
        if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
            raise NotAuthentic()
        for key in (self.current, *self.older):
            if key is not None and hmac.compare_digest(key.key_id, key_id):
                return key
        raise KeyNotAvailable(key_id)

    @property
    def key_ids(self) -> list[str]:
        """Ids of every configured key, current first."""
        return [k.key_id for k in (self.current, *self.older) if k is not None]


def load_keyring(current: str | None, older: str | None) -> KeyRing:
    """Build the key ring from the two environment values (older keys separated by commas or newlines)."""
    cur = parse_key(current) if current and current.strip() else None
    olds = tuple(parse_key(part, variable="BACKUP_ENCRYPTION_OLD_KEYS")
                 for part in re.split(r"[,\n]", older or "") if part.strip())
    return KeyRing(cur, olds)
