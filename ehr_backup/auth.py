"""Who may act: users and roles, login with throttling, server-side sessions, API tokens."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from .audit import Actor, AuditLog
from .catalogue import as_utc, utcnow
from .config import Settings
from .db import Database
from .errors import BackupError, Forbidden, InvalidInput, NotFound, Unauthenticated
from .models import ApiToken, User, WebSession
from .passwords import MIN_LENGTH, check_password, dummy_hash, hash_password
from .refusals import RefusalAudit
from .text import clean_text
from .throttle import AccountState, LoginThrottle, Throttled, wait_text
from .token_expiry import TokenExpired, is_expired, stamp

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "ehrb_"
TICKET_SECONDS = 60
TOUCH_SECONDS = 5
WRONG_CREDENTIALS = "wrong user name or password"
# what an API token may do: admin, whatever its user may (an administrator: everything); metrics, only read
# GET /metrics (a Prometheus server's token; refused everywhere else, whoever its user is)
SCOPES = ("admin", "metrics")


@dataclass(frozen=True)
class Principal:
    """An authenticated user, and how they proved it."""

    user_id: int
    username: str
    is_admin: bool
    via: str  # "session" | "token" | "cli"
    address: str = ""
    scope: str = "admin"  # a token's scope (see SCOPES); sessions and the CLI have the user's full rights

    def actor(self) -> Actor:
        """The audit actor for this principal."""
        return Actor(self.username, self.address, self.is_admin)


@dataclass(frozen=True)
class Ticket:
    """A pending exchange of a page login for the session cookie, bound to one browser."""

    token: str
    browser_hash: str  # SHA-256 of the browser's nonce cookie
    expires: float  # time.monotonic()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_username(name: str) -> str:
    """Validate a user name."""
    if not USERNAME_RE.fullmatch(name or ""):
        raise InvalidInput("user names are 1-64 letters, digits and . _ @ - (starting with a letter or digit)")
    return name


def check_new_password(password: str) -> str:
    """Refuse passwords that are too short."""
    if len(password or "") < MIN_LENGTH:
        raise InvalidInput(f"passwords need at least {MIN_LENGTH} characters")
    return password


class AuthService:
    """Users, sessions, tokens and login throttling, all audited."""

    def __init__(self, db: Database, audit: AuditLog, settings: Settings) -> None:
        self._db = db
        self._audit = audit
        self._idle = timedelta(minutes=settings.idle_minutes)
        self._absolute = timedelta(hours=settings.session_hours)
        self._tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()
        self.refusals = RefusalAudit(audit)
        self.throttle = LoginThrottle(db)

    # ----- users -------------------------------------------------------------------------------------
    def has_users(self) -> bool:
        """Whether any user exists (else the first admin is still to be created)."""
        with self._db.reading() as s:
            return s.exec(select(func.count()).select_from(User)).one() > 0

    def users(self) -> Sequence[User]:
        """All users by name."""
        with self._db.reading() as s:
            return s.exec(select(User).order_by(User.username)).all()

    def tokens(self) -> Sequence[ApiToken]:
        """All API tokens, newest first."""
        with self._db.reading() as s:
            return s.exec(select(ApiToken).order_by(col(ApiToken.created_at).desc())).all()

    def _user(self, s: object, username: str) -> User:
        user = s.exec(select(User).where(User.username == username)).first()  # type: ignore[attr-defined]
        if user is None:
            raise NotFound(f"no user named {username}")
        return user  # type: ignore[no-any-return]

    def add_user(self, actor: Actor, username: str, password: str, *, admin: bool = False) -> User:
        """Create a user."""
        try:
            check_username(username)
            check_new_password(password)
            self._audit.record(actor, "user.add", username, "started", "admin" if admin else "user")
            with self._db.writing() as s:
                user = User(username=username, password_hash=hash_password(password), is_admin=admin,
                            created_at=utcnow(), password_changed_at=utcnow())
                s.add(user)
        except IntegrityError:
            self._audit.record(actor, "user.add", username, "failed", "the user exists already")
            raise InvalidInput(f"a user named {username} exists already") from None
        except BackupError as exc:
            self._audit.record(actor, "user.add", username[:64], "refused", exc.message)
            raise
        self._audit.record(actor, "user.add", username, "ok", "admin" if admin else "user")
        return user

    def add_first_admin(self, actor: Actor, username: str, password: str) -> User:
        """Create the first administrator, only while no user exists (one transaction: setups cannot race)."""
        try:
            check_username(username)
            check_new_password(password)
            hashed = hash_password(password)  # before the write lock: hashing takes a while
            self._audit.record(actor, "user.add", username, "started", "first admin")
            with self._db.writing() as s:  # BEGIN IMMEDIATE: the check and the insert are one step
                if s.exec(select(func.count()).select_from(User)).one() > 0:
                    raise Forbidden("an administrator exists already: sign in instead")
                user = User(username=username, password_hash=hashed, is_admin=True, created_at=utcnow(),
                            password_changed_at=utcnow())
                s.add(user)
        except BackupError as exc:
            self._audit.record(actor, "user.add", username[:64], "refused", exc.message)
            raise
        self._audit.record(actor, "user.add", username, "ok", "first admin")
        return user

    def update_user(self, actor: Actor, username: str, *, disabled: bool | None = None,
                    admin: bool | None = None, password: str | None = None) -> User:
        """Disable/enable, change role, or reset the password of a user; ends their sessions when needed."""
        action = "user.passwd" if password is not None else "user.role" if admin is not None else "user.disable"
        detail = {"user.passwd": "password reset", "user.role": f"admin={admin}",
                  "user.disable": f"disabled={disabled}"}[action]
        try:
            if password is not None:
                check_new_password(password)
            if actor.name == username and (disabled or admin is False):
                raise InvalidInput("you cannot disable yourself or remove your own admin role")
            self._audit.record(actor, action, username, "started", detail)
            with self._db.writing() as s:
                user = self._user(s, username)
                if disabled is not None:
                    user.disabled = disabled
                if admin is not None:
                    user.is_admin = admin
                if password is not None:
                    user.password_hash = hash_password(password)
                    user.password_changed_at = utcnow()
                s.add(user)
                if disabled or password is not None or admin is False:
                    self._end_user_sessions(s, user.id or 0)
        except BackupError as exc:
            self._audit.record(actor, action, username[:64], "refused", exc.message)
            raise
        self._audit.record(actor, action, username, "ok", detail)
        return user

    # ----- login and sessions ------------------------------------------------------------------------
    def login(self, username: str, password: str, address: str, browser: str = "") -> tuple[Principal, str]:
        """Check credentials, throttled per account and address; return the principal and a session token.

        `browser` is the browser's nonce cookie: a browser that signed in to the account before is
        throttled on its own (see throttle.py). Every outcome is audited; a disabled account gets the
        same answer as a wrong password, so the answer never confirms a password.
        """
        account = username[:64] or "(empty)"
        attempt = Actor(account, address)
        browser_hash = _digest(browser) if browser else ""
        reservation = self.throttle.reserve(account, address, browser_hash)
        if not reservation.decision.allowed:
            wait = wait_text(reservation.decision.wait)
            self._audit.record(attempt, "login", account, "throttled",
                               f"{reservation.decision.reason}; wait {wait}")
            raise Throttled(f"too many failed attempts: try again in {wait}")
        with self._db.reading() as s:
            user = s.exec(select(User).where(User.username == username)).first()
        ok = check_password(password, user.password_hash if user else dummy_hash())
        if not user or not ok or user.disabled:
            reason = "account disabled" if user and ok and user.disabled else WRONG_CREDENTIALS
            self._audit.record(attempt, "login", account, "failed", reason)
            raise Unauthenticated(WRONG_CREDENTIALS)
        self.throttle.succeeded(account, reservation, browser_hash)
        token = secrets.token_urlsafe(32)
        now = utcnow()
        principal = Principal(user.id or 0, user.username, user.is_admin, "session", address)
        self._audit.record(principal.actor(), "login", user.username, "ok")
        with self._db.writing() as s:
            s.add(WebSession(id=_digest(token), user_id=user.id or 0, created_at=now, last_seen=now,
                             address=address[:100]))
        return principal, token

    def login_states(self) -> dict[str, AccountState]:
        """How throttled each user's sign-in is (users without recent failures are left out)."""
        return self.throttle.states(u.username for u in self.users())

    def unlock(self, actor: Actor, username: str) -> int:
        """Forget a user's failed sign-ins, so no address has to wait; return how many there were."""
        try:
            with self._db.reading() as s:
                self._user(s, username)
            self._audit.record(actor, "user.unlock", username, "started")
        except BackupError as exc:
            self._audit.record(actor, "user.unlock", username[:64], "refused", exc.message)
            raise
        cleared = self.throttle.clear(username)
        self._audit.record(actor, "user.unlock", username, "ok", f"cleared {cleared} failed sign-ins")
        return cleared

    def session(self, token: str | None, address: str = "", *, touch: bool = True) -> Principal:
        """The principal of a live session; ends sessions past their idle or absolute limit.

        `touch=False` checks without counting as activity (a page's periodic check must not keep an
        idle session alive).
        """
        if not token:
            raise Unauthenticated("please sign in")
        now = utcnow()
        with self._db.reading() as s:
            row = s.get(WebSession, _digest(token))
            user = s.get(User, row.user_id) if row else None
        if row is None or user is None or row.ended_at is not None or user.disabled:
            raise Unauthenticated("your session has ended; please sign in again")
        created, seen = as_utc(row.created_at), as_utc(row.last_seen)
        assert created is not None and seen is not None
        if now - seen > self._idle or now - created > self._absolute:
            self._end(row.id, now)
            raise Unauthenticated("your session has expired; please sign in again")
        if touch and (now - seen).total_seconds() > TOUCH_SECONDS:
            with self._db.writing() as s:
                live = s.get(WebSession, row.id)
                if live is not None:
                    live.last_seen = now
                    s.add(live)
        return Principal(user.id or 0, user.username, user.is_admin, "session", address)

    def _end(self, session_id: str, when: datetime) -> None:
        with self._db.writing() as s:
            row = s.get(WebSession, session_id)
            if row is not None and row.ended_at is None:
                row.ended_at = when
                s.add(row)

    def _end_user_sessions(self, s: object, user_id: int) -> None:
        rows = s.exec(select(WebSession).where(WebSession.user_id == user_id,  # type: ignore[attr-defined]
                                               col(WebSession.ended_at).is_(None))).all()
        for row in rows:
            row.ended_at = utcnow()
            s.add(row)  # type: ignore[attr-defined]

    def logout(self, token: str | None, actor: Actor) -> None:
        """End a session on the server."""
        if token:
            self._end(_digest(token), utcnow())
        self._audit.record(actor, "logout", actor.name, "ok")

    def issue_ticket(self, token: str, browser: str) -> str:
        """A one-time, 60-second ticket with which this browser (its nonce) exchanges a login for a cookie."""
        if not browser:
            raise Unauthenticated("this browser did not keep the sign-in cookie: allow cookies and reload")
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._tickets = {k: v for k, v in self._tickets.items() if v.expires > now}
            self._tickets[ticket] = Ticket(token, _digest(browser), now + TICKET_SECONDS)
        return ticket

    def redeem_ticket(self, ticket: str, browser: str, address: str = "") -> str:
        """Return the session token behind a ticket, once, to the browser it was issued to.

        A ticket brought by another browser is used up, its session ended and the attempt audited: a
        victim's browser must never be signed in to an account someone else logged in to.
        """
        with self._lock:
            entry = self._tickets.pop(ticket, None)
        if entry is None or entry.expires < time.monotonic():
            raise Unauthenticated("this sign-in link has expired; please sign in again")
        if not hmac.compare_digest(entry.browser_hash, _digest(browser or "")) or not browser:
            now = utcnow()
            with self._db.reading() as s:
                row = s.get(WebSession, _digest(entry.token))
                user = s.get(User, row.user_id) if row else None
            self._end(_digest(entry.token), now)
            self._audit.record(Actor("anonymous", address), "login.ticket", user.username if user else "",
                               "refused", "sign-in ticket brought by another browser; its session was ended")
            raise Unauthenticated("this sign-in link belongs to another browser; please sign in again")
        return entry.token

    # ----- API tokens --------------------------------------------------------------------------------
    def create_token(self, actor: Actor, username: str, label: str = "", scope: str = "admin",
                     expires_at: datetime | None = None) -> str:
        """Create an API token for a user (scope: see SCOPES; refused from `expires_at` on, None: never).

        The token is returned once and stored hashed.
        """
        label = clean_text(label, 100, "the label")
        if scope not in SCOPES:
            raise InvalidInput(f"a token's scope is one of {', '.join(SCOPES)}")
        if expires_at is not None and is_expired(expires_at, utcnow()):
            raise InvalidInput("a token's expiry must lie in the future")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        terms = f"scope={scope} expires={stamp(expires_at)}"
        self._audit.record(actor, "token.create", username, "started", f"{terms} {label}".rstrip())
        try:
            with self._db.writing() as s:
                user = self._user(s, username)
                s.add(ApiToken(user_id=user.id or 0, label=label, token_hash=_digest(token), prefix=token[:12],
                               created_at=utcnow(), scope=scope, expires_at=expires_at))
        except BackupError as exc:
            self._audit.record(actor, "token.create", username[:64], "refused", exc.message)
            raise
        self._audit.record(actor, "token.create", username, "ok", f"{token[:12]}… {terms} {label}".rstrip())
        return token

    def revoke_token(self, actor: Actor, token_id: int) -> None:
        """Revoke an API token by its id."""
        self._audit.record(actor, "token.revoke", str(token_id), "started")
        with self._db.writing() as s:
            row = s.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no token with id {token_id}")
            row.revoked_at = row.revoked_at or utcnow()
            s.add(row)
        self._audit.record(actor, "token.revoke", str(token_id), "ok", row.prefix)

    def token(self, token: str, address: str = "") -> Principal:
        """The principal of a bearer token; an address that keeps sending invalid tokens is throttled.

        The token is checked first and only failures count, so a valid token always works, whoever
        else shares its address. An expired token is refused with a sentence saying so, and is not
        counted as invalid (it is no guess).
        """
        principal = self._check_token(token, address)
        if principal is None:
            if self.throttle.refuse_token(address):
                raise Throttled("too many invalid tokens from this address: try again in 15 minutes")
            raise Unauthenticated("invalid or revoked token")
        return principal

    def _check_token(self, token: str, address: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        with self._db.reading() as s:
            row = s.exec(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()
            user = s.get(User, row.user_id) if row else None
        if row is None or user is None or row.revoked_at is not None or user.disabled:
            return None
        if is_expired(row.expires_at, utcnow()):  # a real token past its time: said so, not counted as a guess
            raise TokenExpired(row.prefix, row.expires_at, user.username)  # type: ignore[arg-type]
        last = as_utc(row.last_used_at)
        if last is None or (utcnow() - last).total_seconds() > 60:
            with self._db.writing() as s:
                live = s.get(ApiToken, row.id)
                if live is not None:
                    live.last_used_at = utcnow()
                    s.add(live)
        return Principal(user.id or 0, user.username, user.is_admin, "token", address, row.scope or "admin")


def require_admin(principal: Principal) -> Principal:
    """Raise Forbidden unless the principal is an administrator acting with full rights (not a metrics token)."""
    if principal.scope != "admin":
        raise Forbidden("this token may only read /metrics")
    if not principal.is_admin:
        raise Forbidden("administrators only")
    return principal


def may_read_metrics(principal: Principal) -> bool:
    """Whether the principal may read /metrics: a metrics token (of any enabled user), or an administrator."""
    return principal.scope == "metrics" or (principal.scope == "admin" and principal.is_admin)
