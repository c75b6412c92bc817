"""The backups table: a Quasar table that asks the service for one page at a time (sort, search, filters in SQLite).

Cells are Vue templates fed by plain row values (text is interpolated with `{{ }}`, which Vue escapes;
no row value ever becomes a prop string or HTML). A row action emits `row_action` {action, id}; the
page looks the id up among the rows it sent and never trusts anything else the browser says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nicegui import run, ui

from ehr_backup.errors import BackupError
from ehr_backup.storage import LOCATIONS

from .frame import PageSession, human_size, local_time, tid
from .rotation import PINNABLE, words
from .theme import notify

Action = Callable[[str, dict[str, Any]], Awaitable[Any]]
PAGE_SIZES = [10, 25, 50, 100]
STATE_COLORS = {"completed": "positive", "verified": "positive", "running": "info", "failed": "negative",
                "cancelled": "grey-7", "missing": "brown-8", "discovered": "deep-orange-10", "verify failed": "negative"}
KIND_COLORS = {"manual": "blue-grey-7", "scheduled": "indigo", "safety": "deep-purple", "discovered": "deep-orange-10"}
COLUMNS = [
    {"name": "description", "label": "Description", "field": "description", "align": "left", "sortable": True},
    {"name": "kind", "label": "Kind", "field": "kind", "align": "left", "sortable": True},
    {"name": "status", "label": "State", "field": "status", "align": "left", "sortable": True},
    {"name": "createdAt", "label": "Created", "field": "createdAt", "align": "left", "sortable": True},
    {"name": "size", "label": "Size", "field": "size", "align": "right", "sortable": True},
    {"name": "location", "label": "Location", "field": "location", "align": "left", "sortable": True},
    {"name": "database", "label": "Database", "field": "database", "align": "left", "sortable": True},
    {"name": "createdBy", "label": "Created by", "field": "createdBy", "align": "left", "sortable": True},
    {"name": "verified", "label": "Last check", "field": "verifiedText", "align": "left"},
    {"name": "rotation", "label": "Rotation", "field": "keptText", "align": "left"},
    {"name": "actions", "label": "Actions", "field": "id", "align": "left"},
]
HIDDEN_AT_FIRST = {"database", "createdBy"}
SLOTS = {
    "description": """<q-td :props="props" class="ehr-desc">
  <div :data-testid="'row-' + props.row.id">{{ props.row.description || '—' }}<span
   v-if="props.row.unverified" class="text-grey-8"> (unverified claim)</span></div>
  <div class="text-xs text-grey-8 ehr-id">{{ props.row.id }}</div></q-td>""",
    "kind": """<q-td :props="props"><q-badge :color="props.row.kindColor" :label="props.row.kindLabel">
  <q-tooltip v-if="props.row.protects">{{ props.row.protects }}</q-tooltip></q-badge>
  <div v-if="props.row.protects" class="text-xs text-grey-8 ehr-wrap" :data-testid="'protects-' + props.row.id">{{
   props.row.protects }}</div>
  <div v-if="props.row.schedule"><q-badge outline color="indigo" :data-testid="'from-schedule-' + props.row.id"
   :label="'schedule ' + props.row.schedule" class="ehr-wrap" /></div></q-td>""",
    "status": """<q-td :props="props"><q-badge :color="props.row.stateColor" :data-testid="'status-' + props.row.id"
  :label="props.row.stateLabel" /></q-td>""",
    "createdAt": """<q-td :props="props">
  <span :data-testid="'created-' + props.row.id">{{ props.row.createdAgo }}</span>
  <q-tooltip>{{ props.row.createdLocal }} (local)<br>{{ props.row.createdUtc }} (UTC)</q-tooltip></q-td>""",
    "size": """<q-td :props="props">{{ props.row.sizeText }}</q-td>""",
    "location": """<q-td :props="props">{{ props.row.locationLabel }}
  <div v-if="props.row.locationPath" class="text-xs text-grey-8 ehr-wrap">{{ props.row.locationPath }}</div></q-td>""",
    "verified": """<q-td :props="props" class="ehr-check"><div :data-testid="'verified-' + props.row.id"
  :class="props.row.verifiedBad ? 'text-negative' : ''"><q-icon v-if="props.row.verifiedIcon"
   :name="props.row.verifiedIcon" :color="props.row.verifiedBad ? 'negative' : 'positive'" size="xs"
   class="q-mr-xs" aria-hidden="true" />{{ props.row.verifiedText }}</div>
  <div v-if="props.row.drillText" :data-testid="'drill-state-' + props.row.id" class="text-xs"
   :class="props.row.drillBad ? 'text-negative' : ''">{{ props.row.drillText }}</div></q-td>""",
    "rotation": """<q-td :props="props"><div class="row items-center no-wrap q-gutter-x-xs">
  <q-badge :color="props.row.kept ? 'teal-8' : 'deep-orange-10'" :data-testid="'kept-' + props.row.id"
   :label="props.row.keptText" class="ehr-kept" />
  <q-btn flat dense no-caps size="sm" icon="push_pin" :color="props.row.pinned ? 'primary' : 'grey-8'"
   :label="props.row.pinned ? 'Unpin' : 'Pin'" :disable="!props.row.pinnable" :data-testid="'pin-' + props.row.id"
   @click="() => $parent.$emit('row_action', {action: 'pin', id: props.row.id})" /></div>
  <div v-if="props.row.pinned" class="text-xs ehr-wrap" :data-testid="'pin-reason-' + props.row.id">Pinned:
   {{ props.row.pinReason }}</div></q-td>""",
    "actions": """<q-td :props="props"><div class="row q-gutter-xs ehr-actions">
  <q-btn v-for="a in props.row.actions" :key="a.name" dense no-caps size="sm" :outline="a.name !== 'delete'"
   :flat="a.name === 'delete'" :color="a.name === 'delete' ? 'negative' : 'primary'" :icon="a.icon"
   :label="a.label" :disable="!a.enabled" :data-testid="a.name + '-' + props.row.id"
   :aria-label="a.label + ' ' + props.row.id"
   @click="() => $parent.$emit('row_action', {action: a.name, id: props.row.id})" /></div></q-td>""",
}
ACTIONS = (("download", "Download", "download"), ("verify", "Verify", "verified"), ("drill", "Drill", "fact_check"),
           ("restore", "Restore", "settings_backup_restore"), ("copy", "Copy to…", "cloud_upload"),
           ("delete", "Delete", "delete"))
STYLE = """.ehr-desc { min-width: 12rem; max-width: 22rem; white-space: normal; overflow-wrap: anywhere; }
.ehr-check { white-space: normal; min-width: 9rem; max-width: 13rem; }
.ehr-id { overflow-wrap: anywhere; } .ehr-wrap { white-space: normal; overflow-wrap: anywhere; }
.ehr-actions { min-width: 15rem; max-width: 17rem; }
.ehr-kept { white-space: normal; overflow-wrap: normal; min-width: 9rem; max-width: 14rem; line-height: 1.3; }"""


def ago(iso: str | None, now: datetime) -> str:
    """How long ago an ISO UTC time was, in the largest whole unit ("3 h ago")."""
    if not iso:
        return "—"
    seconds = (now - datetime.fromisoformat(iso.replace("Z", "+00:00"))).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def utc_text(iso: str | None) -> str:
    """An ISO UTC time as people read it."""
    return iso.replace("T", " ").split(".")[0] if iso else "—"


def table_row(b: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The values one table row shows, from a backup's public JSON (pure: no I/O)."""
    status = b["status"]
    state = "verified" if status == "completed" and b["verifyOk"] else status
    if b["verifyOk"] is False:
        state = "verify failed"
    kind = "discovered" if b["origin"] == "discovered" else b["kind"]
    usable = status in ("completed", "discovered")
    drill = b.get("lastDrill")
    drill_text = ""
    if drill:
        passed = drill["outcome"] == "passed"
        seconds = drill.get("recoverySeconds")
        took = f", {seconds:.1f} s" if passed and isinstance(seconds, int | float) else ""
        drill_text = f"drill {'passed' if passed else 'FAILED'}{took}"
    verified = "not checked yet" if b["verifyOk"] is None else \
        (f"verified {local_time(b['verifiedAt'])}" if b["verifyOk"] else str(b["verifyMessage"]))
    kept = b.get("keptBy") or []
    return {
        "id": b["id"], "description": b["description"] + (" (file time)" if b.get("unverified") else ""),
        "unverified": bool(b.get("unverified")), "kind": kind, "kindLabel": kind,
        "kindColor": KIND_COLORS.get(kind, "grey-7"),
        "schedule": b.get("schedule") or "", "status": status,
        "protects": f"before restoring {b['protects']}" if b.get("protects") else "",
        "stateLabel": state + (" (found on disk)" if status == "discovered" else "")
        + (" · degraded" if b.get("degraded") else ""),  # a copy failed or is missing (destinations/copies.py)
        "stateColor": "brown-8" if b.get("degraded") else STATE_COLORS.get(state, "grey-7"), "createdAt": b["createdAt"],
        "createdAgo": ago(b["createdAt"], now), "createdLocal": local_time(b["createdAt"]),
        "createdUtc": utc_text(b["createdAt"]), "size": b["size"], "sizeText": human_size(b["size"]),
        "location": b["location"], "locationLabel": LOCATIONS.get(b["location"], b["location"])
        + "".join(f" + {c['destination']} {'✓' if c['status'] == 'ok' else '✗ ' + c['status']}"
                  for c in (b.get("copies") or [])[1:]),  # the S3 copies beside the local file
        "locationPath": b["path"].rsplit("/", 1)[0] if b["location"] == "custom" else "",
        "database": b["database"] if b.get("profile", "default") == "default" else f"{b['database']} ({b['profile']})",
        "createdBy": b["createdBy"] or "—", "verifiedText": verified,
        "verifiedBad": b["verifyOk"] is False, "drillText": drill_text,
        "verifiedIcon": {True: "check_circle", False: "error"}.get(b["verifyOk"], ""),  # Material, not ✔ ✘
        "drillBad": bool(drill) and drill["outcome"] != "passed",
        "kept": bool(kept), "keptText": f"kept: {words(kept)}" if kept else "next rotation removes it",
        "pinned": bool(b["pinned"]), "pinReason": b["pinReason"] or "", "pinnable": status in PINNABLE,
        "actions": [{"name": n, "label": label, "icon": icon, "enabled": usable or n == "delete"}
                    for n, label, icon in ACTIONS],
    }


class BackupTable:
    """The table, its search box and filters; `load()` fetches the current page again."""

    def __init__(self, ps: PageSession, on_action: Action) -> None:
        self.ps = ps
        self.on_action = on_action
        self.views: dict[str, dict[str, Any]] = {}  # the page's backups as the service returned them
        self.databases: list[str] = []
        self.filters: dict[str, str | None] = {"location": None, "database": None, "kind": None, "status": None}
        self.search = ""
        self.pagination = {"page": 1, "rowsPerPage": 25, "sortBy": "createdAt", "descending": True, "rowsNumber": 0}
        ui.add_css(STYLE)
        with ui.row().classes("w-full items-end gap-3"):
            search = tid(ui.input("Find a backup", placeholder="words of its description, or its id",
                                  on_change=self._searched).props("clearable debounce=400").classes("w-64"), "search")
            search.tooltip("Searches the description and the id of every backup")
            self._select("location", "Location", {"all": "All locations", **LOCATIONS})
            self.database = self._select("database", "Database", {"all": "All databases"})
            self._select("kind", "Kind", {"all": "All kinds", "manual": "Manual", "scheduled": "Scheduled",
                                          "safety": "Safety", "discovered": "Discovered"})
            self._select("status", "State", {"all": "All states", "completed": "Completed", "verified": "Verified",
                                             "verify-failed": "Verification failed", "unverified": "Not verified yet",
                                             "failed": "Failed", "cancelled": "Cancelled", "running": "Running",
                                             "discovered": "Found on disk"})
            optional = {c["name"]: c["label"] for c in COLUMNS if c["name"] not in ("description", "actions")}
            tid(ui.select(optional, multiple=True, label="Columns", on_change=self._columns,
                          value=[n for n in optional if n not in HIDDEN_AT_FIRST]).props("use-chips dense")
                .classes("min-w-48"), "columns")
        self.error = tid(ui.label().classes("text-negative"), "list-error")
        self.error.set_visibility(False)
        self.table = tid(ui.table(columns=COLUMNS, rows=[], row_key="id", pagination=dict(self.pagination))
                         .classes("w-full").props("flat bordered loading"), "backup-table")
        self.table.props["rows-per-page-options"] = PAGE_SIZES
        self.table.props["visible-columns"] = [c["name"] for c in COLUMNS if c["name"] not in HIDDEN_AT_FIRST]
        self.table.props["no-data-label"] = "No backups yet. Create one above, or add a schedule."
        self.table.props["loading-label"] = "Loading backups…"
        for name, template in SLOTS.items():
            self.table.add_slot(f"body-cell-{name}", template)
        self.table.on("request", self._requested)
        self.table.on("row_action", self._action)

    def _select(self, key: str, label: str, options: dict[str, str]) -> ui.select:
        async def changed(e: Any) -> None:
            self.filters[key] = None if e.value in (None, "all") else e.value
            self.pagination["page"] = 1
            await self.load()

        return tid(ui.select(options, value="all", label=label, on_change=changed).classes("w-40"), f"filter-{key}")

    def _columns(self, e: Any) -> None:
        chosen = set(e.value or [])
        self.table.props["visible-columns"] = [c["name"] for c in COLUMNS
                                               if c["name"] in chosen or c["name"] in ("description", "actions")]
        self.table.update()

    async def _searched(self, e: Any) -> None:
        self.search = (e.value or "").strip()
        self.pagination["page"] = 1
        await self.load()

    async def _requested(self, e: Any) -> None:
        asked = (e.args or {}).get("pagination") or {}
        sort = asked.get("sortBy") or "createdAt"
        self.pagination.update(page=max(1, int(asked.get("page") or 1)),
                               rowsPerPage=asked.get("rowsPerPage") if asked.get("rowsPerPage") in PAGE_SIZES else 25,
                               sortBy=sort if isinstance(sort, str) else "createdAt",
                               descending=bool(asked.get("descending", True)) if asked.get("sortBy") else True)
        await self.load()

    async def _action(self, e: Any) -> None:
        args = e.args if isinstance(e.args, dict) else {}
        view = self.views.get(str(args.get("id")))
        if view is None:
            notify("That backup is no longer on this page; refresh the list", type="warning")
            return
        await self.on_action(str(args.get("action")), view)

    async def load(self) -> None:
        """Fetch and show the current page (the page number, size, order, search and filters chosen)."""
        p = self.pagination
        if not await self.ps.check("list backups", activity=False):
            return
        self.table.props["loading"] = True
        self.table.update()
        try:
            page = await run.io_bound(self.ps.ctx.service.list_page, **self.filters, search=self.search or None,
                                      sort=p["sortBy"] if p["sortBy"] != "verified" else "createdAt",
                                      descending=p["descending"], limit=p["rowsPerPage"],
                                      offset=(p["page"] - 1) * p["rowsPerPage"])
            databases = await run.io_bound(self.ps.ctx.service.listing.databases)
            profiles = await run.io_bound(lambda: [p.name for p in self.ps.ctx.service.profiles.all()])
        except BackupError as exc:
            self._failed(exc.message)
            return
        except (OSError, asyncio.TimeoutError):
            self._failed("the catalogue could not be read; try again")
            return
        if page is None:  # the page went away meanwhile
            return
        now = datetime.now(UTC)
        self.views = {b["id"]: b for b in page["backups"]}
        self.databases = [d for d in databases or [] if d]
        self.error.set_visibility(False)
        p["rowsNumber"] = page["total"]
        # with database profiles, each profile is a choice too (its backups, whatever its database's name)
        by_profile = {p: f"Profile {p}" for p in (["default", *profiles] if profiles else [])}
        self.database.set_options({"all": "All databases", **by_profile,
                                   **{d: d for d in self.databases if d not in by_profile}},
                                  value=self.filters["database"] or "all")
        self.table.rows = [table_row(b, now) for b in page["backups"]]
        self.table.pagination = dict(p)
        self.table.props["loading"] = False
        self.table.props["no-data-label"] = ("No backup matches the search and filters."
                                             if self.search or any(self.filters.values()) else
                                             "No backups yet. Create one above, or add a schedule.")
        self.table.update()

    def _failed(self, message: str) -> None:
        self.error.text = f"The list could not be loaded: {message}"
        self.error.set_visibility(True)
        self.table.props["loading"] = False
        self.table.update()
