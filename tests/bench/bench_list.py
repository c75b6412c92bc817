#!/usr/bin/env python3
"""Benchmark: the backup list and the backup page with 100 and with 10,000 backups, side by side.

Run on demand (pytest does not collect it), from the repository root:

    .venv/bin/python tests/bench/bench_list.py [--sizes 100,10000] [--views 5] [--requests 40]

For each size it fills a fresh catalogue directly (rows only; the newest 100 get a tiny file), starts
the server as `python -m ehr_backup` runs it, and measures:
  - service list_page(limit=100), in this process: p50/p95 over first and cursor pages;
  - GET /api/admin/backup/list?limit=100 (with cursors): p50/p95, one client; and 20 clients at once;
  - GET /list without paging (every backup, streamed): seconds and the server's memory growth;
  - the backup page in Chromium: time from navigation to the first table row, the server's CPU seconds
    and memory growth per page view (median; and the worst view), the largest latency of GET /healthz
    (which does no work) polled every 20 ms during the page views (this includes waiting for a CPU on a
    busy machine), and the slowest single step of the event loop, from asyncio's debug mode in a second
    server (every step over 100 ms is logged; 0 means none);
  - a script fetching the page without a browser: the server's CPU for it (no rows are built).
Prints a table (also as Markdown) with the issue's targets marked PASS/FAIL; exit 1 when one is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.catalogue_fill import fill  # noqa: E402
from tests.conftest import ADMIN_PW  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class StallProbe:
    """Poll GET /healthz every 20 ms from a thread; the largest latency bounds the event loop's stalls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                t = time.perf_counter()
                client.get(f"{self.url}/healthz")
                self.worst = max(self.worst, time.perf_counter() - t)
                time.sleep(0.02)


def measure(size: int, views: int, requests: int) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix=f"ehr-bench-list-{size}-", dir="/var/tmp"))
    t = time.perf_counter()
    server = LiveServer(base, prepare=lambda s: fill(s, size, directory=base / "backups", files=100))
    out: dict[str, float] = {"fill+start s": time.perf_counter() - t}
    try:
        svc = server._service
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        # the service, in this process
        times, cursor = [], None
        for _ in range(requests):
            t = time.perf_counter()
            page = svc.list_page(limit=100, cursor=cursor)
            times.append(time.perf_counter() - t)
            cursor = page["nextCursor"]
        out["service page p50 ms"] = statistics.median(times) * 1000
        out["service page p95 ms"] = pct(times, 95) * 1000
        # the API, one client, then 20 at once
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            client.get("/api/admin/backup/list", params={"limit": 100})  # warm up
            times, cursor = [], None
            for _ in range(requests):
                t = time.perf_counter()
                params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                r = client.get("/api/admin/backup/list", params=params)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                cursor = r.json()["nextCursor"]
            out["GET /list page p50 ms"] = statistics.median(times) * 1000
            out["GET /list page p95 ms"] = pct(times, 95) * 1000

            def one(_: int) -> float:
                t = time.perf_counter()
                assert client.get("/api/admin/backup/list", params={"limit": 100}).status_code == 200
                return time.perf_counter() - t

            with ThreadPoolExecutor(20) as pool:
                together = list(pool.map(one, range(60)))
            out["20 clients /list p95 ms"] = pct(together, 95) * 1000
            rss = server.rss_kb()
            t = time.perf_counter()
            r = client.get("/api/admin/backup/list")
            out["full /list s"] = time.perf_counter() - t
            assert len(r.json()["backups"]) == size
            out["full /list RSS +MB"] = (server.rss_kb() - rss) / 1024
            # a script fetching the page: no websocket, so no rows are built
            _, token = server.auth.login("alice", ADMIN_PW, "127.0.0.1")
            cpu = cpu_seconds(server.proc.pid)
            for _ in range(5):
                assert client.get("/admin/backup", cookies={"ehr_session": token}).status_code == 200
            out["script fetch CPU s"] = (cpu_seconds(server.proc.pid) - cpu) / 5
        out.update(page_views(server, token, views))
    finally:
        server.stop()
    out["slowest loop step ms"] = slowest_loop_step(size, views)
    return out


def slowest_loop_step(size: int, views: int) -> float:
    """The longest single step of the server's event loop during page views, as asyncio's debug mode
    reports every step over 100 ms ("Executing … took 0.312 seconds"); 0 when none was that slow.

    A separate server in debug mode (which costs some speed), so the figures above are not affected.
    """
    base = Path(tempfile.mkdtemp(prefix=f"ehr-bench-loop-{size}-", dir="/var/tmp"))
    server = LiveServer(base, extra_env={"PYTHONASYNCIODEBUG": "1"},
                        prepare=lambda s: fill(s, size, directory=base / "backups", files=100))
    try:
        _, token = server.auth.login("alice", ADMIN_PW, "127.0.0.1")
        page_views(server, token, views)
    finally:
        server.stop()
    steps = [float(m) for m in re.findall(r"took (\d+\.\d+) seconds", server.log_path.read_text())]
    return max(steps, default=0.0) * 1000


def page_views(server: LiveServer, token: str, views: int) -> dict[str, float]:
    """Open the backup page in Chromium `views` times; time to the first row, the server's CPU and memory."""
    from playwright.sync_api import sync_playwright

    firsts, cpus, mems = [], [], []
    with sync_playwright() as p, StallProbe(server.url) as probe:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_cookies([{"name": "ehr_session", "value": token, "url": server.url}])
        page = context.new_page()
        for i in range(views + 1):
            cpu, rss = cpu_seconds(server.proc.pid), server.rss_kb()
            t = time.perf_counter()
            page.goto(f"{server.url}/admin/backup")
            page.locator("[data-testid^='row-']").first.wait_for(timeout=60_000)
            first = time.perf_counter() - t
            page.wait_for_timeout(500)  # the rest of the page settles (dashboard, storage, schedules)
            if i:  # the first view warms caches and imports
                firsts.append(first)
                cpus.append(cpu_seconds(server.proc.pid) - cpu)
                mems.append((server.rss_kb() - rss) / 1024)
            page.goto("about:blank")
        browser.close()
        stall = probe.worst
    return {"page first row s": statistics.median(firsts), "page CPU s/view": statistics.median(cpus),
            "page RSS +MB/view": statistics.median(mems), "page RSS +MB worst view": max(mems),
            "healthz worst ms": stall * 1000}


TARGETS = {"GET /list page p95 ms": 100, "page first row s": 1.5, "page CPU s/view": 0.2, "page RSS +MB/view": 20,
           "slowest loop step ms": 100, "20 clients /list p95 ms": 300}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument("--views", type=int, default=5, help="page views measured per size (after one warm-up)")
    parser.add_argument("--requests", type=int, default=40, help="sequential list requests per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    results = {n: measure(n, args.views, args.requests) for n in sizes}
    names = list(next(iter(results.values())))
    failed = False
    lines = ["| measure | " + " | ".join(f"{n:,} backups" for n in sizes) + " | target |",
             "|---|" + "---|" * len(sizes) + "---|"]
    for name in names:
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            ok = all(results[n][name] <= target for n in sizes)
            failed |= not ok
            verdict = f"< {target} {'PASS' if ok else 'FAIL'}"
        lines.append(f"| {name} | " + " | ".join(f"{results[n][name]:.3f}" for n in sizes) + f" | {verdict} |")
    if len(sizes) > 1:
        small, big = results[sizes[0]]["page first row s"], results[sizes[-1]]["page first row s"]
        ok = big <= small * 1.2 + 0.05  # 50 ms of slack: at these times a single scheduler hiccup is 20 %
        failed |= not ok
        lines.append(f"| first row, {sizes[-1]:,} vs {sizes[0]:,} | {big / small:.2f}x | | "
                     f"<= 1.2x {'PASS' if ok else 'FAIL'} |")
    print("\n".join(lines))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
