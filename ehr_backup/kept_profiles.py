"""Which database profile's server holds each kept database, so Roll back and Drop act on that server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import pg
from .errors import BackupError

if TYPE_CHECKING:
    from .service import BackupService


def server_profiles(service: BackupService) -> dict[str, str | None]:
    """Server identity -> the first profile connecting to it (None: the default one, checked first);
    a profile unreachable now names no server rather than failing the list."""
    found: dict[str, str | None] = {}
    for name in [None, *(p.name for p in service.profiles.all())]:
        try:
            identity = pg.server_identity(service.connection(name))
        except BackupError:
            continue
        found.setdefault(identity, name)
    return found


def with_profiles(service: BackupService, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each kept database's view with `profile`: the profile whose server holds it ("default" for
    DATABASE_URL's; None when no configured profile reaches that server now)."""
    if not views:
        return views
    servers = {r.id: r.server for r in service.restores.kept.live()}
    profiles = server_profiles(service)
    out = []
    for view in views:
        server = servers.get(view["id"])
        known = server is not None and server in profiles
        out.append({**view, "profile": (profiles[server] or "default") if known and server else None})
    return out


def profile_holding(service: BackupService, name: str) -> str | None:
    """The profile whose server holds a kept database of this name: None (the default one) when
    DATABASE_URL's server holds one, or no configured profile reaches a server that does."""
    servers = [r.server for r in service.restores.kept.live() if r.name == name]
    if not servers:
        return None
    profiles = server_profiles(service)
    if any(s in profiles and profiles[s] is None for s in servers):
        return None
    return next((profiles[s] for s in servers if s in profiles), None)
