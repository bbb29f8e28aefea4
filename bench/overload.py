"""One collector under about twice the load it serves, with wrk and 1,000 connections.

    .venv/bin/python bench/overload.py [--duration 30] [--connections 1000]
                                       [--max-in-flight 256] [--compare]

Not part of the test suite. POST /v1/events with one ~520-byte event per request (unique
messageIds, bench/events.lua), SQLite spool fsynced, delivery off. While wrk runs, a
probe GETs /healthz every 200 ms (10 s timeout) and the server's RSS is sampled twice a
second. Reported: accepted (2xx) events/s, the 503 share, wrk's latency percentiles over
every answer, /healthz's worst and p99 latency, RSS during and 5 s after, and whether the
spool holds every acknowledged event (it may hold more: requests in flight when wrk
stopped). `--compare` runs once more with the bound lifted (COLLECTOR_MAX_IN_FLIGHT very
high), to show what the bound changes.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest

UNBOUNDED = 1_000_000_000


@dataclass
class Probe:
    """/healthz latencies and server RSS, sampled on threads while wrk runs."""

    pid: int
    port: int
    health_ms: list[float] = field(default_factory=list)
    health_slow: list[tuple[float, float]] = field(default_factory=list)  # (s into the run, ms)
    health_failures: int = 0
    rss_mb: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def rss(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def _health(self) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with ingest._no_proxy.open(url, timeout=10) as resp:
                    resp.read()
                    if resp.status != 200:
                        self.health_failures += 1
            except OSError:
                self.health_failures += 1
            took = (time.perf_counter() - started) * 1000
            self.health_ms.append(took)
            if took > 1000:
                self.health_slow.append((started - self._started, took))
            self._stop.wait(0.2)

    def _memory(self) -> None:
        while not self._stop.is_set():
            self.rss_mb.append(self.rss())
            self._stop.wait(0.5)

    def __enter__(self) -> Probe:
        self._started = time.perf_counter()
        self._threads = [
            threading.Thread(target=t, daemon=True) for t in (self._health, self._memory)
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def run(args: argparse.Namespace, max_in_flight: int, label: str) -> bool:
    sc = ingest.Scenario("single", collector=True, batch=0)
    wrk_args = argparse.Namespace(
        threads=2, connections=args.connections, no_message_id=False, sync="full"
    )
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        workdir = Path(tmp)
        cmd, env = ingest.server_command(sc, workdir, wrk_args)
        env["COLLECTOR_MAX_IN_FLIGHT"] = str(max_in_flight)
        with ingest.server(cmd, env, workdir) as srv:
            url = f"http://127.0.0.1:{srv.port}/v1/events"
            rss_before = Probe(srv.proc.pid, srv.port).rss()
            with Probe(srv.proc.pid, srv.port) as probe:
                result = ingest.run_wrk(url, args.duration, sc, wrk_args, label, check=False)
            time.sleep(5)
            rss_after = probe.rss()
            with ingest._no_proxy.open(f"http://127.0.0.1:{srv.port}/healthz", timeout=2) as r:
                recovered = r.status == 200
        with contextlib.closing(sqlite3.connect(workdir / "spool.db")) as db:
            rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
    accepted = result.good
    refused = result.non2xx
    health = sorted(probe.health_ms)
    p99 = health[min(len(health) - 1, int(len(health) * 0.99))] if health else float("nan")
    extra = rows - accepted
    ok = 0 <= extra <= args.connections and probe.health_failures == 0 and recovered
    print(f"\n{label}: COLLECTOR_MAX_IN_FLIGHT={max_in_flight:,}, {args.connections} connections,"
          f" {args.duration:g} s")  # fmt: skip
    print(f"  answers        {result.requests:,} ({result.requests / result.seconds:,.0f}/s)")
    print(f"  accepted       {accepted:,} events ({accepted / result.seconds:,.0f} events/s)")
    print(f"  503 share      {100 * refused / max(result.requests, 1):.1f}%")
    print(
        f"  latency        p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms (wrk, every answer)"
    )
    errors = {k: v for k, v in result.socket_errors.items() if v}
    print(f"  socket errors  {errors or 'none'}")
    print(f"  /healthz       {len(health)} probes, p99 {p99:.0f} ms, worst {max(health, default=0):.0f} ms,"
          f" failures {probe.health_failures}")  # fmt: skip
    if probe.health_slow:
        slow = ", ".join(f"{ms:,.0f} ms at {at:.1f} s" for at, ms in probe.health_slow)
        print(f"                 over a second: {slow}")
    print(f"  RSS            before {rss_before:.0f} MB, during max {max(probe.rss_mb, default=0):.0f} MB"
          f" (median {statistics.median(probe.rss_mb) if probe.rss_mb else 0:.0f}), 5 s after {rss_after:.0f} MB")  # fmt: skip
    print(
        f"  spool          {rows:,} rows for {accepted:,} acknowledged (+{extra} in flight at the stop)"
    )
    print(f"  recovered      {'yes' if recovered else 'NO'}; checks {'passed' if ok else 'FAILED'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--compare", action="store_true", help="also run with no bound")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    ok = run(args, args.max_in_flight, "bounded")
    if args.compare:
        ok &= run(args, UNBOUNDED, "unbounded")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
