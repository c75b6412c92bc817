"""One encrypted byte stream written to extra sinks (S3 uploads) beside the local file, each on its own thread.

Each sink has a bounded queue: a slow destination makes the backup wait (backpressure) instead of holding the
stream in memory, so memory stays at most QUEUE chunks plus one part per sink. A failing sink records its error
and drops what follows; it never fails the local file or the other sinks.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BackupError
from .s3 import MultipartWriter, abort_stale_uploads, delete
from .store import Target

log = logging.getLogger("ehr_backup.destinations")
QUEUE = 4  # chunks (about 1 MiB each) waiting per sink
_END = object()


@dataclass
class SinkResult:
    """What one sink made: its copy's address, size, SHA-256, or the error that stopped it."""

    destination: str
    uri: str
    size: int
    sha256: str | None
    error: str | None


class S3Sink:
    """An S3 multipart upload fed from a bounded queue by the backup's thread."""

    def __init__(self, target: Target, key: str, part_size: int,
                 stale: Callable[[str], bool] | None = None) -> None:
        self.target, self.key = target, key
        self._stale = stale  # which leftover uploads under the prefix belong to no live backup
        self.part_size = part_size
        self.error: str | None = None
        self.uri = target.uri(key)
        self._queue: queue.Queue[Any] = queue.Queue(QUEUE)
        self._writer: MultipartWriter | None = None
        self._completed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sink-{target.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._stale is not None:  # on this thread: the local file does not wait for it
                for key in abort_stale_uploads(self.target, self._stale):
                    log.warning("aborted the unfinished upload of %s left at %s", key, self.target.name)
            self._writer = MultipartWriter(self.target, self.key, self.part_size)
            while True:
                item = self._queue.get()
                if item is _END or self._stop.is_set():
                    break
                self._writer.write(item)
            if not self._stop.is_set():
                self._writer.complete()
                self._completed = True
        except BackupError as exc:
            self.error = exc.message
        except Exception as exc:  # noqa: BLE001 - a sink's own failure must not end the backup
            self.error = f"internal error: {exc.__class__.__name__}"
            log.warning("copy to %s failed: %s", self.target.name, self.error)
        finally:
            if not self._completed and self._writer is not None:
                self._writer.abort()
            while not self._queue.empty():  # unblock a writer waiting on a full queue
                self._drain()

    def _drain(self) -> None:
        try:
            self._queue.get_nowait()
        except queue.Empty:
            pass

    def write(self, data: bytes | memoryview) -> None:
        """Queue a copy of the bytes (the caller reuses its buffer); waits while the queue is full."""
        if self.error is not None or not self._thread.is_alive():
            return
        item = bytes(data)
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> SinkResult:
        """Wait for the upload to complete (or fail) and say which."""
        self._put_end()
        self._thread.join()
        if not self._completed and self.error is None:
            self.error = "the upload did not complete"
        w = self._writer
        return SinkResult(self.target.name, self.uri, w.size if w else 0,
                          w.sha.hexdigest() if w and self._completed else None, self.error)

    def abort(self) -> None:
        """Stop: drop the upload, or delete the object if it already completed."""
        self._stop.set()
        self._put_end()
        self._thread.join()
        if self._completed:
            try:
                delete(self.target, self.key)
            except BackupError as exc:
                log.warning("could not remove %s after the backup failed: %s", self.uri, exc.message)
            self._completed = False

    def _put_end(self) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(_END, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set():
                    self._drain()
