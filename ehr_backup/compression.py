"""Streaming compressors (gzip via zlib-ng, zstd), chosen by the name the file header records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, Protocol

import zstandard
from zlib_ng import gzip_ng_threaded, zlib_ng

from .errors import InvalidInput, NotAuthentic

ALGORITHMS = ("gzip", "zstd")
EXTENSIONS = {"gzip": "gz", "zstd": "zst"}
# zlib-ng level 7 is the fastest level whose files are no larger than gzip -9's (measured on a 305 MB
# EHR-like dump: level 6 +0.49%, level 7 -1.3%, level 9 +0.7%); see tests/bench/.
DEFAULT_LEVELS = {"gzip": 7, "zstd": 3}
ZSTD_JOB_SIZE = 2 * 1024 * 1024  # small multi-threaded jobs: ~40 MB less memory, same size and speed
LEVEL_RANGES = {"gzip": (1, 9), "zstd": (1, 19)}
OUT_CHUNK = 1024 * 1024


class Sink(Protocol):
    """Where compressed bytes go (the encrypting writer)."""

    def write(self, data: bytes | bytearray | memoryview) -> int: ...


class SafeSink:
    """Wrap a sink so that a write error is remembered instead of raised in a worker thread.

    zlib-ng's threaded writer calls the sink from its own thread; an exception there would stop that
    thread and leave the producer blocked on a full queue. The pipeline checks `.error` after each chunk.
    """

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.error: BaseException | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Pass data on unless an earlier write failed."""
        if self.error is None:
            try:
                self._sink.write(data)
            except BaseException as exc:  # noqa: BLE001 - handed back to the pipeline thread
                self.error = exc
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here."""

    def writable(self) -> bool:
        """Tell io wrappers that this object accepts writes."""
        return True


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


def open_compressor(algorithm: str, sink: SafeSink, level: int, threads: int) -> IO[bytes]:
    """Return a writable stream that compresses into `sink`; close() writes the end of the stream."""
    if algorithm == "gzip":
        return gzip_ng_threaded.open(sink, "wb", compresslevel=level, threads=max(1, threads))
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
