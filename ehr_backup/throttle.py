"""Sign-in throttling: progressive delays per (account, address), ceilings, invalid-token limits.

The decision is a pure function of what is known about earlier failures (`decide`); `LoginThrottle`
keeps the failures in the metadata database and makes decision and reservation one write transaction.

Policy (README "Sign-in throttling" says the same):
- Failures count per account *and* source. The source is the client address, or, for a browser that
  has signed in to that account before (its nonce cookie), that browser: someone guessing from the
  same address then does not slow the account's own browser down.
- The first 5 failures of a pair cost nothing; after that the next attempt waits 15 s, doubling with
  every further failure up to 15 minutes. Failures are forgotten after 24 hours, a successful sign-in
  forgets that pair's failures, and an administrator can clear an account's (unlock).
- Ceilings against many addresses: when an account has 20 failures within an hour from all sources,
  or an address 30 within an hour for all accounts, pairs get no free failures (15 s after the first,
  doubling). A new address still gets its first attempt at once: ceilings slow, they never lock.
- A throttled attempt is refused before the password is looked at and is not a failure itself.
- Invalid API tokens: after 50 from an address within 15 minutes, further invalid tokens from it get
  429. A valid token is checked first and always works.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, func, select

from .catalogue import as_utc, utcnow
from .db import Database
from .errors import Unauthenticated
from .models import AuthFailure, KnownBrowser

PASSWORD = "password"
TOKEN = "token"
BROWSER_SOURCE = "browser:"


class Throttled(Unauthenticated):
    """Too many failed attempts: wait before the next one."""

    status = 429
    code = "throttled"


@dataclass(frozen=True)
class Policy:
    """The numbers of the throttling policy."""

    free_failures: int = 5
    first_delay: timedelta = timedelta(seconds=15)
    max_delay: timedelta = timedelta(minutes=15)
    memory: timedelta = timedelta(hours=24)
    ceiling_window: timedelta = timedelta(hours=1)
    account_ceiling: int = 20
    address_ceiling: int = 30
    token_window: timedelta = timedelta(minutes=15)
    token_guesses: int = 50
    browser_memory: timedelta = timedelta(days=180)


POLICY = Policy()


@dataclass(frozen=True)
class History:
    """What is known about earlier failures when an attempt arrives."""

    failures: int  # of this account from this source, within the policy's memory
    last_failure: datetime | None
    account_failures: int = 0  # of this account from every source, within the ceiling window
    address_failures: int = 0  # from this address for every account, within the ceiling window
    known_browser: bool = False  # the source is a browser that signed in to this account before


@dataclass(frozen=True)
class Decision:
    """Whether an attempt may go ahead, else how long to wait and why."""

    allowed: bool
    wait: timedelta = timedelta(0)
    reason: str = ""


def delay_after(failures: int, free: int, policy: Policy = POLICY) -> timedelta:
    """The wait after `failures` failures when the first `free` of them cost nothing."""
    steps = failures - free
    if steps < 0:
        return timedelta(0)
    if steps > 30:  # far past the cap; keeps the arithmetic small
        return policy.max_delay
    return min(policy.first_delay * (2 ** steps), policy.max_delay)


def decide(history: History, now: datetime, policy: Policy = POLICY) -> Decision:
    """Decide on one attempt from the failures before it."""
    own = delay_after(history.failures, policy.free_failures, policy)
    wait, reason = own, "too many failures for this account from here"
    if not history.known_browser:
        ceilings = (
            ("too many failures for this account", history.account_failures >= policy.account_ceiling),
            ("too many failures from this address", history.address_failures >= policy.address_ceiling))
        for why, reached in ceilings:
            if reached and delay_after(history.failures, 1, policy) > wait:
                wait, reason = delay_after(history.failures, 1, policy), why
                break
    if history.last_failure is None or not wait:
        return Decision(True)
    remaining = history.last_failure + wait - now
    if remaining <= timedelta(0):
        return Decision(True)
    return Decision(False, remaining, reason)


def wait_text(wait: timedelta) -> str:
    """A wait for people: '15 seconds', '4 minutes'."""
    seconds = max(1, math.ceil(wait.total_seconds()))
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


@dataclass(frozen=True)
class Reservation:
    """An attempt that was decided on; `id` is its failure row when it may go ahead."""

    id: int | None
    source: str
    decision: Decision


@dataclass(frozen=True)
class AccountState:
    """How throttled an account is, for the Users page and `user list`."""

    failures: int = 0
    sources: int = 0
    waiting: int = 0
    longest_wait: timedelta = timedelta(0)
    ceiling: bool = False

    def describe(self) -> str:
        """One line: '—', '3 failed sign-ins', or 'throttled: … next try in up to 4 minutes'."""
        if not self.failures:
            return "—"
        text = f"{self.failures} failed sign-in{'s' if self.failures != 1 else ''} from {self.sources} " \
               f"source{'s' if self.sources != 1 else ''}"
        if self.waiting:
            text = f"throttled: {text}; {self.waiting} must wait up to {wait_text(self.longest_wait)}"
        if self.ceiling:
            text += "; every new address is slowed"
        return text


class LoginThrottle:
    """Failures kept in the metadata database, and the decisions made from them."""

    def __init__(self, db: Database, policy: Policy = POLICY) -> None:
        self._db = db
        self.policy = policy

    def reserve(self, account: str, address: str, browser_hash: str = "") -> Reservation:
        """Decide on a sign-in attempt and, when it may go ahead, record it as a failure at once.

        Counting and recording happen in one write transaction (SQLite's write lock is taken at BEGIN),
        before the password is checked: concurrent attempts see each other, so no more passwords are
        checked than the policy allows. A successful sign-in removes the record again.
        """
        now = utcnow()
        with self._db.writing() as s:
            self._prune(s, now)
            known = bool(browser_hash) and s.exec(select(KnownBrowser.id).where(
                KnownBrowser.account == account, KnownBrowser.browser_hash == browser_hash)
            ).first() is not None
            source = BROWSER_SOURCE + browser_hash if known else address
            decision = decide(self._history(s, account, address, source, known, now), now, self.policy)
            if not decision.allowed:
                return Reservation(None, source, decision)
            row = AuthFailure(ts=now, kind=PASSWORD, account=account, address=address, source=source)
            s.add(row)
            s.flush()
            return Reservation(row.id, source, decision)

    def succeeded(self, account: str, reservation: Reservation, browser_hash: str = "") -> None:
        """Forget the failures of the pair that just signed in; remember the browser as known."""
        now = utcnow()
        with self._db.writing() as s:
            s.exec(delete(AuthFailure).where(  # type: ignore[call-overload]
                col(AuthFailure.kind) == PASSWORD, col(AuthFailure.account) == account,
                col(AuthFailure.source) == reservation.source))
            if browser_hash:
                known = s.exec(select(KnownBrowser).where(KnownBrowser.account == account,
                                                          KnownBrowser.browser_hash == browser_hash)).first()
                known = known or KnownBrowser(account=account, browser_hash=browser_hash, last_login=now)
                known.last_login = now
                s.add(known)

    def refuse_token(self, address: str) -> bool:
        """Record an invalid token from address; True (recording nothing) when it has sent too many."""
        now = utcnow()
        with self._db.writing() as s:
            guesses = s.exec(select(func.count()).select_from(AuthFailure).where(
                AuthFailure.kind == TOKEN, AuthFailure.address == address,
                AuthFailure.ts >= now - self.policy.token_window)).one()
            if guesses >= self.policy.token_guesses:
                return True
            s.add(AuthFailure(ts=now, kind=TOKEN, address=address, source=address))
            return False

    def clear(self, account: str) -> int:
        """Forget every failed sign-in of an account; return how many there were."""
        with self._db.writing() as s:
            rows = s.exec(select(func.count()).select_from(AuthFailure).where(
                AuthFailure.kind == PASSWORD, AuthFailure.account == account)).one()
            s.exec(delete(AuthFailure).where(  # type: ignore[call-overload]
                col(AuthFailure.kind) == PASSWORD, col(AuthFailure.account) == account))
            return int(rows)

    def states(self, accounts: Iterable[str]) -> dict[str, AccountState]:
        """The throttling state of each of these accounts that has recent failures."""
        now = utcnow()
        p = self.policy
        names = list(accounts)
        with self._db.reading() as s:
            groups = s.exec(select(AuthFailure.account, AuthFailure.source, func.count(),
                                   func.max(AuthFailure.ts))
                            .where(AuthFailure.kind == PASSWORD, col(AuthFailure.account).in_(names),
                                   AuthFailure.ts >= now - p.memory)
                            .group_by(AuthFailure.account, AuthFailure.source)).all()
            recent = now - p.ceiling_window
            per_account = dict(s.exec(select(AuthFailure.account, func.count()).where(
                AuthFailure.kind == PASSWORD, col(AuthFailure.account).in_(names), AuthFailure.ts >= recent)
                .group_by(AuthFailure.account)).all())
            addresses = {source for _, source, _, _ in groups if not source.startswith(BROWSER_SOURCE)}
            per_address = dict(s.exec(select(AuthFailure.address, func.count()).where(
                AuthFailure.kind == PASSWORD, col(AuthFailure.address).in_(addresses),
                AuthFailure.ts >= recent)
                .group_by(AuthFailure.address)).all())
        found: dict[str, list[tuple[int, Decision]]] = {}
        for account, source, count, last in groups:
            known = source.startswith(BROWSER_SOURCE)
            history = History(count, as_utc(last), per_account.get(account, 0),
                              0 if known else per_address.get(source, 0), known)
            found.setdefault(account, []).append((count, decide(history, now, p)))
        states = {}
        for account, rows in found.items():
            waits = [d.wait for _, d in rows if not d.allowed]
            states[account] = AccountState(
                failures=sum(n for n, _ in rows), sources=len(rows), waiting=len(waits),
                longest_wait=max(waits, default=timedelta(0)),
                ceiling=per_account.get(account, 0) >= p.account_ceiling)
        return states

    def _history(self, s: Session, account: str, address: str, source: str, known: bool,
                 now: datetime) -> History:
        p = self.policy
        count, last = s.exec(select(func.count(), func.max(AuthFailure.ts)).where(
            AuthFailure.kind == PASSWORD, AuthFailure.account == account, AuthFailure.source == source,
            AuthFailure.ts >= now - p.memory)).one()
        recent = now - p.ceiling_window
        account_failures = s.exec(select(func.count()).select_from(AuthFailure).where(
            AuthFailure.kind == PASSWORD, AuthFailure.account == account, AuthFailure.ts >= recent)).one()
        address_failures = s.exec(select(func.count()).select_from(AuthFailure).where(
            AuthFailure.kind == PASSWORD, AuthFailure.address == address, AuthFailure.ts >= recent)).one()
        return History(int(count), as_utc(last), int(account_failures), int(address_failures), known)

    def _prune(self, s: Session, now: datetime) -> None:
        """Drop what no decision looks at any more, so the tables stay small."""
        p = self.policy
        s.exec(delete(AuthFailure).where(  # type: ignore[call-overload]
            col(AuthFailure.ts) < now - max(p.memory, p.token_window, p.ceiling_window)))
        s.exec(delete(KnownBrowser).where(  # type: ignore[call-overload]
            col(KnownBrowser.last_login) < now - p.browser_memory))
