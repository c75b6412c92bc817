"""Add, list, read and remove destinations; credentials are sealed with the master key and never shown again."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from ..alerts import secrets
from ..audit import Actor
from ..catalogue import utcnow
from ..errors import BackupError, ConfigError, InvalidInput, NotFound
from ..storage import LOCATIONS
from .tables import BackupCopy, Destination

if TYPE_CHECKING:
    from ..service import BackupService

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
PREFIX_RE = re.compile(r"[A-Za-z0-9._/-]{0,256}")
REGION_RE = re.compile(r"[a-z0-9-]{1,32}")
CLASS_RE = re.compile(r"[A-Z_]{1,32}")
KEY_ID_RE = re.compile(r"[A-Za-z0-9/+=_-]{3,128}")
MAX_DESTINATIONS = 50


@dataclass(frozen=True)
class S3Settings:
    """Where and how to reach one bucket (no credentials)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    storage_class: str | None = None
    sse: bool = False

    def as_json(self) -> dict[str, Any]:
        """The stored and shown form."""
        return {"bucket": self.bucket, "prefix": self.prefix, "endpointUrl": self.endpoint_url,
                "region": self.region, "pathStyle": self.path_style, "storageClass": self.storage_class,
                "sse": self.sse}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> S3Settings:
        """Read the stored form back."""
        return cls(bucket=data["bucket"], prefix=data.get("prefix") or "", endpoint_url=data.get("endpointUrl"),
                   region=data.get("region"), path_style=bool(data.get("pathStyle")),
                   storage_class=data.get("storageClass"), sse=bool(data.get("sse")))


@dataclass(frozen=True)
class Target:
    """A destination ready to use: its name, settings and (when stored) credentials."""

    name: str
    settings: S3Settings
    credentials: tuple[str, str] | None = field(repr=False)  # (key id, secret), never in a repr; None: AWS chain

    def uri(self, key: str) -> str:
        """The s3:// address of an object."""
        return f"s3://{self.settings.bucket}/{key}"

    def key_for(self, backup_id: str) -> str:
        """The object key a backup is stored under."""
        return f"{self.settings.prefix}{backup_id}"


def check_settings(*, bucket: str, prefix: str | None = None, endpoint_url: str | None = None,
                   region: str | None = None, path_style: bool = False, storage_class: str | None = None,
                   sse: bool = False) -> S3Settings:
    """Pure: validate what an admin typed; say which field is wrong and how."""
    if not isinstance(bucket, str) or not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput("bucket: 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a "
                           "letter or digit")
    prefix = (prefix or "").strip()
    if not PREFIX_RE.fullmatch(prefix) or prefix.startswith("/") or "//" in prefix or \
            any(part in (".", "..") for part in prefix.split("/")):
        raise InvalidInput("prefix: letters, digits, '.', '_', '-' and '/' separated folders (no leading '/', "
                           "no '..'), at most 256 characters")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    endpoint_url = (endpoint_url or "").strip() or None
    if endpoint_url is not None and (not re.fullmatch(r"https?://[A-Za-z0-9.:\[\]_-]{1,253}(/[A-Za-z0-9._/-]*)?",
                                                      endpoint_url) or "@" in endpoint_url):
        raise InvalidInput("endpoint URL: an http:// or https:// address without credentials, e.g. "
                           "https://s3.eu-west-1.amazonaws.com or http://minio.local:9000")
    region = (region or "").strip() or None
    if region is not None and not REGION_RE.fullmatch(region):
        raise InvalidInput("region: lower-case letters, digits and hyphens, e.g. eu-west-1")
    storage_class = (storage_class or "").strip() or None
    if storage_class is not None and not CLASS_RE.fullmatch(storage_class):
        raise InvalidInput("storage class: upper-case letters and '_', e.g. STANDARD_IA or GLACIER_IR")
    return S3Settings(bucket, prefix, endpoint_url, region, bool(path_style), storage_class, bool(sse))


def check_name(name: str) -> str:
    """Pure: a destination's name: short, lower-case, and not a local location's key."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput("destination name: 1-63 lower-case letters, digits, '_' and '-', starting with a letter "
                           "or digit")
    if name in LOCATIONS:
        raise InvalidInput(f"destination name: {name!r} is a local location's key; choose another name")
    return name


def printable_name(name: object) -> str:
    """An untrusted name as bounded, escaped text for the audit log."""
    return str(name).encode("unicode_escape").decode("ascii")[:63]


def _context(name: str) -> str:
    return f"destination:{name}"  # the sealed credentials belong to this destination only


class Destinations:
    """The destinations of one installation."""

    def __init__(self, service: BackupService) -> None:
        self.s = service
        self.db = service.db

    def add(self, actor: Actor, name: str, settings: S3Settings,
            credentials: tuple[str, str] | None = None) -> dict[str, Any]:
        """Store a new S3 destination (credentials sealed); audited without any secret."""
        try:
            check_name(name)
            if credentials is not None:
                key_id, secret = credentials
                if not KEY_ID_RE.fullmatch(key_id or ""):
                    raise InvalidInput("access key id: 3-128 letters, digits and / + = _ -")
                if not secret or len(secret) > 1024 or any(c.isspace() for c in secret):
                    raise InvalidInput("secret access key: 1-1024 characters, no spaces")
            with self.db.reading() as s:
                if s.get(Destination, name) is not None:
                    raise InvalidInput(f"a destination named {name} already exists")
                if len(s.exec(select(Destination.name)).all()) >= MAX_DESTINATIONS:
                    raise InvalidInput(f"at most {MAX_DESTINATIONS} destinations")
            sealed = None if credentials is None else secrets.seal(self.s.keyring(), "\n".join(credentials),
                                                                   _context(name))
        except BackupError as exc:
            self.s.audit.record(actor, "destination.add", printable_name(name), "refused", exc.message)
            raise
        row = Destination(name=name, kind="s3", settings=json.dumps(settings.as_json()), credentials=sealed,
                          created_at=utcnow(), created_by=actor.name)
        with self.db.writing() as s:
            s.add(row)
        self.s.audit.record(actor, "destination.add", name, "ok",
                            f"s3://{settings.bucket}/{settings.prefix} credentials: "
                            f"{'stored' if credentials else 'AWS chain'}")
        return view(row)

    def all(self) -> list[Destination]:
        """Every destination, by name."""
        with self.db.reading() as s:
            return list(s.exec(select(Destination).order_by(Destination.name)).all())

    def list(self) -> list[dict[str, Any]]:
        """Every destination as shown (credentials only as stored / AWS chain)."""
        return [view(d) for d in self.all()]

    def target(self, name: str) -> Target:
        """A destination with its credentials unsealed, to use now."""
        with self.db.reading() as s:
            row = s.get(Destination, name) if isinstance(name, str) else None
        if row is None:
            raise NotFound(f"no destination named {name!r}" if isinstance(name, str) and len(name) < 64
                           else "no such destination")
        creds = None
        if row.credentials:
            try:
                key_id, _, secret = secrets.unseal(self.s.keyring(), row.credentials, _context(row.name)).partition("\n")
            except ConfigError:
                raise ConfigError(f"the stored credentials of destination {row.name} cannot be read (damaged, or "
                                  "sealed with another key); remove the destination and add it again") from None
            creds = (key_id, secret)
        return Target(row.name, S3Settings.from_json(json.loads(row.settings)), creds)

    def remove(self, actor: Actor, name: str) -> None:
        """Forget a destination (the objects in the bucket stay; copies there are no longer reachable)."""
        try:
            self.target(name)
            users = [s.name for s in self.s.schedules.all() if name in (s.destinations or "").split(",")]
            if users:  # its scheduled backups would fail from now on
                raise InvalidInput(f"schedule {users[0]} copies its backups to {name}; change it first "
                                   f"(ehr-backup schedule edit {users[0]} --no-destinations)")
        except BackupError as exc:
            self.s.audit.record(actor, "destination.remove", printable_name(name), "refused", exc.message)
            raise
        with self.db.writing() as s:
            row = s.get(Destination, name)
            if row is not None:
                s.delete(row)
            for copy in s.exec(select(BackupCopy).where(BackupCopy.destination == name)).all():
                s.delete(copy)
        self.s.audit.record(actor, "destination.remove", name, "ok")


def view(row: Destination) -> dict[str, Any]:
    """The public JSON form of a destination: never its credentials."""
    return {"name": row.name, "kind": row.kind, **json.loads(row.settings),
            "credentials": "stored" if row.credentials else "AWS chain",
            "createdAt": row.created_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "createdBy": row.created_by}
