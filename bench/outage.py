"""What a long Yespo outage costs the collector, and how soon it delivers once Yespo is back.

    .venv/bin/python bench/outage.py [--events 20000] [--contacts 1000] [--window 25]
                                     [--max-rps 200] [--modes refused,503]

Not part of the test suite. For each mode, a fresh SQLite spool is pre-filled with
--events productViewed bodies of --contacts contacts (events of one contact numbered in
order), and `collector serve` (forwarding on, the default concurrency, YESPO_MAX_RPS
--max-rps) starts against a Yespo that is down:

  refused  YESPO_API_URL is a loopback port nobody listens on: every connection refused.
  503      the stand-in (`python -m standin`)
           answers every request 503.

Figures, per mode:

  open     seconds from the collector's start until /readyz says "breaker open" (the
           measuring window starts then; with no breaker, after --open-wait seconds).
  CPU      the collector process's user + system CPU (/proc/PID/stat) over --window s,
           as % of one core; and, in the 503 mode, the requests the stand-in got in it.
  first    Yespo comes back (refused: the stand-in starts on that port, timed from when
           it first answers; 503: its faults are cleared); seconds until the first event
           the stand-in records (its own `at` stamp).
  drain    seconds until every event arrived, and the rate.

Honesty checks: every event arrives exactly once and each contact's events in order;
the spool is empty with no dead letters afterwards (`collector spool status`). Other
processes' CPU during the window is printed (this machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.deliver import (  # noqa: E402  (after the sys.path line, for `python bench/outage.py`)
    Entry,
    Others,
    code_version,
    collector_cmd,
    cpu_seconds,
    http_json,
    prefill,
    running,
    spool_status,
)
from bench.ingest import _no_proxy, clean_env, free_port, tail, wait_http  # noqa: E402

YESPO_KEY = "bench-yespo-key"
POLL_S = 0.05
STANDIN = "standin"


def make_entries(n: int, contacts: int, run: str) -> list[Entry]:
    """n productViewed events, event i of contact i % contacts; productId carries i, so the
    arrivals show each contact's order. Normalized by the collector itself."""
    from collector.normalize import Rules, normalize_event

    rules = Rules()
    out = []
    for i in range(n):
        raw = {
            "type": "productViewed",
            "messageId": f"{run}-{i}",
            "contact": {"email": f"buyer{i % contacts:06d}@example.com"},
            "properties": {"productId": f"{i:07d}", "price": 45.5, "currencyCode": "USD"},
        }
        e = normalize_event(raw, rules, lambda: "unused")
        if isinstance(e, list):
            raise RuntimeError(f"the benchmark's own event does not normalize: {e}")
        out.append(Entry(e.message_id, e.client_id, e.key, e.event_type, e.event_time, e.body))
    return out


def unused_port() -> int:
    """A free loopback port below the ephemeral range. A connection to a port nobody
    listens on may be given that same port as its own and connect to itself (a TCP
    "self-connect"), which would end the outage and keep the stand-in from binding it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10_000, low)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Outage:
    mode: str
    open_s: float | None = None  # collector start -> /readyz says "breaker open"
    state: str = ""  # /readyz's forwarder state during the window
    gauge: str = ""  # delivery_breaker_open during the window
    window_s: float = 0.0
    cpu_pct: float = float("nan")
    requests: int | None = None  # 503 mode: requests the stand-in got in the window
    others_pct: float = float("nan")
    first_s: float = float("nan")  # Yespo back -> first event recorded
    drain_s: float = float("nan")  # Yespo back -> every event recorded
    problems: list[str] = field(default_factory=list)


def get_text(url: str) -> str:
    with _no_proxy.open(url, timeout=5) as resp:
        return str(resp.read().decode())


def readyz_state(base: str) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(http_json(f"{base}/readyz", timeout=5).get("forwarder", ""))
    return ""


def gauge(base: str, name: str) -> str:
    with contextlib.suppress(OSError):
        for line in get_text(f"{base}/metrics").splitlines():
            if line.startswith(name + " "):
                return line.split()[1]
    return "absent"


@contextlib.contextmanager
def stand_in(port: int, workdir: Path, faults: str | None) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", STANDIN, "--port", str(port), "--api-key", YESPO_KEY]
    cmd += ["--faults", faults] if faults else []
    log = workdir / f"standin-{port}.log"
    with running(cmd, clean_env(), log) as proc:
        wait_http(proc, f"http://127.0.0.1:{port}/_standin/stats", log)
        yield proc


def requests_so_far(port: int) -> int:
    stats = http_json(f"http://127.0.0.1:{port}/_standin/stats", timeout=5)
    return sum(sum(by.values()) for by in stats["requests"].values())


def run_mode(mode: str, entries: list[Entry], workdir: Path, args: argparse.Namespace) -> Outage:
    o = Outage(mode)
    spool = workdir / f"spool-{mode}.db"
    print(f"  pre-filled {spool.name} with {len(entries):,} events in "
          f"{prefill(spool, entries):.1f} s")  # fmt: skip
    yespo_port, port = unused_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env()
    env.update(
        YESPO_API_URL=f"http://127.0.0.1:{yespo_port}/api",
        YESPO_API_KEY=YESPO_KEY,
        YESPO_MAX_RPS=str(args.max_rps),
        COLLECTOR_API_KEYS="k",
        COLLECTOR_LOG_LEVEL="warning",
        COLLECTOR_SPOOL_URL=f"sqlite:///{spool}",
    )
    log = workdir / f"serve-{mode}.log"
    with contextlib.ExitStack() as stack:
        if mode == "503":
            stack.enter_context(stand_in(yespo_port, workdir, '{"status": 503}'))
        t0 = time.monotonic()
        cmd = [*collector_cmd(), "serve", "--port", str(port)]
        proc = stack.enter_context(running(cmd, env, log))
        wait_http(proc, f"{base}/healthz", log)
        deadline = t0 + args.open_wait
        while time.monotonic() < deadline:
            if readyz_state(base).startswith("breaker open"):
                o.open_s = time.monotonic() - t0
                break
            time.sleep(POLL_S)
        o.state, o.gauge = readyz_state(base), gauge(base, "delivery_breaker_open")
        before = requests_so_far(yespo_port) if mode == "503" else 0
        meter = Others()
        cpu0, w0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.window)
        cpu1, w1 = cpu_seconds(proc.pid), time.monotonic()
        o.others_pct = meter.result(1000.0)[0]
        o.window_s = w1 - w0
        o.cpu_pct = 100 * (cpu1 - cpu0) / o.window_s
        if mode == "503":
            o.requests = requests_so_far(yespo_port) - before
        if proc.poll() is not None:
            o.problems.append(f"collector exited with {proc.returncode}:\n{tail(log)}")
            return o

        if mode == "503":
            http_json(f"http://127.0.0.1:{yespo_port}/_standin/faults", method="DELETE")
            back = time.time()
        else:
            stack.enter_context(stand_in(yespo_port, workdir, None))
            back = time.time() - POLL_S  # it answered within the last poll
        control = f"http://127.0.0.1:{yespo_port}/_standin"
        deadline = time.monotonic() + 60 + 3 * len(entries) / (args.max_rps or 1000)
        while time.monotonic() < deadline:
            count = int(http_json(f"{control}/stats", timeout=5)["events"])
            if count and o.first_s != o.first_s:
                first = http_json(f"{control}/events?limit=1")["events"][0]["at"]
                o.first_s = first / 1000 - back
            if count >= len(entries):
                o.drain_s = time.time() - back
                break
            time.sleep(POLL_S)
        else:
            o.problems.append(f"only {count:,} of {len(entries):,} events arrived in time")
        check_arrivals(o, http_json(f"{control}/events", timeout=120)["events"], len(entries))
    status = spool_status(spool)
    if status.get("waiting") or status.get("dead letters"):
        o.problems.append(f"spool afterwards: {status}")
    return o


def check_arrivals(o: Outage, records: list[dict[str, Any]], n: int) -> None:
    """Exactly once, and each contact's events in the order they were numbered."""
    by_contact: dict[str, list[int]] = defaultdict(list)
    for r in records:
        body = r["body"]
        product = next(p["value"] for p in body["params"] if p["name"] == "product")
        by_contact[body["keyValue"]].append(int(orjson.loads(product)["productId"]))
    seen = sorted(i for numbers in by_contact.values() for i in numbers)
    if seen != list(range(n)):
        o.problems.append(f"arrivals: {len(seen)} records, {len(set(seen))} distinct of {n}")
    disordered = [k for k, numbers in by_contact.items() if numbers != sorted(numbers)]
    if disordered:
        o.problems.append(f"{len(disordered)} contacts' events arrived out of order")


def print_outage(o: Outage, args: argparse.Namespace) -> None:
    opened = f"{o.open_s:.1f} s after start" if o.open_s is not None else "never (no breaker?)"
    print(f"  breaker open: {opened}; /readyz forwarder: {o.state[:100]!r}; "
          f"delivery_breaker_open {o.gauge}")  # fmt: skip
    sent = f", {o.requests} requests reached the stand-in" if o.requests is not None else ""
    print(f"  CPU while down: {o.cpu_pct:.2f}% of a core over {o.window_s:.1f} s{sent} "
          f"(others: {o.others_pct:.0f}% of a core)")  # fmt: skip
    rate = args.events / o.drain_s if o.drain_s == o.drain_s else 0
    print(f"  Yespo back: first delivery after {o.first_s:.2f} s; all {args.events:,} after "
          f"{o.drain_s:.1f} s ({rate:,.0f} events/s)")  # fmt: skip
    for p in o.problems:
        print(f"  !! {p}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--contacts", type=int, default=1_000)
    p.add_argument("--window", type=float, default=25, help="CPU window while down, s")
    p.add_argument("--open-wait", type=float, default=30,
                   help="wait at most this long for the breaker to open, s")  # fmt: skip
    p.add_argument("--max-rps", type=float, default=200, help="YESPO_MAX_RPS (default 200)")
    p.add_argument("--modes", default="refused,503")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(args.modes) - {"refused", "503"} or args.contacts < 1 or args.events < 1:
        p.error("--modes from refused,503; --events and --contacts >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = secrets.token_hex(3)
    print(f"outage bench {run}: {args.events:,} events for {args.contacts:,} contacts, "
          f"CPU over {args.window:g} s, YESPO_MAX_RPS {args.max_rps:g}; "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"code: {code_version()}")
    entries = make_entries(args.events, args.contacts, run)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        for mode in args.modes:
            print(f"mode {mode}: Yespo " + ("refuses connections" if mode == "refused"
                                             else "answers 503"))  # fmt: skip
            o = run_mode(mode, entries, Path(tmp), args)
            print_outage(o, args)
            failed |= bool(o.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
