"""Drill report bytes kept in the metadata database, so every app instance serves any drill's report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel

from . import drill_report
from .errors import NotFound

if TYPE_CHECKING:
    from .db import Database
    from .models import Drill


class DrillReportBlob(SQLModel, table=True):
    """One report of one drill (kind json or pdf), byte for byte as written and hashed into the audit log."""

    __tablename__ = "drill_report_blobs"

    drill_id: int = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


def save(db: Database, drill_id: int, reports: dict[str, bytes]) -> None:
    """Store a drill's reports (kind -> bytes); the files in the data directory stay as they were."""
    with db.writing() as s:
        for kind, data in reports.items():
            row = s.get(DrillReportBlob, (drill_id, kind)) or DrillReportBlob(drill_id=drill_id, kind=kind, data=b"")
            row.data = data
            s.add(row)


def load(db: Database, row: Drill, kind: str) -> bytes:
    """A drill's report bytes: from the metadata database, else (drills from before it kept them) the file."""
    with db.reading() as s:
        blob = s.get(DrillReportBlob, (row.id, kind))
        if blob is not None:
            return bytes(blob.data)
    path = row.report_pdf if kind == "pdf" else row.report_json
    if not path:
        raise NotFound(f"drill {row.id} has no {kind} report")
    return drill_report.read(Path(path))  # NotFound when it was written on another instance's disk
