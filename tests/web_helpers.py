"""Helpers for NiceGUI user-fixture tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from nicegui import app
from nicegui.testing import User

from pages.deferred import page_built

from .conftest import ADMIN_PW


async def login(user: User, name: str = "alice", password: str = ADMIN_PW, next_: str = "/eh") -> None:
    """Sign in through the login page as a person would."""
    await user.open(f"/login?next={next_}")
    user.find(marker="username").type(name)
    user.find(marker="password").type(password)
    user.find(marker="login-button").click()
    await wait_for_path(user, next_.split("?")[0])


async def wait_for_path(user: User, path: str, timeout: float = 10) -> None:
    """Wait until the simulated browser shows a page at path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = user.client
        if client is not None and client.page.path == path:
            await page_built(client)  # a deferred page body (pages/deferred.py) is there too
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {path}; at {user.client.page.path if user.client else None}")


async def eventually(check, timeout: float = 60, state=None) -> None:
    """Wait until check() is true, letting the event loop run; state() describes a failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met in time; state: {state() if state else '-'}")


async def start_backup(user: User, description: str) -> None:
    """Type a description, press Create Backup, and wait for the job's panel."""
    user.find(marker="description").type(description)
    user.find(marker="create-button").click()
    await user.should_see(marker="cancel-job", retries=50)


@asynccontextmanager
async def second_browser() -> AsyncIterator[User]:
    """Another simulated browser (its own cookies) on the app the `user` fixture started."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        yield User(client)
