"""A real S3 server for the destination tests: moto_server started as a process on 127.0.0.1 on a free port.

Authentication is enforced once the test users exist: `full` may do anything in S3, `readonly` may only list
and read, so wrong credentials and missing permissions are answered as a real S3 service answers them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from .conftest import _free_port

POLICIES = {
    "full": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]},
    "readonly": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}]},
}


@dataclass
class S3Server:
    """One moto_server process and the access keys of its users."""

    port: int
    proc: subprocess.Popen[bytes]
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, user: str = "full") -> Any:
        """A boto3 client acting as a test user (path-style, like the destinations the tests add)."""
        key_id, secret = self.keys[user]
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=key_id,
                            aws_secret_access_key=secret)

    def bucket(self, prefix: str = "s3-") -> str:
        """A new empty bucket with a unique name."""
        name = f"{prefix}{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys_in(self, bucket: str) -> list[str]:
        """Every object key in a bucket."""
        return [o["Key"] for o in self.client().list_objects_v2(Bucket=bucket).get("Contents", [])]

    def uploads_in(self, bucket: str) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        return [u["Key"] for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crashed or unreachable endpoint."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start listening")


def start(log_dir: Path) -> S3Server:
    """Start moto_server, create the test users with their policies, then turn authentication on."""
    port = _free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AWS_"))}
    log = open(log_dir / f"moto-{port}.log", "wb")  # noqa: SIM115 - the process holds it
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    server = S3Server(port, proc)
    try:
        _wait_listening(port, proc)
        iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        for user, policy in POLICIES.items():
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName=f"{user}-s3", PolicyDocument=json.dumps(policy))
            made = iam.create_access_key(UserName=user)["AccessKey"]
            server.keys[user] = (made["AccessKeyId"], made["SecretAccessKey"])
        # from now on every request must be signed by a known key and allowed by its user's policy
        urllib.request.urlopen(urllib.request.Request(f"{server.url}/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"}), timeout=10).read()
    except BaseException:
        server.kill()
        raise
    return server


class ThrottledProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that passes uploads at a limited rate: a slow
    destination, for real sockets (nothing in the code under test is replaced)."""

    def __init__(self, upstream_port: int, bytes_per_second: int, port: int = 0) -> None:
        import threading

        self.upstream_port, self.rate = upstream_port, bytes_per_second
        self.conns: list[socket.socket] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a new proxy may take the same port
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while data := src.recv(64 * 1024):
                if slow:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop listening and cut every connection: to the client, the endpoint is gone mid-request."""
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
