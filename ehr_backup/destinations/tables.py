"""SQLModel tables of destinations and of the copies each backup has (plain SQLModel: any metadata database)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class Destination(SQLModel, table=True):
    """An S3-compatible bucket (and prefix) backups can be copied to."""

    __tablename__ = "destinations"

    name: str = Field(primary_key=True)
    kind: str = "s3"  # s3 (local locations are destinations too, by their location key, without a row)
    settings: str = "{}"  # JSON: bucket, prefix, endpointUrl, region, pathStyle, storageClass, sse
    credentials: str | None = None  # sealed (alerts/secrets.py) "access key id\nsecret"; None: the AWS chain
    created_at: datetime
    created_by: str = ""


class BackupCopy(SQLModel, table=True):
    """One copy of one backup at one destination, with its own size, SHA-256 and state."""

    __tablename__ = "backup_copies"

    id: int | None = Field(default=None, primary_key=True)
    backup_id: str = Field(index=True)
    destination: str = Field(index=True)  # a destination's name, or a local location's key
    uri: str  # the file's path, or s3://bucket/key
    size: int | None = None
    sha256: str | None = None
    status: str = "running"  # running | ok | failed | missing
    error: str | None = None
    created_at: datetime
