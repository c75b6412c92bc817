"""Background work (a backup's compressor threads and its pg_dump) yields the CPU to the web server.

On a small machine a running backup keeps both cores busy (pg_dump, the PostgreSQL backend feeding it,
one compressor thread per core), and the event loop that answers every page and API request had to wait
its turn like any of them: 20 list requests at once took seconds. The compressor threads and pg_dump
run at a lower scheduling priority (a higher nice value), so whenever the event loop has work the kernel
runs it first; on an idle machine the backup is just as fast. The job thread itself keeps its priority:
it parses the dump holding the GIL, and a thread that holds the GIL must not wait behind others.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("ehr_backup.background")
NICE = 10  # niceness added to background threads and processes (0-19; 10 is what `nice` adds by default)


def lower_thread() -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads one by one; elsewhere nothing)."""
    if hasattr(os, "setpriority"):
        _renice(threading.get_native_id())


def lower_process(pid: int) -> None:
    """Lower a child process's CPU priority (its threads and children inherit it)."""
    if hasattr(os, "setpriority"):
        _renice(pid)


def _renice(who: int) -> None:
    try:
        current = os.getpriority(os.PRIO_PROCESS, who)
        os.setpriority(os.PRIO_PROCESS, who, min(19, current + NICE))
    except OSError as exc:  # the process ended already, or the system refuses: it runs at normal priority
        log.debug("priority of %s not lowered: %s", who, exc)
