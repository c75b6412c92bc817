"""Changing a stored alert channel: switch it on or off, replace an email channel's recipients; audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..audit import Actor
from ..errors import BackupError, InvalidInput, NotFound
from . import secrets
from .tables import AlertChannel

if TYPE_CHECKING:
    from .service import Alerts


def set_enabled(alerts: Alerts, actor: Actor, channel_id: int, enabled: bool) -> dict[str, Any]:
    """Switch a channel on or off."""
    action = "alert-channel-enable" if enabled else "alert-channel-disable"
    if not isinstance(enabled, bool):
        alerts.s.audit.record(actor, action, str(channel_id)[:20], "refused", "enabled is true or false")
        raise InvalidInput("enabled is true or false")
    with alerts.db.writing() as s:
        found = s.get(AlertChannel, channel_id) if isinstance(channel_id, int) else None
        if found is not None:
            found.enabled = enabled
            s.add(found)
    if found is None:
        alerts.s.audit.record(actor, action, str(channel_id)[:20], "refused", "no such channel")
        raise NotFound(f"no alert channel with id {channel_id}")
    alerts.s.audit.record(actor, action, str(channel_id), "ok", found.kind)
    return alerts._view(found)


def set_recipients(alerts: Alerts, actor: Actor, channel_id: int, recipients: str | list[str]) -> dict[str, Any]:
    """Replace an email channel's recipients; its sealed password is sealed again under the new target."""
    from .service import _context, check_addresses  # service imports this module

    try:
        addresses = check_addresses(recipients)
        with alerts.db.writing() as s:
            found = s.get(AlertChannel, channel_id) if isinstance(channel_id, int) else None
            if found is None:
                raise NotFound(f"no alert channel with id {channel_id}")
            if found.kind != "email":
                raise InvalidInput("only an email channel has recipients (a webhook has a URL: add a new one)")
            before = found.target
            # the password is authenticated together with the channel's target: re-seal it for the new one
            password = secrets.unseal(alerts.s.keyring(), found.secret, _context(found)) if found.secret else None
            found.target = ",".join(addresses)
            if password is not None:
                found.secret = secrets.seal(alerts.s.keyring(), password, _context(found))
            s.add(found)
    except BackupError as exc:
        alerts.s.audit.record(actor, "alert-channel-recipients", str(channel_id)[:20], "refused", exc.message)
        raise
    alerts.s.audit.record(actor, "alert-channel-recipients", str(channel_id), "ok", f"{before} -> {found.target}")
    return alerts._view(found)
