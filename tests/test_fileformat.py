"""The file format: round trips of real bytes, and every kind of damage refused without output."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest

from ehr_backup.errors import KeyNotAvailable, NotAuthentic
from ehr_backup.fileformat import CHECK_LEN, FOOTER, PREFIX, READ_CHUNK, TAG_LEN, EncryptedWriter, OpenedFile
from ehr_backup.keys import KeyRing, generate_key, parse_key

KEY = parse_key(generate_key())
RING = KeyRing(KEY)


def seal(plain: bytes, key=KEY, pieces: int = 3) -> bytes:
    out = io.BytesIO()
    w = EncryptedWriter(out, key, {"description": "t", "compression": "none"})
    step = max(1, len(plain) // pieces)
    for i in range(0, len(plain), step):
        w.write(plain[i:i + step])
    w.finish({"tableRowCounts": {"a": 1}, "dumpBytes": len(plain)})
    return out.getvalue()


def open_bytes(data: bytes, ring: KeyRing = RING) -> OpenedFile:
    return OpenedFile(io.BytesIO(data), ring)


def open_(data: bytes, ring: KeyRing = RING) -> bytes:
    f = open_bytes(data, ring)
    trailer = f.authenticate()
    assert trailer["tableRowCounts"] == {"a": 1}
    return b"".join(f.decrypt())


def regions(data: bytes) -> dict[str, int]:
    """An offset inside each region of a file."""
    hlen = struct.unpack(">I", data[10:14])[0]
    body = PREFIX.size + hlen + CHECK_LEN
    header = data[PREFIX.size:PREFIX.size + hlen].decode()
    end = len(data)
    return {
        "magic": 0, "version": 9, "header length": 12,
        "key id": PREFIX.size + header.index('"keyId"') + 10,
        "salt": PREFIX.size + header.index('"salt"') + 9,
        "iv": PREFIX.size + header.index('"iv"') + 7,
        "description": PREFIX.size + header.index('"description"') + 15,
        "header check": body - 3,
        "body start": body, "body middle": body + (end - body) // 2,
        "trailer": end - TAG_LEN - FOOTER.size - 5,
        "footer": end - TAG_LEN - FOOTER.size + 12,
        "tag": end - 1,
    }


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, READ_CHUNK - 1, READ_CHUNK, READ_CHUNK + 1,
                                  3 * READ_CHUNK + 5])
def test_plaintexts_of_every_awkward_size_round_trip_identically(size: int) -> None:
    plain = os.urandom(size)
    assert hashlib.sha256(open_(seal(plain))).digest() == hashlib.sha256(plain).digest()


def test_two_files_of_the_same_data_share_no_salt_iv_or_ciphertext() -> None:
    a, b = seal(b"same data" * 100), seal(b"same data" * 100)
    fa, fb = open_bytes(a).header.fields, open_bytes(b).header.fields
    assert fa["salt"] != fb["salt"] and fa["iv"] != fb["iv"]
    assert a[-200:] != b[-200:]


def test_body_is_plain_aes_cbc_with_pkcs7_so_openssl_can_read_it() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    plain = b"SELECT 1;\n" * 1000
    data = seal(plain)
    f = open_bytes(data)
    enc, _ = KEY.file_keys(bytes.fromhex(f.header.fields["salt"]), f.header.fields["keyDerivation"])
    body = data[f.header.body_offset:f.header.body_offset + f.body_len]
    d = Cipher(algorithms.AES(enc), modes.CBC(bytes.fromhex(f.header.fields["iv"]))).decryptor()
    out = d.update(body) + d.finalize()
    assert out[:-out[-1]] == plain


@pytest.mark.parametrize("region", list(regions(seal(b"x" * 5000))))
def test_a_flipped_bit_in_any_region_is_refused_as_not_authentic(region: str) -> None:
    data = bytearray(seal(os.urandom(5000)))
    data[regions(bytes(data))[region]] ^= 0x04
    with pytest.raises(NotAuthentic) as err:
        open_(bytes(data))
    assert "not authentic" in str(err.value)


def test_decrypt_fails_before_finishing_when_the_file_changes_after_authentication() -> None:
    # the file changes between the authentication pass and the decryption pass (TOCTOU): consumers
    # (psql in one transaction, an atomic output file) see an error, never a clean end of stream
    plain = os.urandom(3 * READ_CHUNK)
    data = bytearray(seal(plain))
    buf = io.BytesIO(bytes(data))
    f = OpenedFile(buf, RING)
    f.authenticate()
    raw = buf.getbuffer()
    raw[len(data) - TAG_LEN - FOOTER.size - 40] ^= 1  # damage the trailer region
    del raw
    released = b""
    with pytest.raises(NotAuthentic):
        for piece in f.decrypt():
            released += piece
    assert len(released) <= len(plain)


@pytest.mark.parametrize("keep", [0, 5, 14, 100, -1, -31, -32, -33, -60, -200])
def test_truncation_anywhere_is_refused(keep: int) -> None:
    data = seal(os.urandom(4000))
    with pytest.raises(NotAuthentic):
        open_(data[:keep])


def test_appended_bytes_are_refused() -> None:
    with pytest.raises(NotAuthentic):
        open_(seal(b"abc" * 1000) + b"\0" * 16)


@pytest.mark.parametrize("op", ["swap", "drop", "duplicate"])
def test_reordered_dropped_or_duplicated_blocks_are_refused(op: str) -> None:
    data = seal(os.urandom(10_000))
    f = open_bytes(data)
    s = f.header.body_offset + 64
    a, b = data[s:s + 16], data[s + 16:s + 32]
    changed = {"swap": data[:s] + b + a + data[s + 32:], "drop": data[:s] + data[s + 16:],
               "duplicate": data[:s] + a + data[s:]}[op]
    with pytest.raises(NotAuthentic):
        open_(changed)


def test_a_file_made_with_another_key_names_the_missing_key_before_reading_the_body() -> None:
    other = parse_key(generate_key())
    data = seal(b"secret", key=other)
    with pytest.raises(KeyNotAvailable) as err:
        open_bytes(data)
    assert other.key_id in str(err.value)


def test_an_older_key_in_the_ring_still_decrypts() -> None:
    old = parse_key(generate_key())
    data = seal(b"from last year", key=old)
    assert open_(data, KeyRing(KEY, (old,))) == b"from last year"


def test_a_forged_key_id_matching_ours_with_a_different_key_is_refused() -> None:
    other = parse_key(generate_key())
    data = bytearray(seal(b"forged", key=other))
    text = bytes(data).replace(other.key_id.encode(), KEY.key_id.encode())
    # recompute the plain header check so that only the MAC can catch it
    hlen = struct.unpack(">I", text[10:14])[0]
    end = PREFIX.size + hlen
    text = text[:end] + hashlib.sha256(text[:end]).digest()[:CHECK_LEN] + text[end + CHECK_LEN:]
    with pytest.raises(NotAuthentic):
        open_(text)


def test_passphrase_keys_stretch_with_scrypt_and_round_trip() -> None:
    key = parse_key("passphrase:correct horse battery staple")
    data = seal(b"hello", key=key)
    f = open_bytes(data, KeyRing(key))
    assert f.header.fields["keyDerivation"]["name"] == "scrypt"
    assert b"".join((f.authenticate(), f.decrypt())[1]) == b"hello"


def _rewrite_header(data: bytes, change) -> bytes:
    """Edit the JSON header and recompute the plain check, as an attacker can."""
    import json
    hlen = struct.unpack(">I", data[10:14])[0]
    fields = json.loads(data[PREFIX.size:PREFIX.size + hlen])
    change(fields)
    blob = json.dumps(fields).encode()
    prefix = data[:10] + struct.pack(">I", len(blob)) + blob
    return prefix + hashlib.sha256(prefix).digest()[:CHECK_LEN] + data[PREFIX.size + hlen + CHECK_LEN:]


@pytest.mark.parametrize("change", [
    lambda f: f["keyDerivation"].update(n=2**20, r=32),
    lambda f: f["keyDerivation"].update(p=99),
    lambda f: f.update(keyDerivation={"name": "raw"}),
    lambda f: f.update(keyId="k0123456789abcdef\\n\\x1b[32mfake line"),
    lambda f: f.update(keyId={"x": 1}),
    lambda f: f.update(salt="00"),
])
def test_forged_header_parameters_are_not_authentic_and_cost_nothing(change) -> None:
    key = parse_key("passphrase:correct horse battery staple")
    data = _rewrite_header(seal(b"hello", key=key), change)
    with pytest.raises(NotAuthentic):
        open_(data, KeyRing(key))
