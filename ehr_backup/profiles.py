"""Database profiles: named databases to back up, each a URL without its password plus a password source.

`DATABASE_URL` (or the demo cluster) stays the zero-configuration case: it is the implicit profile named
"default" and is never stored. A profile's password is never in its URL (a URL holding one is refused);
it comes from an environment variable read when connecting, from libpq's own `.pgpass` / service file,
or is stored encrypted with the master key (the scheme alert channel secrets use: alerts/secrets.py).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from . import pg
from .alerts.profile_thresholds import forget as forget_thresholds
from .alerts.secrets import seal, unseal
from .audit import Actor
from .catalogue import utcnow
from .errors import BackupError, ConfigError, InvalidInput, NotFound
from .models import BackupRecord, DatabaseProfile, Schedule
from .pg import ConnInfo

if TYPE_CHECKING:
    from .service import BackupService

DEFAULT = "default"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
NAME_RULE = "1-40 characters: lower-case letters a-z, digits, '_' and '-', starting with a letter or digit"
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
# Variables holding our own secrets: a profile reading its "password" from one of them would send the
# master key (or the audit key) to whatever server the profile names.
_OWN_SECRETS = ("BACKUP_ENCRYPTION_", "EHR_BACKUP_")
MAX_URL = 2000


def check_name(name: Any) -> str:
    """A profile name as typed, or InvalidInput saying what a name may hold."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = _target(name) if isinstance(name, str) else "that"
        raise InvalidInput(f"database profile name {shown!r} is not allowed: {NAME_RULE}")
    return name


def check_env_name(name: Any) -> str:
    """An environment variable's name that may hold a database password."""
    if not isinstance(name, str) or not ENV_RE.fullmatch(name):
        raise InvalidInput("the password variable must be an environment variable's name (letters, digits, '_')")
    if name.upper().startswith(_OWN_SECRETS) or name.upper() == "DATABASE_URL":
        raise InvalidInput(f"{name} holds EHR Backup's own settings or keys, not a database password")
    return name


def parse_url(url: Any) -> ConnInfo:
    """A profile's connection URL: valid, naming a database, and holding no password."""
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL:
        raise InvalidInput("give the database's connection URL, e.g. postgresql://backup@db.example.org:5432/ehr")
    conn = ConnInfo.parse(url.strip())
    if conn.params.get("password"):
        # refused rather than stripped: a URL's password ends up in shell history, process lists and
        # logs; storing it silently would suggest it were safe there
        raise InvalidInput("the URL holds a password; give the URL without it and the password with "
                           "--password-env VAR or --password-stdin (stored encrypted), or in ~/.pgpass")
    return conn


def db_key(database: str, profile: str | None) -> str:
    """The name rotation groups a backup's database by: its own name, qualified by a non-default profile,
    so two servers' databases of the same name never share a rotation or a hold."""
    return database if not profile or profile == DEFAULT else f"{database}@{profile}"


def split_key(key: str) -> tuple[str, str | None]:
    """(database, profile) of a db_key; profile None for the default one."""
    database, sep, profile = key.rpartition("@")
    if sep and NAME_RE.fullmatch(profile):
        return database, profile
    return key, None


def _context(name: str) -> str:
    return f"database-profile:{name}"


class Profiles:
    """Add, list, test and remove profiles; resolve a profile name to a connection."""

    def __init__(self, service: BackupService) -> None:
        self.s = service
        self.db = service.db

    # ----- reading ---------------------------------------------------------------------------------------
    def all(self) -> list[DatabaseProfile]:
        """Stored profiles, by name."""
        with self.db.reading() as s:
            return list(s.exec(select(DatabaseProfile).order_by(DatabaseProfile.name)).all())  # type: ignore[arg-type]

    def get(self, name: str) -> DatabaseProfile:
        """A stored profile, or NotFound naming the known ones."""
        check_name(name)
        with self.db.reading() as s:
            row = s.exec(select(DatabaseProfile).where(DatabaseProfile.name == name)).first()
        if row is None:
            known = ", ".join([DEFAULT, *(p.name for p in self.all())])
            raise NotFound(f"no database profile named {name!r} (known: {known}); add it with "
                           "`ehr-backup database add`")
        return row

    def checked(self, name: str | None) -> str | None:
        """The stored name of a profile given by a person: None for the default one; NotFound if unknown."""
        if name is None or name == "" or name == DEFAULT:
            return None
        return self.get(name).name

    def is_profile(self, name: str | None) -> bool:
        """Whether a name given as `database` is a profile's (the default's included)."""
        if name == DEFAULT:
            return True
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            return False
        with self.db.reading() as s:
            return s.exec(select(DatabaseProfile.id).where(DatabaseProfile.name == name)).first() is not None

    def connection(self, name: str | None) -> ConnInfo:
        """The connection of a profile (None or "default": DATABASE_URL, else the demo cluster), with its
        password from where the profile says."""
        if name is None or name == "" or name == DEFAULT:
            return self.s.connection()
        row = self.get(name)
        conn = ConnInfo.parse(row.url)
        password = self._password(row)
        return ConnInfo({**conn.params, "password": password}) if password else conn

    def _password(self, row: DatabaseProfile) -> str | None:
        if row.password_env:
            value = os.environ.get(row.password_env)
            if not value:
                raise ConfigError(f"database profile {row.name} reads its password from {row.password_env}, "
                                  "which is not set")
            return value
        if row.password_sealed:
            try:
                return unseal(self.s.keyring(), row.password_sealed, _context(row.name))
            except ConfigError:
                raise ConfigError(f"the stored password of database profile {row.name} cannot be read (damaged, "
                                  "or stored with another key); remove the profile and add it again") from None
        return None  # libpq's own: ~/.pgpass, PGPASSFILE, a service file

    def view(self, row: DatabaseProfile, backups: int = 0) -> dict[str, Any]:
        """The public form of a stored profile: never its password."""
        conn = ConnInfo.parse(row.url)
        source = (f"environment variable {row.password_env}" if row.password_env
                  else "stored encrypted" if row.password_sealed else "libpq (.pgpass or service file)")
        return {"name": row.name, "url": row.url, "server": conn.display, "database": conn.dbname,
                "passwordSource": source, "implicit": False, "createdAt": _iso(row.created_at),
                "createdBy": row.created_by, "backups": backups}

    def default_view(self, backups: int = 0) -> dict[str, Any]:
        """The implicit profile: DATABASE_URL's database, or the demo cluster's."""
        view: dict[str, Any] = {"name": DEFAULT, "implicit": True, "createdAt": None, "createdBy": "",
                                "backups": backups}
        if self.s.settings.database_url:
            try:
                conn = ConnInfo.parse(self.s.settings.database_url)
                view.update(url=conn.redact(self.s.settings.database_url), server=conn.display,
                            database=conn.dbname, passwordSource="DATABASE_URL")
            except BackupError:
                view.update(url="", server="", database="", passwordSource="DATABASE_URL (not valid)")
        else:
            view.update(url="", server="demo cluster", database="", passwordSource="demo cluster")
        return view

    def views(self) -> list[dict[str, Any]]:
        """Every profile, the implicit default first, with the number of catalogued backups of each."""
        counts = self._counts()
        return [self.default_view(counts.get(None, 0)), *(self.view(p, counts.get(p.name, 0)) for p in self.all())]

    def _counts(self) -> dict[str | None, int]:
        from sqlalchemy import func

        with self.db.reading() as s:
            rows = s.exec(select(BackupRecord.profile, func.count()).group_by(BackupRecord.profile)).all()
        counts: dict[str | None, int] = {}
        for profile, n in rows:
            key = None if not profile or profile == DEFAULT else profile
            counts[key] = counts.get(key, 0) + int(n)
        return counts

    # ----- changing ----------------------------------------------------------------------------------------
    def add(self, actor: Actor, name: str, url: str, *, password_env: str | None = None,
            password: str | None = None) -> dict[str, Any]:
        """Store a profile (audited; the password, when given, only encrypted and never in the audit log)."""
        try:
            check_name(name)
            if name == DEFAULT:
                raise InvalidInput("the name default is DATABASE_URL's database; choose another name")
            conn = parse_url(url)
            if password_env is not None and password is not None:
                raise InvalidInput("give the password one way: --password-env VAR or --password-stdin")
            if password_env is not None:
                password_env = check_env_name(password_env)
            if password is not None:
                password = password.rstrip("\r\n")
                if not password or len(password) > 1000 or "\n" in password or "\x00" in password:
                    raise InvalidInput("the password must be one line of 1-1000 characters")
            sealed = seal(self.s.keyring(), password, _context(name)) if password else None
        except BackupError as exc:
            self.s.audit.record(actor, "database.add", _target(name), "refused", exc.message)
            raise
        source = f"env {password_env}" if password_env else "stored encrypted" if sealed else "libpq"
        self.s.audit.record(actor, "database.add", name, "started", f"{conn.display}; password: {source}")
        try:
            with self.db.writing() as s:
                s.add(DatabaseProfile(name=name, url=url.strip(), password_env=password_env, password_sealed=sealed,
                                      created_at=utcnow(), created_by=actor.name))
        except IntegrityError:
            message = f"a database profile named {name} exists already; remove it first to change it"
            self.s.audit.record(actor, "database.add", name, "refused", message)
            raise InvalidInput(message) from None
        self.s.audit.record(actor, "database.add", name, "ok", f"{conn.display}; password: {source}")
        return self.view(self.get(name))

    def remove(self, actor: Actor, name: str) -> None:
        """Forget a profile; refused while a schedule backs it up. Its backups stay (and keep its name)."""
        try:
            row = self.get(check_name(name))
            with self.db.reading() as s:
                users = list(s.exec(select(Schedule.name).where(Schedule.database == row.name)).all())
            if users:
                raise InvalidInput(f"schedules {', '.join(users)} back up database profile {name}: change or "
                                   "remove them first")
        except BackupError as exc:
            self.s.audit.record(actor, "database.remove", _target(name), "refused", exc.message)
            raise
        with self.db.writing() as s:
            current = s.get(DatabaseProfile, row.id)
            if current is not None:
                s.delete(current)
            forget_thresholds(s, row.name)  # a profile added again later under this name starts afresh
        self.s.audit.record(actor, "database.remove", name, "ok")

    def test(self, actor: Actor, name: str | None) -> dict[str, Any]:
        """Connect with a profile: the server's version and the database's size, or the reason it failed."""
        label = name or DEFAULT
        try:
            conn = self.connection(name)
            facts = pg.server_facts(conn)
        except BackupError as exc:
            self.s.audit.record(actor, "database.test", _target(label), "failed", exc.message)
            raise
        self.s.audit.record(actor, "database.test", label, "ok", conn.display)
        return {"name": label, "server": conn.display, "database": conn.dbname, "serverVersion": facts.version,
                "databaseSize": facts.database_size, "ok": True}


def _target(name: Any) -> str:
    return str(name).encode("unicode_escape").decode("ascii")[:80]


def _iso(value: datetime | None) -> str | None:
    from .catalogue import as_utc

    value = as_utc(value)
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None
