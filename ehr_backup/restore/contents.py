"""What a backup holds, like `pg_restore -l`, read from the file alone (no database is touched)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..dumptoc import DATA_TYPES, DumpAnalyzer, DumpIndex, index_from_json
from ..errors import NotAuthentic
from ..fileformat import OpenedFile
from ..pipeline import plaintext
from ..sqlscan import DumpSyntaxError, quote_ident_text


def read_index(opened: OpenedFile, trailer: dict[str, Any]) -> tuple[DumpIndex, dict[str, int]]:
    """The dump's table of contents and rows per table: from the trailer (format 2) or by reading it."""
    if "index" in trailer:
        index = index_from_json(trailer["index"])
        return index, {}
    analyzer = DumpAnalyzer()
    try:
        for piece in plaintext(opened):
            analyzer.feed(piece)
        index = analyzer.finish()
    except DumpSyntaxError:
        raise NotAuthentic() from None
    return index, analyzer.rows_by_table()


def describe(opened: OpenedFile, trailer: dict[str, Any]) -> dict[str, Any]:
    """Schemas, tables (rows and data size), other objects by type, the database and its roles."""
    index, rows = read_index(opened, trailer)
    tables: dict[str, dict[str, Any]] = {}
    for d in index.data:
        name = d.target.text()
        t = tables.setdefault(name, {"schema": quote_ident_text(d.target.schema or b""),
                                     "name": quote_ident_text(d.target.name), "rows": 0, "bytes": 0})
        t["rows"] += d.rows
        t["bytes"] += d.bytes
    for name, n in (rows or {}).items():  # an older file: counts from reading the dump, sizes unknown
        tables.setdefault(name, {"schema": name.rsplit(".", 1)[0] if "." in name else "", "name": name,
                                 "rows": n, "bytes": None})
    kinds = Counter(e.type or "unknown" for e in index.entries)
    schemas = sorted({e.label.split(";", 1)[0] for e in index.entries if e.type == "SCHEMA"} |
                     {t["schema"] for t in tables.values() if t["schema"]})
    objects = [{"id": e.toc_id, "type": e.type or "unknown", "name": e.label.split("; Type: ", 1)[0]}
               for e in index.entries if e.type not in DATA_TYPES]
    props = trailer.get("database") or {}
    roles = [r["name"] for r in (trailer.get("globals") or {}).get("roles", [])]
    return {"format": opened.header.version, "database": props.get("name") or opened.header.fields.get("database"),
            "encoding": props.get("encoding"), "owner": props.get("owner"), "schemas": schemas,
            "tables": sorted(tables.values(), key=lambda t: (t["schema"], t["name"])),
            "objectCounts": dict(sorted(kinds.items())), "objects": objects, "roles": roles,
            "dumpBytes": trailer.get("dumpBytes")}
