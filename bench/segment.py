"""Segment's /v1/batch beside the collector's own /v1/events, on the same events, with wrk.

    .venv/bin/python bench/segment.py [--duration 10] [--connections 64] [--runs 3]
                                      [--batch-size 100]

Not part of the test suite. Two scenarios, alternated `--runs` times, medians reported:

  events    POST /v1/events, {"batch": [N productViewed events]}, a Bearer key
  segment   POST /v1/batch, {"batch": [N track "Product Viewed" calls], "sentAt"}, Basic
            auth with a write key: the same products, the same 1,000 contacts

Both make the same Yespo bodies: before each run the script identifies the 1,000 shoppers
(userId buyerN, email buyerN@example.com), so Segment's calls go straight to the queue with
the contact, as /v1/events' carry it. Everything else is bench/ingest.py's setup: one
collector process on loopback, a fresh SQLite spool (synchronous=FULL), delivery off,
every event with its own messageId.

Honesty checks: every warm-up reply is checked ({"success":true}, or all accepted); after
each run the spool's rows are compared with the events wrk saw acknowledged, and a
Segment run must have rejected, held and ignored nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ingest  # bench/ingest.py: servers, wrk, its parsing and the machine's counters
import orjson

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "segment.lua"
API_KEY = "k"
WRITE_KEY = "wk"
SHOPPERS = 1000


@dataclass(frozen=True)
class Scenario:
    name: str  # "events" or "segment"
    batch: int

    @property
    def expected_reply(self) -> str:
        if self.name == "segment":
            return '200 {"success":true}'
        return f'200 {{"accepted":{self.batch},"duplicates":0,"rejected":[]}}'


def identify_shoppers(port: int) -> None:
    """userId buyerN is buyerN@example.com, for every shopper the load names."""
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    for start in range(0, SHOPPERS, 100):
        calls = [
            {"type": "identify", "userId": f"buyer{n}", "messageId": f"identify-{n}",
             "traits": {"email": f"buyer{n}@example.com"}}
            for n in range(start, start + 100)
        ]  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/batch",
            data=orjson.dumps({"batch": calls}),
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
        )
        with ingest._no_proxy.open(request, timeout=10) as resp:
            assert resp.status == 200, resp.status


def run_wrk(
    url: str, duration: float, sc: Scenario, args: argparse.Namespace, run_id: str, check: bool
) -> ingest.WrkResult:
    env = os.environ.copy()
    env.update(
        BENCH_FORM=sc.name,
        BENCH_KEY=WRITE_KEY if sc.name == "segment" else API_KEY,
        BENCH_BATCH=str(sc.batch),
        BENCH_RUN=run_id,
    )
    env.pop("BENCH_EXPECT", None)
    if check:
        env["BENCH_EXPECT"] = sc.expected_reply
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s",
               "--timeout", "10s", "--latency", "-s", str(LUA), url]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return ingest.parse_wrk(proc.stdout, cpu)


@dataclass
class Measurement:
    scenario: Scenario
    timed: ingest.WrkResult
    warmup: ingest.WrkResult
    server_cpu_s: float
    problems: list[str]

    @property
    def events_per_s(self) -> float:
        return self.timed.good_rps * self.scenario.batch

    @property
    def cpu_us_per_event(self) -> float:
        """The server's CPU (event loop and spool writer) per acknowledged event: steadier
        than events/s on a machine shared with wrk and with anything else running."""
        return 1e6 * self.server_cpu_s / max(self.timed.good * self.scenario.batch, 1)


def measure(sc: Scenario, args: argparse.Namespace, run_id: str) -> Measurement:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{sc.name}-") as tmp:
        workdir = Path(tmp)
        cmd, env = ingest.server_command(
            ingest.Scenario(sc.name, collector=True, batch=sc.batch), workdir, args
        )
        env["COLLECTOR_SEGMENT_WRITE_KEYS"] = WRITE_KEY
        with ingest.server(cmd, env, workdir) as srv:
            identify_shoppers(srv.port)
            path = "/v1/batch" if sc.name == "segment" else "/v1/events"
            url = f"http://127.0.0.1:{srv.port}{path}"
            warmup = run_wrk(url, ingest.WARMUP_S, sc, args, f"{run_id}w", check=True)
            cpu0 = srv.cpu_seconds()
            timed = run_wrk(url, args.duration, sc, args, f"{run_id}t", check=False)
            cpu1 = srv.cpu_seconds()
        log = ingest.tail(srv.log, 20)
        with contextlib.closing(sqlite3.connect(workdir / "spool.db")) as db:
            rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
            held = db.execute("SELECT count(*) FROM held").fetchone()[0]
            rejected = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
    for phase, r in (("warm-up", warmup), ("timed run", timed)):
        if r.non2xx or any(r.socket_errors.values()):
            problems.append(f"{phase}: {r.non2xx} non-2xx, socket errors {r.socket_errors}")
    if warmup.check is None or warmup.check[1]:
        problems.append(f"warm-up replies not {sc.expected_reply!r}: {warmup.sample}")
    acked = (warmup.good + timed.good) * sc.batch
    if not 0 <= rows - acked <= 2 * args.connections * sc.batch:
        problems.append(f"spool holds {rows} events, wrk saw {acked} acknowledged")
    if held or rejected:
        problems.append(f"{held} held and {rejected} rejected: not the same events")
    if log:
        problems.append("server wrote to its log:\n    " + log.replace("\n", "\n    "))
    return Measurement(sc, timed, warmup, cpu1 - cpu0, problems)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10, help="seconds per timed run")
    p.add_argument("--connections", type=int, default=64, help="wrk connections")
    p.add_argument("--runs", type=int, default=3, help="rounds of both scenarios")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--batch-size", type=int, default=100, help="events per request")
    p.add_argument("--sync", choices=("full", "normal"), default="full")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with:  apt-get install -y wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, ingest._sigterm)
    chosen = [Scenario("events", args.batch_size), Scenario("segment", args.batch_size)]
    results: dict[str, list[Measurement]] = {sc.name: [] for sc in chosen}
    token = secrets.token_hex(3)
    try:
        for i in range(1, args.runs + 1):
            for sc in chosen:
                m = measure(sc, args, f"{token}-{i}-{sc.name}")
                results[sc.name].append(m)
                t = m.timed
                print(f"  run {i}  {sc.name:<8} {m.events_per_s:>10,.0f} events/s"
                      f"  p50 {t.p50_ms:6.2f} ms  p99 {t.p99_ms:7.2f} ms"
                      f"  server CPU {100 * m.server_cpu_s / t.seconds:.0f}%"
                      f"  server CPU/event {m.cpu_us_per_event:.1f} µs")  # fmt: skip
                for problem in m.problems:
                    print(f"           !! {problem}")
                sys.stdout.flush()
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    events = ingest.median([m.events_per_s for m in results["events"]])
    segment = ingest.median([m.events_per_s for m in results["segment"]])
    per_run = ", ".join(
        f"{s.events_per_s / e.events_per_s:.2f}"
        for e, s in zip(results["events"], results["segment"], strict=True)
    )
    print(
        f"\nmedians of {args.runs} run(s), batches of {args.batch_size}, {args.duration:g} s each:"
    )
    cpu_events = ingest.median([m.cpu_us_per_event for m in results["events"]])
    cpu_segment = ingest.median([m.cpu_us_per_event for m in results["segment"]])
    print(f"  /v1/events  {events:>10,.0f} events/s  {cpu_events:5.1f} µs server CPU/event")
    print(f"  /v1/batch   {segment:>10,.0f} events/s  {cpu_segment:5.1f} µs server CPU/event")
    print(f"  /v1/batch: {segment / events:.2f} of /v1/events' events/s (per run: {per_run}),"
          f" {cpu_segment / cpu_events:.2f}x its CPU per event")  # fmt: skip
    problems = sum(len(m.problems) for ms in results.values() for m in ms)
    if problems:
        print(f"!! {problems} problem(s) above: these figures are not to be trusted as they are")
        return 1
    print("checks: no non-2xx, every warm-up reply as expected, spool rows match, nothing held"
          " or rejected")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
