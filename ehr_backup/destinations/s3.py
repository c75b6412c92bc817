"""S3 through boto3: a client from a destination, a multipart writer in constant memory, a streaming reader.

Errors from botocore are translated here, once, into DestinationError sentences that say what is wrong
(bucket missing, credentials refused, permission missing, endpoint unreachable) and never hold a secret.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..errors import BackupError
from .store import Target

MIB = 1024 * 1024
MIN_PART = 5 * MIB  # S3's smallest part (all but the last)
READ_CHUNK = MIB


class DestinationError(BackupError):
    """An S3 destination refused or could not be reached; the message says which and why."""

    status = 502


def client(target: Target, *, timeout: float = 30) -> Any:
    """A boto3 S3 client for a destination: stored credentials, else the standard AWS chain."""
    st = target.settings
    config = Config(s3={"addressing_style": "path" if st.path_style else "virtual"},
                    retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=timeout, read_timeout=timeout,
                    # checksums only where S3 requires them: MinIO, Ceph and GCS interop reject the newer trailers
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    creds = target.credentials
    session = boto3.session.Session(aws_access_key_id=creds[0] if creds else None,
                                    aws_secret_access_key=creds[1] if creds else None,
                                    region_name=st.region or "us-east-1")
    return session.client("s3", endpoint_url=st.endpoint_url, config=config)


def explain(exc: BaseException, target: Target, doing: str) -> DestinationError:
    """A botocore failure as one sentence naming the destination, the operation and the cause."""
    where = f"destination {target.name} (s3://{target.settings.bucket}/{target.settings.prefix})"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",):
            why = f"the bucket {target.settings.bucket} does not exist"
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "InvalidToken",
                      "ExpiredToken", "AuthorizationHeaderMalformed"):
            why = f"the credentials were refused ({code})"
        elif code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            why = f"permission denied for {doing}"
        elif code == "NoSuchKey" or status == 404:
            why = "the object does not exist"
        elif code in ("PreconditionFailed",) or status == 412:
            why = "the object changed while it was being read"
        else:
            why = f"the server answered {code or status}"
        return DestinationError(f"{where}: {doing} failed: {why}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return DestinationError(f"{where}: no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile "
                                "(the standard AWS chain), or store them with the destination")
    if isinstance(exc, BotoConnectionError):
        endpoint = target.settings.endpoint_url or "the AWS endpoint"
        return DestinationError(f"{where}: {doing} failed: {endpoint} is unreachable")
    if isinstance(exc, BotoCoreError):
        return DestinationError(f"{where}: {doing} failed: {exc.__class__.__name__}")
    return DestinationError(f"{where}: {doing} failed: {exc.__class__.__name__}")


class MultipartWriter:
    """Write one object as a multipart upload, one part in memory at a time; abort() leaves nothing behind.

    The object appears in the bucket only when complete() succeeds: until then S3 lists nothing under its key,
    and abort_multipart_upload removes the parts already sent.
    """

    def __init__(self, target: Target, key: str, part_size: int, s3: Any = None) -> None:
        self.target, self.key = target, key
        self.part_size = max(MIN_PART, part_size)
        self.s3 = s3 or client(target)
        self.sha = hashlib.sha256()
        self.size = 0
        self._buf = bytearray()
        self._parts: list[dict[str, Any]] = []
        extra: dict[str, Any] = {}
        if target.settings.storage_class:
            extra["StorageClass"] = target.settings.storage_class
        if target.settings.sse:
            extra["ServerSideEncryption"] = "AES256"
        try:
            self.upload_id: str | None = self.s3.create_multipart_upload(
                Bucket=target.settings.bucket, Key=key, ContentType="application/octet-stream", **extra)["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            raise explain(exc, target, "starting the upload") from None

    def write(self, data: bytes | memoryview) -> int:
        """Hash and buffer; send a part whenever a whole one is held."""
        self.sha.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:  # fill the part exactly: the buffer never holds more than one part
            take = min(self.part_size - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == self.part_size:
                part, self._buf = self._buf, bytearray()
                self._send(part)
        return len(data)

    def _send(self, part: bytes | bytearray) -> None:
        number = len(self._parts) + 1
        try:
            answer = self.s3.upload_part(Bucket=self.target.settings.bucket, Key=self.key, UploadId=self.upload_id,
                                         PartNumber=number, Body=part)
        except (ClientError, BotoCoreError) as exc:
            raise explain(exc, self.target, f"uploading part {number}") from None
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> str:
        """Send the last part and make the object visible; return its s3:// address."""
        if self._buf or not self._parts:
            self._send(bytes(self._buf))
            self._buf = bytearray()
        try:
            self.s3.complete_multipart_upload(Bucket=self.target.settings.bucket, Key=self.key,
                                              UploadId=self.upload_id, MultipartUpload={"Parts": self._parts})
        except (ClientError, BotoCoreError) as exc:
            raise explain(exc, self.target, "completing the upload") from None
        self.upload_id = None
        return self.target.uri(self.key)

    def abort(self) -> None:
        """Drop the upload and every part sent (best effort: a server that is gone keeps nothing listed)."""
        self._buf = bytearray()
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        try:
            self.s3.abort_multipart_upload(Bucket=self.target.settings.bucket, Key=self.key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            pass  # unreachable now; a lifecycle rule for incomplete uploads cleans up what the server kept


class ObjectReader:
    """A read-only, seekable file over one object: sequential reads stream one GET; a seek starts a ranged one.

    Every GET names the ETag first seen, so an object replaced while it is read fails instead of mixing two.
    """

    def __init__(self, target: Target, key: str, s3: Any = None) -> None:
        self.target, self.key = target, key
        self.s3 = s3 or client(target)
        try:
            head = self.s3.head_object(Bucket=target.settings.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise explain(exc, target, f"reading {key}") from None
        self.size = int(head["ContentLength"])
        self.etag = head["ETag"]
        self.pos = 0
        self._body: Any = None
        self._body_pos = -1
        self.closed = False

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the read position (the open stream is kept when it is already there)."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _open_at(self, pos: int) -> None:
        self._drop()
        try:
            answer = self.s3.get_object(Bucket=self.target.settings.bucket, Key=self.key, IfMatch=self.etag,
                                        Range=f"bytes={pos}-")
        except (ClientError, BotoCoreError) as exc:
            raise explain(exc, self.target, f"reading {self.key}") from None
        self._body, self._body_pos = answer["Body"], pos

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes from the position (all the rest for n < 0)."""
        if self.pos >= self.size or n == 0:
            return b""
        want = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        if self._body is None or self._body_pos != self.pos:
            self._open_at(self.pos)
        out = bytearray()
        try:
            while len(out) < want:
                data = self._body.read(want - len(out))
                if not data:
                    break
                out += data
        except (BotoCoreError, OSError) as exc:
            self._drop()
            raise explain(exc, self.target, f"reading {self.key}") from None
        self.pos += len(out)
        self._body_pos = self.pos
        return bytes(out)

    def pread(self, n: int, offset: int) -> bytes:
        """n bytes at offset, leaving the position alone (for random reads of verified segments)."""
        if offset >= self.size:
            return b""
        try:
            answer = self.s3.get_object(Bucket=self.target.settings.bucket, Key=self.key, IfMatch=self.etag,
                                        Range=f"bytes={offset}-{min(self.size, offset + n) - 1}")
            return bytes(answer["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise explain(exc, self.target, f"reading {self.key}") from None

    def chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The whole object from the start, in pieces (a download), closed at the end."""
        try:
            self.seek(0)
            while data := self.read(size):
                yield data
        finally:
            self.close()

    def _drop(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # noqa: BLE001 - closing a stream that already failed
                pass
        self._body, self._body_pos = None, -1

    def close(self) -> None:
        """Release the open stream."""
        self._drop()
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def abort_stale_uploads(target: Target, stale: Callable[[str], bool], s3: Any = None) -> list[str]:
    """Abort multipart uploads under the prefix that `stale(key)` says no live backup owns (a process killed
    mid-upload leaves its parts behind, unlisted but stored); return their keys. Best effort."""
    s3 = s3 or client(target)
    aborted: list[str] = []
    try:
        answer = s3.list_multipart_uploads(Bucket=target.settings.bucket, Prefix=target.settings.prefix)
        for upload in answer.get("Uploads", []):
            if stale(upload["Key"]):
                s3.abort_multipart_upload(Bucket=target.settings.bucket, Key=upload["Key"],
                                          UploadId=upload["UploadId"])
                aborted.append(upload["Key"])
    except (ClientError, BotoCoreError):
        pass  # no permission to list uploads, or unreachable: the upload itself will say what is wrong
    return aborted


def delete(target: Target, key: str, s3: Any = None) -> None:
    """Delete one object (an absent one is already gone)."""
    try:
        (s3 or client(target)).delete_object(Bucket=target.settings.bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, target, f"deleting {key}") from None


def list_keys(target: Target, s3: Any = None) -> list[dict[str, Any]]:
    """Every object under the destination's prefix: key and size."""
    s3 = s3 or client(target)
    out: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=target.settings.bucket,
                                                                 Prefix=target.settings.prefix):
            out.extend({"key": o["Key"], "size": o["Size"]} for o in page.get("Contents", []))
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, target, "listing") from None
    return out
