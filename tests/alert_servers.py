"""Real local servers the alert tests send to: an SMTP server (aiosmtpd: plain, STARTTLS, implicit TLS, login)
and a webhook receiver (http.server) that checks each body's HMAC signature; a self-signed certificate."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import _free_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by itself: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ehr-backup test SMTP")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Inbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.received = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.received.set()
        return "250 OK"


def authenticator(user: str, password: str) -> Any:
    """Accept exactly this user and password."""
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
        return AuthResult(success=ok, handled=False)
    return check


@contextmanager
def smtp_server(mode: str = "plain", cert: tuple[Path, Path] | None = None,
                login: tuple[str, str] | None = None) -> Iterator[tuple[Inbox, int]]:
    """An SMTP server on 127.0.0.1: mode plain, starttls (required) or tls (implicit); with a login when given."""
    import ssl
    inbox = Inbox()
    port = _free_port()
    kwargs: dict[str, Any] = {}
    context = None
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    if mode == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif mode == "tls":
        kwargs.update(ssl_context=context)
    if login is not None:
        kwargs.update(authenticator=authenticator(*login), auth_required=True, auth_require_tls=mode != "plain")
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    if mode == "tls":  # aiosmtpd's readiness probe would speak TLS with the server's own (server-side) context
        def probe() -> None:
            client = ssl.create_default_context()
            client.check_hostname, client.verify_mode = False, ssl.CERT_NONE  # only "is it up?"
            with socket.create_connection(("127.0.0.1", port), 1.0) as raw, client.wrap_socket(raw) as s:
                s.recv(1024)
        controller._trigger_server = probe  # type: ignore[method-assign]
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@dataclass
class Received:
    """One webhook request: its headers, raw body, parsed JSON, and whether its signature was right."""

    headers: dict[str, str]
    body: bytes
    json: dict[str, Any]
    signed: bool


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that answers `statuses` in turn (then 200) and checks signatures."""

    secret: str
    statuses: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/ehr"

    def events(self) -> list[tuple[str, str]]:
        """(event, kind) of every request answered 2xx."""
        return [(r.json["event"], r.json["kind"]) for r in self.got if r.headers.get("x-answered") == "200"]


@contextmanager
def webhook_receiver(secret: str, statuses: list[int] | None = None) -> Iterator[Receiver]:
    """Run a Receiver on a thread for the duration of the block."""
    receiver = Receiver(secret, list(statuses or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
            signed = hmac.compare_digest(self.headers.get("X-EHR-Backup-Signature", ""), expected)
            status = receiver.statuses.pop(0) if receiver.statuses else (200 if signed else 401)
            headers = {k.lower(): v for k, v in self.headers.items()} | {"x-answered": str(status)}
            receiver.got.append(Received(headers, body, json.loads(body), signed))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
