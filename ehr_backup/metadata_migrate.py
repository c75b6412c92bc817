"""Copy the SQLite metadata database into an empty PostgreSQL one, in one transaction, and prove it complete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from .audit import Actor, AuditLog
from .db import Database
from .errors import InvalidInput, StorageError
from .models import AuditEntry

if TYPE_CHECKING:
    from .service import BackupService

BATCH = 1000  # rows per INSERT: memory stays small with a large audit log or catalogue


def _counts(conn: Any) -> dict[str, int]:
    have = set(inspect(conn).get_table_names())
    return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in SQLModel.metadata.sorted_tables if t.name in have}


def _reset_sequences(conn: Any) -> None:
    """Explicit ids were copied: move each serial column's sequence past them."""
    for table in SQLModel.metadata.sorted_tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer) or pk[0].autoincrement not in (True, "auto"):
            continue
        seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                           {"t": table.name, "c": pk[0].name}).scalar_one()
        if seq:
            top = conn.execute(select(func.max(pk[0])).select_from(table)).scalar_one()
            conn.execute(text("SELECT setval(:s, :v, :called)"),
                         {"s": seq, "v": top or 1, "called": top is not None})


def migrate(service: BackupService, actor: Actor, url: str) -> dict[str, Any]:
    """Copy every table to the PostgreSQL database at url (refused unless it is empty); verify counts and chain."""
    if service.db.dialect != "sqlite":
        raise InvalidInput("the metadata is on PostgreSQL already: migrate copies the SQLite metadata database")
    service.audit.record(actor, "metadata.migrate", "postgresql", "started")
    try:
        result = _copy(service, url)
    except (InvalidInput, StorageError) as exc:
        service.audit.record(actor, "metadata.migrate", "postgresql", "refused" if isinstance(exc, InvalidInput)
                             else "failed", exc.message)
        raise
    detail = f"{sum(result['tables'].values())} rows in {len(result['tables'])} tables; audit chain verified"
    entry = service.audit.record(actor, "metadata.migrate", "postgresql", "ok", detail)
    # the same entry in the target: both logs end alike, so the data directory's saved head fits either
    target = Database(service.db.path, url)
    try:
        with target.writing() as t:
            last = t.exec(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()  # type: ignore
            if last is not None and last[0].hash == entry.prev_hash:
                t.add(AuditEntry(**entry.model_dump()))
    finally:
        target.dispose()
    return result


def _copy(service: BackupService, url: str) -> dict[str, Any]:
    target = Database(service.db.path, url)  # makes the schema when it is missing
    try:
        with target._write.connect() as tconn:
            busy = {t: n for t, n in _counts(tconn).items() if n}
        if busy:
            raise InvalidInput("the target metadata database is not empty (" + ", ".join(
                f"{t}: {n} rows" for t, n in sorted(busy.items())) + "); migrate only into an empty one")
        try:
            # the source's write lock for the whole copy: nothing is written meanwhile, so the copy is exact
            with service.db.writing() as src, target._write.begin() as tconn:
                sconn = src.connection()
                source_tables = set(inspect(sconn).get_table_names())
                for table in SQLModel.metadata.sorted_tables:  # parents before children (foreign keys)
                    if table.name not in source_tables:
                        continue
                    rows = sconn.execute(select(table)).mappings()
                    while batch := rows.fetchmany(BATCH):
                        tconn.execute(table.insert(), [dict(r) for r in batch])
                _reset_sequences(tconn)
                want, got = _counts(sconn), _counts(tconn)
                differ = {t: (n, got.get(t)) for t, n in want.items() if got.get(t) != n}
                if differ:  # raising rolls the whole copy back
                    raise StorageError("the copy is incomplete: " + ", ".join(
                        f"{t} has {b} rows of {a}" for t, (a, b) in differ.items()))
                unknown = sorted(source_tables - {t.name for t in SQLModel.metadata.sorted_tables})
        except SQLAlchemyError as exc:
            raise StorageError(f"the copy failed and was rolled back: {exc.__class__.__name__}: "
                               f"{str(exc.orig if hasattr(exc, 'orig') else exc).splitlines()[0][:300]}") from None
        report = AuditLog(target, keys=service.audit.keys).verify()
        if not report.ok:
            raise StorageError(f"the audit chain does not verify on the target: {report.reason}")
        with service.db.reading() as s, target.reading() as t:
            last = s.exec(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()  # type: ignore
            copied = t.exec(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()  # type: ignore
        if (last and last[0].hash) != (copied and copied[0].hash):
            raise StorageError("the target's newest audit entry is not the source's")
        return {"tables": want, "auditEntries": report.entries, "auditVerified": True,
                "notCopied": unknown}
    finally:
        target.dispose()
