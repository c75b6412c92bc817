"""Streaming compressors (gzip via libdeflate, zstd), chosen by the name the file header records."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, Protocol

import deflate
import zstandard
from zlib_ng import zlib_ng

from .errors import InvalidInput, NotAuthentic

ALGORITHMS = ("gzip", "zstd")
EXTENSIONS = {"gzip": "gz", "zstd": "zst"}
# libdeflate level 6 in 1 MiB members: 1.8% smaller than gzip -9 on a 305 MB EHR-like dump, at 71 MB/s
# per core (zlib-ng needed level 7 and 47 MB/s to get below gzip -9 at all); see tests/bench/.
DEFAULT_LEVELS = {"gzip": 6, "zstd": 3}
GZIP_BLOCK = 1024 * 1024
ZSTD_JOB_SIZE = 2 * 1024 * 1024  # small multi-threaded jobs: ~40 MB less memory, same size and speed
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


class ParallelGzip:
    """gzip as a series of independent 1 MiB members, compressed by libdeflate on several threads.

    Any gzip reader (gunzip, zlib, our restore) reads concatenated members as one stream. libdeflate
    releases the GIL, so the threads really run in parallel; output is written in input order, from the
    caller's thread, with at most two blocks per thread in flight.
    """

    def __init__(self, sink: Sink, level: int, threads: int) -> None:
        self._sink = sink
        self._level = level
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="gzip")
        self._pending: deque[Future[bytes]] = deque()
        self._limit = 2 * max(1, threads)
        self._parts: list[bytes] = []
        self._size = 0
        self._members = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue data for compression (whole blocks go to the workers as soon as they are complete)."""
        self._parts.append(bytes(data))
        self._size += len(data)
        if self._size >= GZIP_BLOCK:
            joined = b"".join(self._parts)
            cut = len(joined) - len(joined) % GZIP_BLOCK
            for start in range(0, cut, GZIP_BLOCK):
                self._submit(joined[start:start + GZIP_BLOCK])
            rest = joined[cut:]
            self._parts, self._size = ([rest] if rest else []), len(rest)
        return len(data)

    def _submit(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(deflate.gzip_compress, block, self._level))
        self._members += 1
        while len(self._pending) > self._limit:
            self._sink.write(self._pending.popleft().result())

    def abort(self) -> None:
        """Stop the workers and drop pending blocks."""
        self._pending.clear()
        self._pool.shutdown(cancel_futures=True)

    def close(self) -> None:
        """Compress what is left and write every member."""
        try:
            if self._size or not self._members:
                self._submit(b"".join(self._parts))
                self._parts, self._size = [], 0
            while self._pending:
                self._sink.write(self._pending.popleft().result())
        finally:
            self._pool.shutdown(cancel_futures=True)


def discard(stream: Any) -> None:
    """Abandon a compressor after an error, without writing anything more."""
    if isinstance(stream, ParallelGzip):
        stream.abort()


def open_compressor(algorithm: str, sink: Sink, level: int, threads: int) -> IO[bytes] | ParallelGzip:
    """Return a writable stream that compresses into `sink`; close() writes the end of the stream."""
    if algorithm == "gzip":
        return ParallelGzip(sink, level, threads)
    workers = threads if threads > 1 else 0
    params = zstandard.ZstdCompressionParameters.from_level(
        level, threads=workers, job_size=ZSTD_JOB_SIZE if workers else 0, write_checksum=True)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    return cctx.stream_writer(sink, closefd=False)  # type: ignore[return-value]


def decompress(algorithm: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield decompressed pieces of at most about 1 MiB; corrupt input raises NotAuthentic."""
    if algorithm == "gzip":
        return _gunzip(chunks)
    if algorithm == "zstd":
        return _unzstd(chunks)
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
