#!/usr/bin/env python3
"""Benchmark: the metadata database on SQLite against PostgreSQL, and one instance against two.

Run on demand (pytest does not collect it), from the repository root:

    .venv/bin/python tests/bench/bench_metadata.py [--backups 10000] [--requests 40]

For SQLite and for PostgreSQL metadata (a database `pgmeta_bench_…` made on the test server and dropped),
with a catalogue of --backups rows, it starts the server as `python -m ehr_backup` runs it and measures:
  - audit entries appended per second: one process, then two processes at once (writers take turns);
  - a session check (what every page action and cookie request does): p50;
  - service list_page(limit=100): p50/p95; GET /list?limit=100 walking the cursors: p50/p95;
  - 20 clients at once, GET /list?limit=100: p95 against one instance, and (PostgreSQL only) spread over
    two instances on the same metadata.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.catalogue_fill import fill
from tests.conftest import ADMIN_PW, ADMIN_URL, _free_port, run_sql, url_for
from tests.live_server import LiveServer

APPEND = ("import sys, time\nfrom ehr_backup.config import Settings\nfrom ehr_backup.service import BackupService\n"
          "from ehr_backup.audit import Actor\nsvc = BackupService(Settings.from_env())\nsys.stdin.readline()\n"
          "t = time.perf_counter()\nfor i in range(int(sys.argv[1])):\n"
          "    svc.audit.record(Actor('bench'), 'bench.write', str(i))\nprint(time.perf_counter() - t)\n")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def appends_per_s(env: dict[str, str], processes: int, n: int = 300) -> float:
    procs = [subprocess.Popen([sys.executable, "-c", APPEND, str(n)], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    t = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    for p in procs:
        p.communicate(timeout=600)
    return processes * n / (time.perf_counter() - t)


def measure(size: int, requests: int, meta_url: str | None) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="ehr-bench-meta-", dir="/var/tmp"))
    extra = {"EHR_BACKUP_METADATA_URL": meta_url} if meta_url else {}
    server = LiveServer(base, extra_env=extra, prepare=lambda s: fill(s, size, directory=base / "backups"))
    second = None
    out: dict[str, float] = {}
    try:
        svc = server._service
        out["audit appends/s, 1 process"] = appends_per_s(server.env, 1)
        out["audit appends/s, 2 processes"] = appends_per_s(server.env, 2)
        _, cookie = server.auth.login("alice", ADMIN_PW, "127.0.0.1")
        times = []
        for _ in range(200):
            t = time.perf_counter()
            server.auth.session(cookie, "127.0.0.1")
            times.append(time.perf_counter() - t)
        out["session check p50 ms"] = statistics.median(times) * 1000
        times, cursor = [], None
        for _ in range(requests):
            t = time.perf_counter()
            cursor = svc.list_page(limit=100, cursor=cursor)["nextCursor"]
            times.append(time.perf_counter() - t)
        out["service list_page p50 ms"] = statistics.median(times) * 1000
        out["service list_page p95 ms"] = pct(times, 95) * 1000
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        urls = [server.url]
        if meta_url:  # a second instance: its own data directory and port, the same metadata and storage
            port = _free_port()
            second = subprocess.Popen([sys.executable, "-m", "ehr_backup"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL,
                                      env={**server.env, "EHR_BACKUP_PORT": str(port),
                                           "EHR_BACKUP_DATA_DIR": str(base / "data2")})
            urls.append(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(urls[1] + "/healthz", timeout=2)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline
                    time.sleep(0.3)
        with httpx.Client(headers=headers, timeout=60) as client:
            client.get(server.url + "/api/admin/backup/list", params={"limit": 100})
            times, cursor = [], None
            for _ in range(requests):
                t = time.perf_counter()
                r = client.get(server.url + "/api/admin/backup/list",
                               params={"limit": 100, **({"cursor": cursor} if cursor else {})})
                times.append(time.perf_counter() - t)
                cursor = r.json()["nextCursor"]
            out["GET /list page p50 ms"] = statistics.median(times) * 1000
            out["GET /list page p95 ms"] = pct(times, 95) * 1000
            for label, targets in (("1 instance", urls[:1]), ("2 instances", urls)):
                if len(targets) < 2 and label == "2 instances":
                    continue

                def one(i: int, targets: list[str] = targets) -> float:
                    t = time.perf_counter()
                    r = client.get(targets[i % len(targets)] + "/api/admin/backup/list", params={"limit": 100})
                    assert r.status_code == 200
                    return time.perf_counter() - t

                for url in targets:
                    client.get(url + "/api/admin/backup/list", params={"limit": 100})  # warm up
                with ThreadPoolExecutor(20) as pool:
                    together = list(pool.map(one, range(120)))
                out[f"20 clients /list p95 ms, {label}"] = pct(together, 95) * 1000
    finally:
        if second is not None:
            second.terminate()
            second.wait(20)
        server.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backups", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    name = f"pgmeta_bench_{uuid.uuid4().hex[:8]}"
    run_sql(ADMIN_URL, f'CREATE DATABASE "{name}"')
    try:
        results = {"SQLite": measure(args.backups, args.requests, None),
                   "PostgreSQL": measure(args.backups, args.requests, url_for(name))}
    finally:
        run_sql(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    names = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"| measure ({args.backups:,} backups) | SQLite | PostgreSQL |\n|---|---:|---:|")
    for n in names:
        print(f"| {n} | " + " | ".join(f"{r[n]:.1f}" if n in r else "—" for r in results.values()) + " |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
