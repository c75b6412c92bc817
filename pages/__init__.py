"""NiceGUI pages; `register(ctx)` adds them all (called by ehr_backup.web.build, never at import)."""

from __future__ import annotations

from typing import Any


def register(ctx: Any) -> None:
    """Register every page."""
    from . import alerts, audit, backups, destinations, drill_report, errors, login, modules, users

    login.register(ctx)
    modules.register(ctx)
    backups.register(ctx)
    audit.register(ctx)
    users.register(ctx)
    drill_report.register(ctx)
    alerts.register(ctx)
    destinations.register(ctx)
    errors.register()
