"""When an API token stops working: the choices offered, the moment they mean, and the refusal's words."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from .errors import InvalidInput, Unauthenticated

MAX_DAYS = 3650  # ten years: anything longer is "never" in all but name
CHOICES = {"never": "Never expires", "30": "30 days", "90": "90 days", "365": "1 year", "date": "On a date…"}


def expires_after(days: int | None, now: datetime) -> datetime | None:
    """The moment a token made `now` stops working `days` later (None: it never expires)."""
    if days is None:
        return None
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"a token expires after 1 to {MAX_DAYS} days (or never)")
    return now + timedelta(days=days)


def expires_on(day: date, now: datetime) -> datetime:
    """The moment a token chosen to last until `day` stops working: the end of that day, UTC."""
    if day < now.astimezone(UTC).date():
        raise InvalidInput(f"{day.isoformat()} has passed: the token's last day is today or later")
    if (day - now.astimezone(UTC).date()).days > MAX_DAYS:
        raise InvalidInput(f"a token expires within {MAX_DAYS} days (or never)")
    return datetime.combine(day + timedelta(days=1), time(), UTC)


def choice_moment(choice: str, day: date | None, now: datetime) -> datetime | None:
    """The expiry a page's choice (a key of CHOICES, with its day for "date") stands for."""
    if choice == "never":
        return None
    if choice == "date":
        if day is None:
            raise InvalidInput("choose the token's last day (YYYY-MM-DD)")
        return expires_on(day, now)
    if choice not in CHOICES:
        raise InvalidInput(f"a token's expiry is one of {', '.join(CHOICES)}")
    return expires_after(int(choice), now)


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    """Whether a token with this expiry is refused at `now` (naive times are UTC, as SQLite returns them)."""
    if expires_at is None:
        return False
    return now >= (expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC))


def stamp(moment: datetime | None) -> str:
    """An expiry as people read it, in UTC: '2026-12-31 00:00 UTC' (or 'never')."""
    if moment is None:
        return "never"
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class TokenExpired(Unauthenticated):
    """A real token past its expiry (401); carries its owner so the refusal is audited under their name."""

    def __init__(self, prefix: str, expires_at: datetime, owner: str) -> None:
        super().__init__(f"this API token ({prefix}…) expired on {stamp(expires_at)}: an administrator can "
                         "create a new one (Users page or `ehr-backup token create`)")
        self.owner = owner
