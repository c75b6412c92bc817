"""What a backup holds, like `pg_restore -l`, read from the file alone (no database is touched)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..dumptoc import DATA_TYPES, DumpAnalyzer, DumpIndex, index_from_json
from ..errors import NotAuthentic
from ..fileformat import OpenedFile
from ..pipeline import plaintext
from ..sqlscan import DumpSyntaxError, quote_ident_text


def read_index(opened: OpenedFile, trailer: dict[str, Any]) -> DumpIndex:
    """The dump's table of contents: from the trailer (format 2), or by reading the dump (format 1)."""
    if "index" in trailer and "typeCounts" in trailer["index"]:
        return index_from_json(trailer["index"])
    analyzer = DumpAnalyzer()
    try:
        for piece in plaintext(opened):
            analyzer.feed(piece)
        return analyzer.finish()
    except DumpSyntaxError:
        raise NotAuthentic() from None


def describe(opened: OpenedFile, trailer: dict[str, Any]) -> dict[str, Any]:
    """Schemas, tables (rows and data size), other objects by type, the database and its roles."""
    index = read_index(opened, trailer)
    tables: dict[str, dict[str, Any]] = {}
    for d in index.data:
        name = d.target.text()
        t = tables.setdefault(name, {"schema": quote_ident_text(d.target.schema or b""),
                                     "name": quote_ident_text(d.target.name), "rows": 0, "bytes": 0})
        t["rows"] += d.rows
        t["bytes"] += d.bytes
    kinds = index.type_counts or Counter(e.type or "unknown" for e in index.entries)
    schemas = sorted({e.label.split(";", 1)[0] for e in index.entries if e.type == "SCHEMA"} |
                     {t["schema"] for t in tables.values() if t["schema"]})
    objects = [{"id": e.toc_id, "type": e.type or "unknown", "name": e.label.split("; Type: ", 1)[0]}
               for e in index.entries if e.type not in DATA_TYPES]
    props = trailer.get("database") or {}
    roles = [r["name"] for r in (trailer.get("globals") or {}).get("roles", [])]
    return {"format": opened.header.version, "database": props.get("name") or opened.header.fields.get("database"),
            "encoding": props.get("encoding"), "owner": props.get("owner"), "schemas": schemas,
            "tables": sorted(tables.values(), key=lambda t: (t["schema"], t["name"])),
            "objectCounts": dict(sorted(kinds.items())), "objects": objects,  # the first MAX_LISTED only
            "objectsTotal": sum(n for k, n in kinds.items() if k not in DATA_TYPES), "roles": roles,
            "dumpBytes": trailer.get("dumpBytes")}
