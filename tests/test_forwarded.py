"""Forwarded headers count only from configured proxies, and only valid IP addresses are ever stored."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from ehr_backup.clientaddr import resolve
from ehr_backup.config import Settings, parse_networks
from ehr_backup.errors import ConfigError

from .live_server import LiveServer, live_server, raw_request

API = "/api/admin/backup"
FORMULA = "=HYPERLINK(\"http://evil.example\",\"x\")"
PROXIES = parse_networks("127.0.0.1, 10.0.0.0/8, fd00::/8")


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    ("203.0.113.5", ["6.6.6.6"], "203.0.113.5"),                      # not a proxy: the header is ignored
    ("127.0.0.1", [], "127.0.0.1"),
    ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
    ("127.0.0.1", ["6.6.6.6, 198.51.100.7, 10.1.2.3"], "198.51.100.7"),  # right-most untrusted
    ("127.0.0.1", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),        # repeated headers are one list
    ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),                  # only proxies: the farthest one
    ("127.0.0.1", [FORMULA], "127.0.0.1"),                            # garbage ends the walk
    ("127.0.0.1", ["6.6.6.6, not-an-ip, 10.1.2.3"], "10.1.2.3"),
    ("127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
    ("127.0.0.1", ["[2001:db8::2]"], "2001:db8::2"),
    ("::ffff:127.0.0.1", ["::ffff:198.51.100.9"], "198.51.100.9"),    # IPv4-mapped addresses are IPv4
    ("testclient", ["198.51.100.7"], ""),                              # no IP peer: no address at all
])
def test_the_client_is_the_right_most_address_not_vouched_for_by_a_trusted_proxy(
        peer: str, xff: list[str], expected: str) -> None:
    address, _ = resolve(peer, xff, [], "http", PROXIES)
    assert address == expected
    if address:
        ipaddress.ip_address(address)


def test_forwarded_proto_counts_only_from_proxies() -> None:
    assert resolve("127.0.0.1", [], ["https"], "http", PROXIES) == ("127.0.0.1", "https")
    assert resolve("127.0.0.1", [], ["https"], "ws", PROXIES) == ("127.0.0.1", "wss")
    assert resolve("127.0.0.1", [], ["gopher"], "http", PROXIES) == ("127.0.0.1", "http")
    assert resolve("203.0.113.5", [], ["https"], "http", PROXIES) == ("203.0.113.5", "http")
    assert resolve("127.0.0.1", ["6.6.6.6"], ["https"], "http", ()) == ("127.0.0.1", "http")


def test_malformed_trusted_proxies_are_refused_with_the_variable_named() -> None:
    with pytest.raises(ConfigError, match="EHR_BACKUP_TRUSTED_PROXIES"):
        Settings.from_env({"EHR_BACKUP_TRUSTED_PROXIES": "10.0.0.0/8, localhost"})
    assert Settings.from_env({}).trusted_proxies == ()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with no trusted proxy (the default)."""
    yield from live_server(tmp_path_factory.mktemp("direct"))


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server behind a proxy on 127.0.0.1 that itself trusts proxies in 10.0.0.0/8."""
    yield from live_server(tmp_path_factory.mktemp("proxied"), {"EHR_BACKUP_TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/8"})


def _refused_from(server: LiveServer, detail: str) -> set[str]:
    return {e.address for e in server.audit() if e.outcome == "refused" and e.detail.startswith(detail)}


def test_a_forged_forwarded_for_from_localhost_changes_no_audited_address(direct: LiveServer) -> None:
    for forged in ("6.6.6.6", FORMULA, "6.6.6.6, 10.1.2.3"):
        status, _ = raw_request(direct.port, "GET", f"{API}/list", {"X-Forwarded-For": forged})
        assert status == 401
    assert _refused_from(direct, "please sign in") == {"127.0.0.1"}
    assert all(e.address in ("", "127.0.0.1") for e in direct.audit())


def test_forged_forwarded_for_does_not_escape_the_per_address_token_throttle(direct: LiveServer) -> None:
    for n in range(50):
        status, _ = raw_request(direct.port, "GET", f"{API}/list",
                                {"Authorization": "Bearer ehrb_guess", "X-Forwarded-For": f"203.0.113.{n}"})
        assert status == 401
    status, answer = raw_request(direct.port, "GET", f"{API}/list",
                                 {"Authorization": "Bearer ehrb_guess", "X-Forwarded-For": "198.51.100.250"})
    assert status == 429 and b"too many" in answer


def test_behind_a_configured_proxy_the_right_most_untrusted_address_is_audited(proxied: LiveServer) -> None:
    cases = [  # (header, how the refusal is provoked, the audited detail)
        ("6.6.6.6, 198.51.100.7, 10.1.2.3", {}, "please sign in"),
        ("198.51.100.8", {"Authorization": "Bearer not-a-token"}, "invalid token"),
        (FORMULA, {"Authorization": "Basic abc"}, "use Authorization: Bearer"),
    ]
    for header, extra, _ in cases:
        status, _ = raw_request(proxied.port, "GET", f"{API}/list", {"X-Forwarded-For": header, **extra})
        assert status == 401
    assert _refused_from(proxied, "please sign in") == {"198.51.100.7"}
    assert _refused_from(proxied, "invalid or revoked token") == {"198.51.100.8"}
    assert _refused_from(proxied, "use Authorization: Bearer") == {"127.0.0.1"}
    for entry in proxied.audit():
        if entry.address:
            ipaddress.ip_address(entry.address)
