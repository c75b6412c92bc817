"""Verified reads of a version-2 backup from any point: several loaders read one file at once.

A version-2 body is a series of independently compressed frames of FRAME plaintext bytes each, and the
trailer lists each frame's compressed size and the SHA-256 of every SEGMENT of ciphertext. To read the
dump from plaintext offset P: find the frame holding P, start AES-CBC decryption at the cipher block
holding the frame's first byte (CBC needs only the previous cipher block as IV), decompress from the
frame's start and skip to P. Every segment is checked against its listed hash before any of it is
decrypted, and the list itself is covered by the whole-file MAC checked first; so nothing a loader
reads can differ from what was authenticated, even if the file changes meanwhile.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import os
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import compression
from .errors import NotAuthentic
from .fileformat import BLOCK, SEGMENT, OpenedFile, _unpad


class RandomReader:
    """Plaintext of an authenticated version-2 file from any offset, every byte verified."""

    def __init__(self, opened: OpenedFile, trailer: dict[str, Any]) -> None:
        try:
            seg = trailer["segments"]
            frames = trailer["frames"]
            if int(seg["size"]) != SEGMENT:
                raise ValueError
            self._digests = base64.b64decode(seg["sha256"], validate=True)
            self.frame = int(frames["size"])
            sizes = array("I")
            sizes.frombytes(base64.b64decode(frames["sizes"], validate=True))
            if array("I", [1]).tobytes() != (1).to_bytes(4, "little"):
                sizes.byteswap()
        except (KeyError, TypeError, ValueError):
            raise NotAuthentic() from None
        # a file is read by offset with os.pread; an S3 object (destinations/s3.py) by ranged GETs
        pread = getattr(opened.fh, "pread", None)
        self._pread = pread if pread is not None else partial(os.pread, opened.fh.fileno())
        self._key = opened.enc_key
        self._iv = bytes.fromhex(opened.header.fields["iv"])
        self._body_offset = opened.header.body_offset
        self._body_len = opened.body_len
        self._algorithm = str(opened.header.fields.get("compression"))
        self._starts = array("Q", [0])  # compressed offset of each frame
        for n in sizes:
            self._starts.append(self._starts[-1] + n)
        if len(self._digests) != 32 * -(-self._body_len // SEGMENT) or self.frame <= 0:
            raise NotAuthentic()

    def read_from(self, offset: int) -> Iterator[bytes]:
        """The dump from plaintext offset `offset` to its end, in pieces."""
        k = offset // self.frame
        if k >= len(self._starts) - 1:
            raise NotAuthentic()
        skip = offset - k * self.frame
        for piece in compression.decompress(self._algorithm, self._ciphertext_plain(self._starts[k])):
            if skip:
                if len(piece) <= skip:
                    skip -= len(piece)
                    continue
                piece = piece[skip:]
                skip = 0
            yield piece

    def frames_in_parallel(self, threads: int) -> Iterator[bytes]:
        """The whole dump, its frames decompressed on `threads` threads, yielded in order.

        Decryption (fast, and a chain) stays on the calling thread; decompression, the heavy part, runs
        on the others (zlib-ng and zstd release the GIL), a few frames ahead at most.
        """
        pending: deque[Future[bytes]] = deque()
        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="unpack") as pool:
            for frame in self._compressed_frames():
                pending.append(pool.submit(compression.decompress_frame, self._algorithm, frame))
                while len(pending) > 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _compressed_frames(self) -> Iterator[bytes]:
        """The body decrypted and cut into its compressed frames, by the sizes the trailer lists."""
        sizes = [self._starts[i + 1] - self._starts[i] for i in range(len(self._starts) - 1)]
        it = iter(sizes)
        want = next(it, None)
        buf = bytearray()
        for piece in self._ciphertext_plain(0):
            buf += piece
            while want is not None and len(buf) >= want:
                yield bytes(buf[:want])
                del buf[:want]
                want = next(it, None)
        if want is not None or buf:
            raise NotAuthentic()

    def _ciphertext_plain(self, start: int) -> Iterator[bytes]:
        """Decrypt the body from compressed offset `start` to its end (checked segment by segment)."""
        block = start // BLOCK
        first = (block - 1) * BLOCK if block else 0  # the previous cipher block is the IV
        drop = start - block * BLOCK
        dec = None
        held = b""
        for seg_start, data in self._segments_from(first):
            view = memoryview(data)[first - seg_start:] if seg_start < first else memoryview(data)
            if dec is None:
                if block:
                    iv, view = bytes(view[:BLOCK]), view[BLOCK:]
                else:
                    iv = self._iv
                dec = Cipher(algorithms.AES(self._key), modes.CBC(iv)).decryptor()
            out = held + dec.update(view)
            held = out[-BLOCK:]
            out = out[:-BLOCK]
            if drop:
                out, drop = out[drop:], max(0, drop - len(out))
            if out:
                yield out
        assert dec is not None
        last = _unpad(held + dec.finalize())
        if drop:
            last = last[drop:]
        if last:
            yield last

    def _segments_from(self, offset: int) -> Iterator[tuple[int, bytes]]:
        """Whole segments of the body from the one holding `offset`, each checked against its hash."""
        i = offset // SEGMENT
        while i * SEGMENT < self._body_len:
            start = i * SEGMENT
            size = min(SEGMENT, self._body_len - start)
            data = self._pread(size, self._body_offset + start)
            if len(data) != size or not hmac.compare_digest(hashlib.sha256(data).digest(),
                                                             self._digests[32 * i:32 * i + 32]):
                raise NotAuthentic()
            yield start, data
            i += 1

    def frame_of(self, offset: int) -> int:
        """The index of the frame holding a plaintext offset."""
        return offset // self.frame

    def frames(self) -> int:
        """How many frames the body has."""
        return len(self._starts) - 1

    def compressed_start(self, k: int) -> int:
        """Compressed offset where frame k starts."""
        return self._starts[k]

    def frame_at_compressed(self, offset: int) -> int:
        """The frame holding a compressed offset."""
        return bisect.bisect_right(self._starts, offset) - 1
