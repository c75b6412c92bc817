"""/admin/destinations: S3 destinations (list, add, Test connection, remove with confirmation)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from nicegui import run, ui

from ehr_backup.web import WebContext

from .deferred import Deferred
from .frame import PageSession, admin_page, guarded, tid
from .theme import badge, notify, page_body, page_title, section


def register(ctx: WebContext) -> None:
    """Add /admin/destinations."""
    service = ctx.service

    @ui.page("/admin/destinations", title="Destinations · EHR Backup")
    async def destinations_page(request: Request) -> None:
        ps = admin_page(ctx, request, "Destinations")
        body = Deferred()  # built once the browser connects (pages/deferred.py)
        if not await body.connected():
            return
        state: dict[str, Any] = {"rows": [], "tests": {}}

        async def reload() -> None:
            state["rows"] = await run.io_bound(service.destination_list) or []
            listing.refresh()

        @ui.refreshable
        def listing() -> None:
            if not state["rows"]:
                tid(ui.label("No S3 destinations yet: backups are kept in the local locations only."),
                    "no-destinations")
            for d in state["rows"]:
                name = d["name"]
                with tid(ui.column().classes("w-full gap-1"), f"destination-{name}"):
                    with ui.row().classes("items-center gap-3 w-full"):
                        ui.label(name).classes("font-bold")
                        ui.label(f"s3://{d['bucket']}/{d['prefix'] or ''}").classes("font-mono text-sm")
                        ui.label(d["endpointUrl"] or "AWS").classes("text-sm")
                        ui.label(f"credentials: {d['credentials']}").classes("text-sm")
                        ui.space()
                        tid(ui.button("Test connection", on_click=lambda n=name: test(n)).props("flat"),
                            f"test-{name}")
                        tid(ui.button("Remove", on_click=lambda n=name: confirm_remove(n))
                            .props("flat color=negative"), f"remove-{name}")
                    result = state["tests"].get(name)
                    if result:
                        with tid(ui.column().classes("gap-0 text-sm"), f"test-result-{name}"):
                            badge("ok" if result["ok"] else "failed")
                            for c in result["checks"]:
                                ui.label(f"{'✓' if c['ok'] else '✗'} {c['message']}")

        @guarded(ps, "test a destination")
        async def test(name: str) -> None:
            result = await run.io_bound(service.destination_test, ps.actor, name)
            if result is not None:
                state["tests"][name] = result
                notify(result["message"], type="positive" if result["ok"] else "negative", multi_line=True)
                listing.refresh()

        def confirm_remove(name: str) -> None:
            with ui.dialog() as dialog, tid(ui.card(), "remove-destination-dialog"):
                ui.label(f"Remove destination {name}? Its objects stay in the bucket; the copies recorded there "
                         "are forgotten.")

                @guarded(ps, "remove a destination")
                async def remove() -> None:
                    await run.io_bound(service.destination_remove, ps.actor, name)
                    dialog.close()
                    notify(f"Destination {name} removed", type="positive")
                    await reload()

                with ui.row():
                    ui.button("Cancel", on_click=dialog.close).props("flat")
                    tid(ui.button("Remove", on_click=remove).props("color=negative"), "confirm-remove")
            dialog.open()

        with page_body():
            page_title("Destinations", icon="cloud")
            with section("S3-compatible destinations", "cloud", testid="destinations"):
                ui.label("Copies of backups beside the local file (3-2-1: three copies, two media, one off-site): "
                         "AWS S3, Google Cloud Storage (S3 interoperability), MinIO, Ceph.").classes("text-sm")
                listing()
                _add_form(ps, reload)
        await reload()
        body.built()


def _add_form(ps: PageSession, reload: Any) -> None:
    service = ps.ctx.service
    with ui.expansion("Add a destination").classes("w-full"):
        with ui.row().classes("items-end gap-3"):
            name = tid(ui.input("Name"), "dest-name")
            bucket = tid(ui.input("Bucket"), "dest-bucket")
            prefix = tid(ui.input("Prefix (optional)"), "dest-prefix")
            endpoint = tid(ui.input("Endpoint URL (empty: AWS)").classes("w-72"), "dest-endpoint")
            region = tid(ui.input("Region (optional)"), "dest-region")
        with ui.row().classes("items-end gap-3"):
            path_style = tid(ui.checkbox("Path-style addressing (MinIO, Ceph)"), "dest-path-style")
            storage_class = tid(ui.input("Storage class (optional)"), "dest-storage-class")
            sse = tid(ui.checkbox("Server-side encryption (AES256)"), "dest-sse")
        with ui.row().classes("items-end gap-3"):
            key_id = tid(ui.input("Access key id (empty: the AWS credential chain)"), "dest-key-id")
            secret = tid(ui.input("Secret access key", password=True), "dest-secret")

        @guarded(ps, "add a destination")
        async def add() -> None:
            creds = (key_id.value or "", secret.value or "") if key_id.value or secret.value else None
            try:
                await run.io_bound(lambda: service.destination_add(
                    ps.actor, name.value or "", creds, bucket=bucket.value or "", prefix=prefix.value or None,
                    endpoint_url=endpoint.value or None, region=region.value or None,
                    path_style=bool(path_style.value), storage_class=storage_class.value or None,
                    sse=bool(sse.value)))
            finally:
                secret.value = ""  # never kept in the page
            notify("Destination added; use Test connection to check its permissions", type="positive")
            await reload()

        tid(ui.button("Add destination", on_click=add), "add-destination")
