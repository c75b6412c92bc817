"""The rotation dialog's preview: counts per rule, and what would be deleted, a page at a time."""

from __future__ import annotations

from collections import Counter
from typing import Any

from nicegui import run, ui

from .frame import PageSession, local_time, tid
from .theme import badge

BUCKETS = ("daily", "weekly", "monthly", "yearly", "pinned")  # always counted, even at 0: the policy's rules
PAGE = 25  # deletions listed at once; "Show more" adds the next ones


def bucket_counts(plan: dict[str, Any], labels: dict[str, str]) -> list[tuple[str, str, int]]:
    """(rule, words, backups it keeps) for the GFS buckets and pinned, then each other rule that keeps one.

    A backup kept by several rules (the newest is often daily, weekly and monthly at once) counts in each.
    """
    counts = Counter(rule for kept in plan["keep"] for rule in kept["reasons"])
    shown = [(rule, labels.get(rule, rule), counts.get(rule, 0)) for rule in BUCKETS]
    others = [(rule, labels.get(rule, rule), n) for rule, n in sorted(counts.items()) if rule not in BUCKETS]
    return shown + others


def more_text(listed: int, total: int) -> str:
    """What is not listed yet: 'and 9,975 more' (empty once everything is)."""
    return f"and {total - listed:,} more" if total > listed else ""


class Preview:
    """Counts per rule and a growing list of what goes; descriptions read for the listed page only."""

    def __init__(self, ps: PageSession, labels: dict[str, str]) -> None:
        self.ps = ps
        self.labels = labels
        self.going: list[dict[str, Any]] = []
        with tid(ui.column().classes("w-full gap-2"), "rotation-preview-body") as self.box:
            pass
        self.box.set_visibility(False)

    def clear(self) -> None:
        """Forget the shown preview (the policy changed)."""
        self.going = []
        self.box.clear()
        self.box.set_visibility(False)

    async def show(self, plan: dict[str, Any]) -> None:
        """Draw the counts, the holds and the first page of deletions."""
        self.clear()
        self.going = plan["forget"]
        self.box.set_visibility(True)
        with self.box:
            with tid(ui.row().classes("gap-2 items-center flex-wrap"), "rotation-counts"):
                ui.label("Kept by:").classes("text-sm")
                for rule, words, n in bucket_counts(plan, self.labels):
                    tid(badge(f"{words}: {n:,}", "ok" if n else "neutral"), f"rotation-count-{rule}")
                ui.separator().props("vertical")  # what stays | what goes
                tid(badge(f"to delete: {len(self.going):,}", "failed" if self.going else "neutral"),
                    "rotation-count-delete")
            for hold in plan["holds"]:
                tid(ui.label(f"Held: {hold['reason']}: nothing of {hold['database']} is deleted")
                    .classes("text-negative ehr-wrap"), "rotation-hold")
            if self.going:
                ui.label("Would be deleted, newest first:").classes("text-sm font-semibold")
            self.listing = tid(ui.column().classes("w-full gap-0 max-h-96 overflow-auto"), "rotation-going")
            with ui.row().classes("items-center gap-3"):
                self.more = tid(ui.label().classes("text-sm ehr-muted"), "rotation-more-count")
                self.more_button = tid(ui.button(f"Show {PAGE} more", on_click=self._next_page)
                                       .props("flat dense no-caps"), "rotation-more")
        self.listed = 0
        await self._next_page()

    async def _next_page(self) -> None:
        going = self.going
        page = going[self.listed:self.listed + PAGE]
        self.more_button.disable()  # one page at a time: a second click waits for this one
        described = await run.io_bound(self.ps.ctx.service.catalogue.descriptions, [g["id"] for g in page])
        if self.box.is_deleted or self.going is not going:  # closed, or another preview meanwhile
            return
        described = described or {}
        with self.listing:
            for item in page:
                with tid(ui.row().classes("w-full items-center gap-x-3 gap-y-0 py-1 border-b flex-wrap"),
                         f"rotation-row-{item['id']}"):
                    ui.label(local_time(item["createdAt"])).classes("text-sm w-48 shrink-0")
                    text = described.get(item["id"]) or "(no description)"
                    ui.label(text).classes("text-sm grow ehr-wrap min-w-[10rem]")
                    ui.label(item["database"] or "").classes("text-sm ehr-muted")
                    badge(f"delete: {item['reason']}", "failed")
        self.listed += len(page)
        self.more.text = more_text(self.listed, len(self.going))
        self.more_button.set_visibility(self.listed < len(self.going))
        self.more_button.enable()
