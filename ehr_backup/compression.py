"""Streaming compressors (gzip via libdeflate, zstd), chosen by the name the file header records."""

from __future__ import annotations

import threading
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import deflate
import zstandard
from zlib_ng import zlib_ng

from .background import lower_thread
from .errors import InvalidInput, NotAuthentic

ALGORITHMS = ("gzip", "zstd")
EXTENSIONS = {"gzip": "gz", "zstd": "zst"}
# libdeflate level 6 in 1 MiB members: 1.8% smaller than gzip -9 on a 305 MB EHR-like dump, at 71 MB/s
# per core (zlib-ng needed level 7 and 47 MB/s to get below gzip -9 at all); see tests/bench/.
DEFAULT_LEVELS = {"gzip": 6, "zstd": 3}
FRAME = 1024 * 1024  # plaintext bytes per independently compressed frame
LEVEL_RANGES = {"gzip": (1, 12), "zstd": (1, 19)}
OUT_CHUNK = 1024 * 1024


class Sink(Protocol):
    """Where compressed bytes go (the encrypting writer)."""

    def write(self, data: bytes | bytearray | memoryview) -> int: ...


def check(algorithm: str, level: int | None) -> int:
    """Validate an algorithm and level, returning the level to use."""
    if algorithm not in ALGORITHMS:
        raise InvalidInput(f"unknown compression {algorithm!r}: choose gzip or zstd")
    if level is None:
        return DEFAULT_LEVELS[algorithm]
    low, high = LEVEL_RANGES[algorithm]
    if not low <= level <= high:
        raise InvalidInput(f"{algorithm} level must be between {low} and {high}")
    return level


class ParallelFrames:
    """The dump as a series of independent frames of FRAME bytes each, compressed on several threads.

    gzip: each frame is a gzip member (libdeflate); zstd: each frame is a zstd frame. Any reader
    (gunzip, zstd -d, our restore) reads the concatenation as one stream; and because every frame
    starts afresh, a restore can begin decompressing at any frame, knowing where it starts from the
    compressed sizes recorded here (`sizes`). Both libraries release the GIL, so the threads really
    run in parallel; output is written in input order, from the caller's thread, with at most two
    frames per thread in flight.
    """

    def __init__(self, sink: Sink, algorithm: str, level: int, threads: int) -> None:
        self._sink = sink
        # the workers yield the CPU to the web server's event loop (background.py); they hold no GIL
        # while they compress, so a lower priority never keeps a thread that needs the GIL waiting long
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix=algorithm, initializer=lower_thread)
        self._pending: deque[Future[bytes]] = deque()
        self._limit = 2 * max(1, threads)
        self._parts: list[bytes] = []
        self._size = 0
        self.sizes = array("I")  # compressed size of each frame, in order
        if algorithm == "gzip":
            self._compress: Any = lambda block: deflate.gzip_compress(block, level)
        else:
            local = threading.local()

            def zstd_frame(block: bytes) -> bytes:
                if not hasattr(local, "cctx"):  # a compressor per thread: they are not thread-safe
                    local.cctx = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                                          write_content_size=True)
                return bytes(local.cctx.compress(block))

            self._compress = zstd_frame

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue data for compression (whole frames go to the workers as soon as they are complete)."""
        self._parts.append(bytes(data))
        self._size += len(data)
        if self._size >= FRAME:
            joined = b"".join(self._parts)
            cut = len(joined) - len(joined) % FRAME
            for start in range(0, cut, FRAME):
                self._submit(joined[start:start + FRAME])
            rest = joined[cut:]
            self._parts, self._size = ([rest] if rest else []), len(rest)
        return len(data)

    def _submit(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(self._compress, block))
        while len(self._pending) > self._limit:
            self._emit(self._pending.popleft().result())

    def _emit(self, frame: bytes) -> None:
        self.sizes.append(len(frame))
        self._sink.write(frame)

    def abort(self) -> None:
        """Stop the workers and drop pending frames."""
        self._pending.clear()
        self._pool.shutdown(cancel_futures=True)

    def close(self) -> None:
        """Compress what is left and write every frame."""
        try:
            if self._size or not (self.sizes or self._pending):
                self._submit(b"".join(self._parts))
                self._parts, self._size = [], 0
            while self._pending:
                self._emit(self._pending.popleft().result())
        finally:
            self._pool.shutdown(cancel_futures=True)


def discard(stream: Any) -> None:
    """Abandon a compressor after an error, without writing anything more."""
    if isinstance(stream, ParallelFrames):
        stream.abort()


def open_compressor(algorithm: str, sink: Sink, level: int, threads: int) -> ParallelFrames:
    """Return a writable stream that compresses into `sink`; close() writes the end of the stream."""
    check(algorithm, level)
    return ParallelFrames(sink, algorithm, level, threads)


def decompress(algorithm: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield decompressed pieces of at most about 1 MiB; corrupt input raises NotAuthentic."""
    if algorithm == "gzip":
        return _gunzip(chunks)
    if algorithm == "zstd":
        return _unzstd(chunks)
    raise NotAuthentic()


def decompress_frame(algorithm: str, frame: bytes) -> bytes:
    """One whole frame (a gzip member, a zstd frame); anything else in it is damage."""
    try:
        if algorithm == "gzip":
            d = zlib_ng.decompressobj(wbits=31)
            out = d.decompress(frame)
            if not d.eof or d.unused_data:
                raise NotAuthentic()
            return bytes(out)
        if algorithm == "zstd":
            return bytes(zstandard.ZstdDecompressor().decompress(frame))
    except (zlib_ng.error, zstandard.ZstdError):
        raise NotAuthentic() from None
    raise NotAuthentic()


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    d = zlib_ng.decompressobj(wbits=31)
    started = False
    try:
        for data in chunks:
            while data:
                started = True
                out = d.decompress(data, OUT_CHUNK)
                if out:
                    yield out
                data = d.unconsumed_tail
                while len(out) == OUT_CHUNK and not data and not d.eof:
                    out = d.decompress(b"", OUT_CHUNK)
                    if out:
                        yield out
                if d.eof:  # a gzip file may hold several members
                    data = d.unused_data
                    d = zlib_ng.decompressobj(wbits=31)
                    started = bool(data)
        if started:  # input ended inside a member
            raise NotAuthentic()
    except zlib_ng.error:
        raise NotAuthentic() from None


class _IterReader:
    """A minimal file-like reader over an iterator of byte strings."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return b""
        if n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _unzstd(chunks: Iterator[bytes]) -> Iterator[bytes]:
    reader: Any = zstandard.ZstdDecompressor().stream_reader(_IterReader(chunks), read_across_frames=True)
    try:
        while out := reader.read(OUT_CHUNK):
            yield out
    except zstandard.ZstdError:
        raise NotAuthentic() from None
