"""Data directories of database profiles' servers that run on this machine (a custom location may not overlap them)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from . import pg
from .errors import BackupError
from .pg import ConnInfo

if TYPE_CHECKING:
    from .service import BackupService


def is_local_host(host: str | None, own_names: tuple[str, ...] = ()) -> bool:
    """Whether a libpq host names this machine: none (the default socket), a socket directory, a loopback
    address or `localhost`, or one of this machine's own names."""
    if not host:
        return True
    first = host.split(",")[0].strip()  # libpq takes a list; the first is the one tried first
    if not first or first.startswith(("/", "@")):
        return True  # a Unix socket directory (or an abstract socket): only local servers listen there
    name = first.lower().strip("[]")
    if name == "localhost" or name.endswith(".localhost") or name in {n.lower() for n in own_names if n}:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _own_names() -> tuple[str, ...]:
    try:
        return socket.gethostname(), socket.getfqdn()
    except OSError:
        return ()


def local_data_dirs(service: BackupService) -> list[Path]:
    """The data directory of each profile's server that runs here and lets us read the setting.

    A remote server's data directory names a path on another machine, so it is never refused here;
    an unreachable or misconfigured profile is skipped rather than failing the location check.
    """
    own = _own_names()
    out: list[Path] = []
    for row in service.profiles.all():
        try:
            info: ConnInfo = service.connection(row.name)
        except BackupError:
            continue
        if not is_local_host(info.params.get("host") or info.params.get("hostaddr"), own):
            continue
        found = pg.data_directory(info)
        if found and Path(found) not in out:
            out.append(Path(found))
    return out
