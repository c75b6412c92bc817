"""The styled "page not found" page (404) for pages; API paths keep their JSON answers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from nicegui import Client, app, ui
from nicegui.page import page

from .frame import tid
from .theme import apply, auth_card

API_PREFIXES = ("/api/", "/_nicegui", "/metrics", "/healthz", "/readyz")


def register() -> None:
    """Answer unknown page addresses with the app's own 404 page; hand everything else to the handler before."""
    previous: Any = app.exception_handlers.get(404)

    async def not_found(request: Request, exc: Exception) -> Response:
        path = request.url.path
        endpoint = request.scope.get("endpoint")
        # an API route or NiceGUI's own files answering 404 keep the JSON/plain answer they had
        if path.startswith(API_PREFIXES) or (endpoint is not None and endpoint is not app
                                             and not request.scope.get("nicegui_page_path")):
            return await previous(request, exc)
        with Client(page(""), request=request) as client:
            apply()
            with auth_card("Page not found", "There is no page at this address."):
                tid(ui.label("404 — the link may be old or mistyped."), "not-found")
                with ui.row().classes("gap-2"):
                    ui.button("Electronic Health", icon="arrow_back", on_click=lambda: ui.navigate.to("/eh"))
                    ui.button("Radiation Health", on_click=lambda: ui.navigate.to("/rh")).props("outline")
        return client.build_response(request, 404)

    app.add_exception_handler(404, not_found)
