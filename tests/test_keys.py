"""Key parsing: accepted forms, clear refusals that never echo the key, rotation."""

from __future__ import annotations

import base64

import pytest

from ehr_backup.errors import ConfigError, KeyNotAvailable
from ehr_backup.keys import generate_key, load_keyring, parse_key

RAW = bytes(range(32))


@pytest.mark.parametrize("text", ["hex:" + RAW.hex(), RAW.hex(), RAW.hex().upper(),
                                  "base64:" + base64.b64encode(RAW).decode(), base64.b64encode(RAW).decode(),
                                  base64.urlsafe_b64encode(RAW).decode()])
def test_a_32_byte_key_is_accepted_as_hex_or_base64(text: str) -> None:
    key = parse_key(text)
    assert key.secret == RAW and key.kind == "raw"
    assert key.key_id == parse_key("hex:" + RAW.hex()).key_id


@pytest.mark.parametrize("text", ["", "   ", "hex:abcd", "hex:" + "zz" * 32, "base64:AAAA", "short",
                                  "passphrase:too short", "hex:" + RAW.hex() + "00"])
def test_missing_short_or_malformed_keys_are_refused_with_how_to_make_one(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_key(text)
    assert "ehr-backup keygen" in str(err.value)
    if len(text) > 8:
        assert text.split(":")[-1] not in str(err.value)


def test_keygen_output_is_accepted_and_random() -> None:
    a, b = generate_key(), generate_key()
    assert a != b and parse_key(a).kind == "raw"


def test_the_key_never_appears_in_repr() -> None:
    key = parse_key("hex:" + RAW.hex())
    assert RAW.hex() not in repr(key) and str(RAW) not in repr(key)


def test_key_id_is_a_fingerprint_not_the_key() -> None:
    key = parse_key("hex:" + RAW.hex())
    assert key.key_id not in RAW.hex() and len(key.key_id) == 17


def test_rotation_ring_finds_old_keys_and_names_unknown_ids() -> None:
    old1, old2 = generate_key(), "passphrase:an old passphrase, with comma"
    ring = load_keyring(generate_key(), f"{old1}\n{old2}".replace(", with comma", " with no comma"))
    assert ring.get(parse_key(old1).key_id).key_id == parse_key(old1).key_id
    with pytest.raises(KeyNotAvailable) as err:
        ring.get("kdeadbeefdeadbeef")
    assert "kdeadbeefdeadbeef" in str(err.value)


def test_no_current_key_refuses_to_encrypt() -> None:
    with pytest.raises(ConfigError):
        load_keyring(None, None).encryption_key()


def test_the_audit_key_is_derived_apart_from_file_keys_and_the_same_every_time() -> None:
    from ehr_backup.keys import audit_key, audit_key_id
    for text in (generate_key(), "passphrase:a long enough passphrase"):
        master = parse_key(text)
        key = audit_key(master)
        assert len(key) == 32 and key == audit_key(parse_key(text)) and key != master.secret
        assert key not in master.file_keys(b"\0" * 32, master.derivation())
        assert audit_key_id(key).startswith("a") and audit_key_id(key) != master.key_id
