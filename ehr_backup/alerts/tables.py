"""SQLModel tables of alerts: channels (secrets encrypted), open alerts, and the history of deliveries."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class AlertChannel(SQLModel, table=True):
    """Where alerts go: an email (SMTP) or a signed JSON webhook."""

    __tablename__ = "alert_channels"

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # email | webhook
    target: str  # email: recipient addresses (comma-separated); webhook: the URL
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_user: str = ""
    smtp_security: str = "starttls"  # starttls | tls | none
    sender: str = ""
    secret: str | None = None  # encrypted (secrets.py): the SMTP password or the webhook's signing secret
    enabled: bool = True
    created_at: datetime
    created_by: str = ""


class OpenAlertRow(SQLModel, table=True):
    """An alert that is open now (its condition holds)."""

    __tablename__ = "alerts_open"

    key: str = Field(primary_key=True)
    event: str
    database: str = ""
    location: str = ""
    message: str = ""
    since: datetime
    notified_at: datetime | None = None
    notices: int = 0


class AlertDelivery(SQLModel, table=True):
    """One alert sent, or failed to send, to one channel."""

    __tablename__ = "alert_history"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    channel_id: int | None = None
    channel: str = ""  # what the channel was, for people (no secrets)
    kind: str = ""  # new | repeat | resolved | test
    event: str = ""
    key: str = ""
    database: str = ""
    location: str = ""
    message: str = ""
    outcome: str = ""  # sent | failed
    attempts: int = 1
    error: str = ""


class AlertThreshold(SQLModel, table=True):
    """A threshold an administrator set (thresholds.py); without a row the environment's value holds."""

    __tablename__ = "alert_thresholds"

    name: str = Field(primary_key=True)  # repeatHours | maxBackupAgeHours | minFreeMb | fillWarnDays
    value: int
    updated_at: datetime
    updated_by: str = ""
