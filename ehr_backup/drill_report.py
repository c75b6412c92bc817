"""A drill's evidence report: one JSON document, the same as a PDF, and the check of a report file
against the SHA-256 the audit log recorded when it was written.

The JSON is canonical (sorted keys, fixed indentation), so the bytes written are the bytes hashed. Report
text comes from backups and admins (descriptions, table names, check queries): in the PDF it is only
ever drawn as text, with characters the core fonts lack replaced.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import storage
from .errors import BackupError, InvalidInput, NotFound
from .safedir import os_error

SHA_RE = re.compile(r"(json|pdf)-sha256=([0-9a-f]{64})")
MAX_REPORT = 64 * 1024 * 1024


def report_dir(data_dir: Path) -> Path:
    """Where reports are kept: <data_dir>/drill-reports (0700)."""
    path = data_dir / "drill-reports"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def to_json(report: dict[str, Any]) -> bytes:
    """The canonical bytes of a report."""
    return (json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def audit_detail(json_sha: str, pdf_sha: str) -> str:
    """How the report hashes appear in the audit entry (found again by verify)."""
    return f"json-sha256={json_sha} pdf-sha256={pdf_sha}"


def hashes_in(detail: str) -> dict[str, str]:
    """The report hashes an audit entry's detail names, by kind (json, pdf)."""
    return {kind: sha for kind, sha in SHA_RE.findall(detail)}


@dataclass(frozen=True)
class Written:
    """The report files of one drill and their SHA-256."""

    json_path: Path
    pdf_path: Path
    json_sha256: str
    pdf_sha256: str
    json_data: bytes = b""  # the bytes written (kept in the metadata database too: drill_blobs.py)
    pdf_data: bytes = b""


def write(data_dir: Path, drill_id: int, report: dict[str, Any]) -> Written:
    """Write the JSON and PDF reports (0600, atomically) and return their paths and hashes."""
    directory = report_dir(data_dir)
    blob = to_json(report)
    pdf = render_pdf(report)
    stem = f"drill-{drill_id:06d}"
    for name, data in ((f"{stem}.json", blob), (f"{stem}.pdf", pdf)):
        with storage.atomic_file(directory, name) as out:
            out.write(data)
    return Written(directory / f"{stem}.json", directory / f"{stem}.pdf", hashlib.sha256(blob).hexdigest(),
                   hashlib.sha256(pdf).hexdigest(), blob, pdf)


def read(path: Path) -> bytes:
    """A report file's bytes (bounded)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_REPORT + 1)
    except FileNotFoundError:
        raise NotFound(f"no such report file: {path}") from None
    except OSError as exc:
        raise os_error(exc, f"cannot read {path}") from None
    if len(data) > MAX_REPORT:
        raise InvalidInput("the file is far larger than any drill report")
    return data


# ----- PDF --------------------------------------------------------------------------------------------
def _latin(text: Any) -> str:
    """Text the PDF core fonts can draw: other characters become '?', control characters a space."""
    s = "" if text is None else str(text)
    return "".join(c if c.isprintable() and ord(c) < 256 else ("?" if c.isprintable() else " ") for c in s)


def render_pdf(report: dict[str, Any]) -> bytes:
    """The report as a PDF: summary, phases, the table-by-table comparison, the checks."""
    from fpdf import FPDF  # imported here: only drills need it
    from fpdf.enums import WrapMode

    pdf = FPDF(format="A4")
    pdf.set_title(_latin(f"Restore drill {report.get('drillId')}"))
    pdf.set_creator(_latin(f"EHR Backup {report.get('app', {}).get('version', '')}"))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def line(text: Any, size: int = 10, bold: bool = False, h: float = 5) -> None:
        pdf.set_font("Helvetica", "B" if bold else "", size)
        pdf.set_x(pdf.l_margin)
        pdf.multi_cell(width, h, _latin(text), new_x="LMARGIN", new_y="NEXT", wrapmode=WrapMode.CHAR)

    outcome = str(report.get("outcome", "")).upper()
    line(f"Restore drill evidence report - {outcome}", 16, True, 9)
    line(str(report.get("message") or ""), 10)
    pdf.ln(2)
    b = report.get("backup") or {}
    s = report.get("server") or {}
    ran = f"{report.get('startedAt')} to {report.get('finishedAt')} (UTC)"
    for label, value in (("Drill", report.get("drillId")), ("Drill ran", ran),
                         ("Run by", report.get("actor")), ("Backup id", b.get("id")),
                         ("Backup file SHA-256", b.get("sha256")), ("Database", b.get("database")),
                         ("Backup made", f"{b.get('createdAt')} by {b.get('createdBy')}"),
                         ("Backup description", b.get("description")),
                         ("Backup server / pg_dump", f"{b.get('serverVersion')} / {b.get('pgDumpVersion')}"),
                         ("Drill server", f"{s.get('display')} ({s.get('version')})"),
                         ("Scratch database", s.get("scratchDatabase")),
                         ("App version", (report.get("app") or {}).get("version")),
                         ("Recovery time", f"{report.get('recoverySeconds')} s")):
        line(f"{label}: {value}", 10)
    pdf.ln(2)
    line("Phases (seconds)", 12, True, 7)
    phases = report.get("phases") or {}
    for name in (n for n in ("authenticate", "load", "check") if n in phases):  # the order they ran in
        line(f"{name}: {phases[name]}")
    pdf.ln(2)
    tables = report.get("tables") or {}
    line(f"Tables ({len(tables)}): rows recorded at backup time vs rows in the restored copy", 12, True, 7)
    pdf.set_font("Courier", "", 8)
    line(f"{'table':<60} {'recorded':>12} {'restored':>12}", 8, True, 4)
    for name, t in tables.items():
        mark = "ok" if t.get("ok") else "DIFFERS"
        line(f"{_cut(name, 60):<60} {_num(t.get('expected')):>12} {_num(t.get('restored')):>12}  {mark}", 8, h=4)
    pdf.ln(2)
    checks = report.get("checks") or []
    line(f"Checks ({len(checks)})", 12, True, 7)
    for c in checks:
        verdict = "passed" if c.get("passed") else "FAILED"
        against = "the live database" if c.get("compareLive") else "the expected value"
        line(f"{c.get('name')}: {verdict} - got {c.get('actual')!r}, {against} {c.get('expected')!r}"
             + (f" ({c.get('error')})" if c.get("error") else ""), 9)
        line(f"    {c.get('sql')}", 8)
    if not checks:
        line("No check queries are defined (ehr-backup drill check add).", 9)
    return bytes(pdf.output())


def _cut(text: Any, n: int) -> str:
    s = str(text)
    return s if len(s) <= n else s[:n - 1] + "~"


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def verify_file(data: bytes, recorded: list[tuple[int, str, str]]) -> dict[str, Any]:
    """Check a report's bytes against audit entries (seq, target, detail) that recorded report hashes.

    Found → ok with the entry; not found → BackupError saying the report was altered or is unknown.
    """
    sha = hashlib.sha256(data).hexdigest()
    for seq, target, detail in recorded:
        for kind, value in hashes_in(detail).items():
            if value == sha:
                return {"ok": True, "sha256": sha, "kind": kind, "auditEntry": seq, "drill": target}
    claimed = None
    try:
        claimed = json.loads(data).get("drillId")
    except (ValueError, AttributeError):
        pass
    said = f" (it says it is the report of drill {claimed})" if isinstance(claimed, int) else ""
    raise ReportAltered(f"this report's SHA-256 {sha} is not in the audit log{said}: the file was altered after "
                        "it was written, or is not a drill report of this installation")


class ReportAltered(BackupError):
    """A report file whose hash the audit log does not hold."""

    status = 422
    code = "report_altered"
