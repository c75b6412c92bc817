"""The on-disk format: a self-describing header, an AES-256-CBC body, an encrypted trailer, one HMAC.

Layout (all integers big-endian; see docs/FORMAT.md):

    magic "EHR-BKP\\0" (8) | version u16 | header length H u32 | header JSON (H) | header check (16)
    body: AES-256-CBC(PKCS#7) of the compressed dump, one contiguous stream (openssl can decrypt it)
    trailer IV (16) | trailer: AES-256-CBC(PKCS#7) of a JSON object (row counts, sizes)
    footer magic "EHR-END\\0" (8) | body length u64 | trailer length u32 | reserved u32
    tag: HMAC-SHA256(mac key, every byte before the tag) (32)

Encryption and MAC keys come from HKDF-SHA256(master, salt, info). Any change, truncation or
reordering anywhere in the file changes what the single tag covers, so it is refused as a whole.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import NotAuthentic, ToolError


class TrailerTooLarge(ToolError):
    """What a backup records beside its dump does not fit the trailer's limit."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the backup's index and records ({size // 2**20} MiB) exceed the {MAX_TRAILER // 2**20} "
                         "MiB a backup file can carry; no backup was written")
from .keys import KeyRing, MasterKey

MAGIC = b"EHR-BKP\0"
FOOTER_MAGIC = b"EHR-END\0"
VERSION = 2  # 2: the trailer also indexes the body (frames, segment hashes, TOC); 1 is still read
READABLE_VERSIONS = (1, 2)
SEGMENT = 4 * 1024 * 1024  # body bytes per SHA-256 listed in the trailer (random access, see below)
PREFIX = struct.Struct(">8sHI")
FOOTER = struct.Struct(">8sQII")
CHECK_LEN = 16
TAG_LEN = 32
BLOCK = 16
MAX_HEADER = 64 * 1024
MAX_TRAILER = 64 * 1024 * 1024
READ_CHUNK = 1024 * 1024
TAIL_LEN = 16 + FOOTER.size + TAG_LEN  # smallest trailer region: IV + footer + tag


@dataclass(frozen=True)
class Header:
    """The parsed plaintext header and where the body starts."""

    fields: dict[str, Any]
    body_offset: int
    version: int = VERSION

    @property
    def key_id(self) -> str:
        """Id of the key the file was encrypted with."""
        return str(self.fields.get("keyId", ""))


def _encryptor(key: bytes, iv: bytes) -> Any:
    return Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()


def _decryptor(key: bytes, iv: bytes) -> Any:
    return Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()


def _pkcs7(length: int) -> bytes:
    pad = BLOCK - length % BLOCK
    return bytes([pad]) * pad


def _unpad(block: bytes) -> bytes:
    if not block:
        raise NotAuthentic()
    pad = block[-1]
    if not 1 <= pad <= BLOCK or block[-pad:] != bytes([pad]) * pad:
        raise NotAuthentic()
    return block[:-pad]


class EncryptedWriter:
    """Stream plaintext into an authenticated file: call write() any number of times, then finish()."""

    def __init__(self, out: IO[bytes], key: MasterKey, fields: dict[str, Any]) -> None:
        salt, iv = os.urandom(32), os.urandom(BLOCK)
        derivation = key.derivation()
        self._enc_key, mac_key = key.file_keys(salt, derivation)
        self._out = out
        self._mac = hmac.new(mac_key, digestmod=hashlib.sha256)
        self._cipher = _encryptor(self._enc_key, iv)
        self._buf = bytearray(READ_CHUNK + BLOCK)
        self.plain_bytes = 0
        self.body_bytes = 0
        self._segments = bytearray()  # SHA-256 of each SEGMENT of the body, for verified random reads
        self._segment = hashlib.sha256()
        self._segment_fill = 0
        header = dict(fields, format=VERSION, cipher="AES-256-CBC", mac="HMAC-SHA256", kdf="HKDF-SHA256",
                      keyDerivation=derivation, keyId=key.key_id, salt=salt.hex(), iv=iv.hex())
        blob = json.dumps(header, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode()
        prefix = PREFIX.pack(MAGIC, VERSION, len(blob)) + blob
        self._emit(prefix + hashlib.sha256(prefix).digest()[:CHECK_LEN])
        self.header = header

    def _emit(self, data: bytes | memoryview) -> None:
        self._mac.update(data)
        self._out.write(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt and write a piece of plaintext."""
        n = len(data)
        if len(self._buf) < n + BLOCK:
            self._buf = bytearray(n + BLOCK)
        produced = self._cipher.update_into(data, self._buf)
        if produced:
            self._body(memoryview(self._buf)[:produced])
        self.plain_bytes += n
        return n

    def _body(self, data: bytes | memoryview) -> None:
        self._emit(data)
        self.body_bytes += len(data)
        view = memoryview(data)
        while view:
            take = min(SEGMENT - self._segment_fill, len(view))
            self._segment.update(view[:take])
            self._segment_fill += take
            view = view[take:]
            if self._segment_fill == SEGMENT:
                self._segments += self._segment.digest()
                self._segment, self._segment_fill = hashlib.sha256(), 0

    def finish(self, trailer: dict[str, Any]) -> None:
        """Pad the body, append the encrypted trailer, the footer and the tag."""
        last = self._cipher.update(_pkcs7(self.plain_bytes)) + self._cipher.finalize()
        self._body(last)
        if self._segment_fill:
            self._segments += self._segment.digest()
        trailer = dict(trailer, segments={"size": SEGMENT, "sha256": base64.b64encode(self._segments).decode()})
        iv = os.urandom(BLOCK)
        plain = json.dumps(trailer, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode()
        if len(plain) + BLOCK > MAX_TRAILER:  # never write a file that cannot be read back
            raise TrailerTooLarge(len(plain))
        enc = _encryptor(self._enc_key, iv)
        sealed = enc.update(plain + _pkcs7(len(plain))) + enc.finalize()
        self._emit(iv + sealed + FOOTER.pack(FOOTER_MAGIC, self.body_bytes, len(sealed), 0))
        self._out.write(self._mac.digest())


def read_header(fh: IO[bytes]) -> Header:
    """Read and sanity-check the plaintext header; any damage is reported as not authentic."""
    fh.seek(0)
    prefix = fh.read(PREFIX.size)
    if len(prefix) != PREFIX.size:
        raise NotAuthentic()
    magic, version, length = PREFIX.unpack(prefix)
    if magic != MAGIC or version not in READABLE_VERSIONS or length > MAX_HEADER:
        raise NotAuthentic()
    blob = fh.read(length)
    check = fh.read(CHECK_LEN)
    if len(blob) != length or not hmac.compare_digest(check, hashlib.sha256(prefix + blob).digest()[:16]):
        raise NotAuthentic()
    try:
        fields = json.loads(blob)
        if len(bytes.fromhex(fields["salt"])) != 32 or len(bytes.fromhex(fields["iv"])) != BLOCK:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise NotAuthentic() from None
    if not isinstance(fields, dict) or not isinstance(fields.get("keyId"), str):
        raise NotAuthentic()
    return Header(fields, PREFIX.size + length + CHECK_LEN, version)


class OpenedFile:
    """A backup file whose key is known; authenticate() and decrypt() use the same open handle."""

    def __init__(self, fh: IO[bytes], keyring: KeyRing) -> None:
        self.fh = fh
        self.header = read_header(fh)
        key = keyring.get(self.header.key_id)  # raises KeyNotAvailable before the body is read
        f = self.header.fields
        try:
            self._enc_key, self._mac_key = key.file_keys(bytes.fromhex(f["salt"]), f["keyDerivation"])
        except (KeyError, TypeError, AttributeError, ValueError):
            raise NotAuthentic() from None
        self.enc_key = self._enc_key  # for readers that decrypt parts of the body (randomread)
        self.size = fh.seek(0, os.SEEK_END)
        self.sha256: str | None = None  # of the whole file, known after authenticate()
        self.body_len, self.trailer_len = self._footer()

    def _footer(self) -> tuple[int, int]:
        start = self.size - TAG_LEN - FOOTER.size
        if start < self.header.body_offset + BLOCK + BLOCK:
            raise NotAuthentic()
        self.fh.seek(start)
        magic, body, trailer, _ = FOOTER.unpack(self.fh.read(FOOTER.size))
        if (magic != FOOTER_MAGIC or body % BLOCK or trailer % BLOCK or not body or not trailer
                or trailer > MAX_TRAILER or self.header.body_offset + body + BLOCK + trailer != start):
            raise NotAuthentic()
        return body, trailer

    def _mac_range(self, mac: Any, start: int, end: int) -> Iterator[bytes]:
        """Yield the file's bytes in [start, end) while feeding them to the MAC."""
        self.fh.seek(start)
        left = end - start
        while left > 0:
            chunk = self.fh.read(min(READ_CHUNK, left))
            if not chunk:
                raise NotAuthentic()
            mac.update(chunk)
            left -= len(chunk)
            yield chunk

    def _check_tag(self, mac: Any) -> None:
        self.fh.seek(self.size - TAG_LEN)
        if not hmac.compare_digest(mac.digest(), self.fh.read(TAG_LEN)):
            raise NotAuthentic()

    def authenticate(self, progress: Any = None) -> dict[str, Any]:
        """Check the tag over the whole file, then return the decrypted trailer."""
        mac = hmac.new(self._mac_key, digestmod=hashlib.sha256)
        sha = hashlib.sha256()
        done = 0
        # the SHA-256 of the file runs on a second thread while the next chunk is read and MACed
        # (both release the GIL), so the authentication pass costs one hash, not two
        with ThreadPoolExecutor(1) as pool:
            pending: Future[None] | None = None
            for chunk in self._mac_range(mac, 0, self.size - TAG_LEN):
                if pending is not None:
                    pending.result()
                pending = pool.submit(sha.update, chunk)
                done += len(chunk)
                if progress:
                    progress(done, self.size)
            if pending is not None:
                pending.result()
        self._check_tag(mac)
        self.fh.seek(self.size - TAG_LEN)
        sha.update(self.fh.read(TAG_LEN))
        self.sha256 = sha.hexdigest()
        return self._trailer()

    def _trailer(self) -> dict[str, Any]:
        start = self.header.body_offset + self.body_len
        self.fh.seek(start)
        iv = self.fh.read(BLOCK)
        sealed = self.fh.read(self.trailer_len)
        dec = _decryptor(self._enc_key, iv)
        try:
            data = json.loads(_unpad(dec.update(sealed) + dec.finalize()))
        except ValueError:
            raise NotAuthentic() from None
        if not isinstance(data, dict):
            raise NotAuthentic()
        return data

    def decrypt(self) -> Iterator[bytes]:
        """Yield the decrypted body, re-checking the tag before the last piece is released."""
        mac = hmac.new(self._mac_key, digestmod=hashlib.sha256)
        prefix_end = self.header.body_offset
        for _ in self._mac_range(mac, 0, prefix_end):
            pass
        dec = _decryptor(self._enc_key, bytes.fromhex(self.header.fields["iv"]))
        buf = bytearray(READ_CHUNK + BLOCK)
        held = b""  # the last decrypted block is held back until padding and tag are checked
        for chunk in self._mac_range(mac, prefix_end, prefix_end + self.body_len):
            if len(buf) < len(chunk) + BLOCK:
                buf = bytearray(len(chunk) + BLOCK)
            n = dec.update_into(chunk, buf)
            out = held + bytes(buf[:n])
            if len(out) > BLOCK:
                yield out[:-BLOCK]
                held = out[-BLOCK:]
            else:
                held = out
        held += dec.finalize()
        for _ in self._mac_range(mac, prefix_end + self.body_len, self.size - TAG_LEN):
            pass
        self._check_tag(mac)
        last = _unpad(held)
        if last:
            yield last


def peek_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the unauthenticated header fields of a file (for listing files the catalogue lacks)."""
    with open(path, "rb") as fh:
        return read_header(fh).fields

