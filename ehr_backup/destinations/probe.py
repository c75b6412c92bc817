"""Test a destination: list, write, read and delete a small probe object; say exactly which step fails."""

from __future__ import annotations

import secrets
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .s3 import client, explain
from .store import Target

PROBE_PREFIX = ".ehr-backup-probe-"


def probe(target: Target) -> dict[str, Any]:
    """Run the four checks in order; {ok, checks: [{name, ok, message}], message} (the first failure named)."""
    st = target.settings
    s3 = client(target, timeout=10)
    key = f"{st.prefix}{PROBE_PREFIX}{secrets.token_hex(8)}"
    body = secrets.token_bytes(64)
    checks: list[dict[str, Any]] = []
    started = time.monotonic()

    def step(name: str, doing: str, call: Any) -> bool:
        try:
            call()
        except (ClientError, BotoCoreError) as exc:
            checks.append({"name": name, "ok": False, "message": explain(exc, target, doing).message})
            return False
        checks.append({"name": name, "ok": True, "message": f"{doing}: ok"})
        return True

    def read() -> None:
        got = s3.get_object(Bucket=st.bucket, Key=key)["Body"].read()
        if got != body:
            raise ClientError({"Error": {"Code": "ProbeMismatch"}}, "GetObject")

    ok = step("list", "listing the bucket (s3:ListBucket)",
              lambda: s3.list_objects_v2(Bucket=st.bucket, Prefix=st.prefix, MaxKeys=1))
    if ok or _only_list_denied(checks):  # a bucket that exists but may not be listed can still take backups
        wrote = step("write", "writing a probe object (s3:PutObject)",
                     lambda: s3.put_object(Bucket=st.bucket, Key=key, Body=body))
        if wrote:
            step("read", "reading it back (s3:GetObject)", read)
            step("delete", "deleting it (s3:DeleteObject)", lambda: s3.delete_object(Bucket=st.bucket, Key=key))
    failed = [c for c in checks if not c["ok"]]
    done = {c["name"] for c in checks}
    skipped = [n for n in ("list", "write", "read", "delete") if n not in done]
    message = ("all permissions present: list, write, read, delete" if not failed and not skipped
               else "; ".join(c["message"] for c in failed) + (f" (not tried: {', '.join(skipped)})" if skipped else ""))
    return {"destination": target.name, "ok": not failed and not skipped, "checks": checks, "message": message,
            "seconds": round(time.monotonic() - started, 2)}


def _only_list_denied(checks: list[dict[str, Any]]) -> bool:
    return bool(checks) and "permission denied" in checks[-1]["message"]
