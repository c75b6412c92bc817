"""Admin pages built once the browser connects (pages/deferred.py): a bare GET gets the header and a status."""

from __future__ import annotations

import re

import pytest
from nicegui import Client
from nicegui.testing import User

from .web_helpers import login

PAGES = {"/admin/backup": "backup-table", "/admin/audit": "audit-table", "/admin/users": "user-list",
         "/admin/alerts": "no-channels", "/admin/destinations": "dest-bucket"}


async def test_a_bare_get_of_each_admin_page_is_its_header_and_a_loading_status(user: User, accounts) -> None:
    await login(user, next_="/eh")
    for path, body_marker in PAGES.items():
        response = await user.http_client.get(path)  # a script: the HTML, no socket
        assert response.status_code == 200, path
        html = response.text
        assert "page-loading" in html and "Loading" in html and '"role":"status"' in html, path
        assert body_marker not in html, f"{path} built its body without a browser"
        client_id = re.search(r"'client_id': '([0-9a-f-]+)'", html).group(1)  # type: ignore[union-attr]
        assert len(Client.instances[client_id].elements) < 60, path


@pytest.mark.parametrize("path", list(PAGES))
async def test_an_opened_admin_page_has_its_body_and_no_loading_status(user: User, accounts, path: str) -> None:
    await login(user, next_="/eh")
    await user.open(path)  # waits for the body (tests/conftest.py), as a person looks once it is there
    user.find(marker=PAGES[path])
    await user.should_not_see(marker="page-loading")
