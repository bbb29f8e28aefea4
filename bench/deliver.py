"""Delivery throughput and latency of the collector against the Yespo stand-in.

    .venv/bin/python bench/deliver.py [--events 60000] [--concurrency 64]
                                      [--rate 1000] [--duration 15] [--profile]

Not part of the test suite. One Yespo stand-in (`python -m standin`) runs for the
whole benchmark as its own process; its records and stats are cleared between phases.

  forward   a fresh SQLite spool pre-filled with --events Generate-event bodies (~460
            bytes, one contact each), drained by one `collector forward` process
            (YESPO_MAX_RPS=0, YESPO_CONCURRENCY=--concurrency). Timed from the
            process's start until the stand-in's /_standin/stats counts every event
            (polled every 50 ms; start-up included), and over the middle 80% of arrivals
            (the stand-in's `at` stamps; start-up excluded).
  bare      the ceiling: one plain aiohttp process (one ClientSession, keep-alive,
            --concurrency requests in flight, on uvloop like `collector forward`, or
            --bare-loop asyncio) POSTs the same bodies to the same stand-in; timed the
            same way.
  latency   `collector serve` (forwarding on, COLLECTOR_SPOOL_SYNC=full, fresh spool)
            gets single events on POST /v1/events at a steady --rate for --duration s,
            paced by a schedule, not by replies, from a load generator in its own process.
            For every event: the stand-in's arrival time minus the wall-clock time its 2xx
            reached the load generator.

Honesty checks: every event arrives exactly once (distinct keyValues = events, and the
exact expected set), every upstream reply was 200, the spool is empty and holds no dead
letters afterwards (`collector spool status`).

A quiet machine: before each measured phase, the processes outside this benchmark must use
at most --quiet-threshold % of a core all together (over 2 s, from /proc, counting those
that come and go in between); otherwise it waits 20 s at a time, at most --quiet-wait s,
and says so in the output. Others' CPU is also measured during each phase: a phase in
which they used more than the threshold is measured again (at most --redo times), and the
summary says so if it never ran undisturbed. Every process runs on 127.0.0.1 and is
stopped at the end, also on Ctrl-C, SIGTERM or an error (and gets SIGTERM if this script
is killed).

Diagnostics: --profile adds an unmeasured forward drain with `py-spy record --format raw`
attached to the forwarder for up to 10 s and prints where its time goes (self and total);
--env KEY=VALUE gives collector forward/serve an extra setting (the output says so).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402  (after the sys.path line, for `python bench/deliver.py`)
    TICKS,
    _die_with_parent,
    _no_proxy,
    clean_env,
    free_port,
    redis_server,
    stop,
    tail,
    wait_http,
)

YESPO_KEY = "bench-yespo-key"
COLLECTOR_KEY = "k"
POLL_S = 0.05
QUIET_SLEEP_S = 20
ARRIVAL_WAIT_S = 30  # latency phase: how long events may take to arrive after the last send


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """What SqliteSpool.append stores (the attributes of collector.normalize.Normalized)."""

    message_id: str
    client_id: bool
    key: str
    event_type: str
    event_time: int | None
    body: bytes
    kind: str = "event"
    after: str | None = None  # the key whose earlier entries it waits for (none here)


def make_entries(n: int, run: str) -> list[Entry]:
    """n productViewed events of n distinct contacts, normalized by the collector itself,
    so the bodies are exactly what it would send Yespo (~460 bytes each)."""
    from collector.normalize import Rules, normalize_event

    rules = Rules()
    out = []
    for i in range(n):
        raw = {
            "type": "productViewed",
            "messageId": f"{run}-{i}",
            "timestamp": "2024-05-01T10:00:00Z",
            "contact": {
                "email": f"buyer{i:07d}@example.com",
                "phone": f"+38050{i:07d}",
                "externalCustomerId": f"cust-{i:07d}",
            },
            "properties": {
                "productId": f"WS{i % 997:03d}-L-Green",
                "price": 45.5,
                "isInStock": 1,
                "color": ["green"],
                "size": ["L"],
                "brand": "Shopwear",
                "category": ["Women", "Tops", "Tees"],
                "currencyCode": "USD",
            },
        }
        n_ = normalize_event(raw, rules, lambda: "unused")
        if isinstance(n_, list):
            raise RuntimeError(f"the benchmark's own event does not normalize: {n_}")
        out.append(Entry(n_.message_id, n_.client_id, n_.key, n_.event_type, n_.event_time,
                         n_.body, n_.kind))  # fmt: skip
    return out


def spool_url(spool: Path) -> str:
    """The spool's URL: the SQLite file, or with --spool redis the run's redis-server."""
    return REDIS_URL[0] if REDIS_URL else f"sqlite:///{spool}"  # 4 slashes: absolute


# --spool redis: the URL of the redis-server this run started (emptied before each drain)
REDIS_URL: list[str] = []


def prefill(path: Path, entries: list[Entry]) -> float:
    """Append `entries` to a fresh spool in batches of 1,000; return seconds taken."""
    from collector.spool import Spool
    from collector.spool.sqlite import SqliteSpool

    async def fill() -> None:
        spool: Spool
        if REDIS_URL:
            from collector.spool.redis import RedisSpool

            spool = RedisSpool(REDIS_URL[0], max_events=10**9, dedup_window_ms=24 * 3600 * 1000)
        else:
            spool = SqliteSpool(str(path), max_events=10**9, dedup_window_ms=24 * 3600 * 1000,
                                synchronous="normal")  # fmt: skip
        await spool.open()
        try:
            now = int(time.time() * 1000)
            for start in range(0, len(entries), 1000):
                stored = await spool.append(entries[start : start + 1000], now)
                if not all(stored):
                    raise RuntimeError("pre-fill: the spool saw a duplicate messageId")
        finally:
            await spool.close()

    if REDIS_URL:  # a fresh queue for each drain
        port = REDIS_URL[0].rsplit(":", 1)[1].split("/")[0]
        subprocess.run(["redis-cli", "-p", port, "flushall"], check=True, capture_output=True)
    t0 = time.perf_counter()
    asyncio.run(fill())
    return time.perf_counter() - t0


# --- processes -----------------------------------------------------------------------------


def popen(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only this script, which stops it
            preexec_fn=_die_with_parent,
        )


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = popen(cmd, env, log)
    try:
        yield proc
    finally:
        stop(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all threads); NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of a process's main thread and of its other threads together
    (Python does not name OS threads, so they cannot be told apart by name)."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                name = "main thread" if task.name == str(pid) else "other threads"
                out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return out


def collector_cmd() -> list[str]:
    script = Path(sys.executable).parent / "collector"
    return [str(script)] if script.exists() else [sys.executable, "-m", "collector"]


def http_json(url: str, method: str = "GET", timeout: float = 30) -> Any:
    import urllib.request

    req = urllib.request.Request(url, method=method)
    with _no_proxy.open(req, timeout=timeout) as resp:
        return orjson.loads(resp.read())


class StandIn:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.api = f"http://127.0.0.1:{port}/api"
        self.control = f"http://127.0.0.1:{port}/_standin"

    def count(self) -> int:
        return int(http_json(f"{self.control}/stats", timeout=5)["events"])

    def stats(self) -> dict[str, Any]:
        return dict(http_json(f"{self.control}/stats"))

    def events(self) -> list[dict[str, Any]]:
        return list(http_json(f"{self.control}/events", timeout=120)["events"])

    def clear(self) -> None:
        http_json(f"{self.control}/events", method="DELETE")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)


@contextlib.contextmanager
def stand_in(workdir: Path) -> Iterator[StandIn]:
    port = free_port()
    log = workdir / "standin.log"
    cmd = [sys.executable, "-m", "standin", "--port", str(port), "--api-key", YESPO_KEY]
    with running(cmd, clean_env(), log) as proc:
        s = StandIn(proc, port, log)
        wait_http(proc, f"{s.control}/stats", log)
        yield s


def delivery_env(s: StandIn, spool: Path, concurrency: int) -> dict[str, str]:
    env = clean_env()
    env.update(
        YESPO_API_URL=s.api,
        YESPO_API_KEY=YESPO_KEY,
        YESPO_MAX_RPS="0",
        YESPO_CONCURRENCY=str(concurrency),
        COLLECTOR_LOG_LEVEL="warning",
        COLLECTOR_SPOOL_URL=spool_url(spool),
    )
    env.update(EXTRA_ENV)
    return env


# --env KEY=VALUE: extra settings for `collector forward` and `collector serve` (diagnostics)
EXTRA_ENV: dict[str, str] = {}


def spool_status(spool: Path) -> dict[str, int]:
    """`collector spool status`, parsed: waiting, in flight, dead letters."""
    out = subprocess.run(
        [*collector_cmd(), "spool", "status", "--spool-url", spool_url(spool)],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"collector spool status failed:\n{out.stdout}{out.stderr}")
    found = dict(re.findall(r"^(waiting|in flight|dead letters):\s+(\d+)", out.stdout, re.M))
    return {k: int(v) for k, v in found.items()}


# --- a quiet machine -----------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, CPU seconds so far, command line) for every process."""
    table = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm, rest = stat.rsplit(")", 1)
        fields = rest.split()
        name = cmdline.strip() or "[" + comm.split("(", 1)[1] + "]"
        table[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS, name)
    return table


def _cpu_stat() -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal ticks of the whole machine."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _mine(table: dict[int, tuple[int, float, str]]) -> set[int]:
    """This script and its descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    mine, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        mine.add(pid)
        todo += children.get(pid, [])
    return mine


class Others:
    """CPU used by processes outside this benchmark during a window.

    Two parts: what the processes alive at the end used (by /proc/PID/stat), and what
    processes that came and went inside the window used, which no process table shows:
    the machine's user + system time (/proc/stat) minus everything the visible processes
    and this benchmark's own exited ones used. Short-lived processes of other sessions
    (test runs, scripts) are common here and would pass unseen otherwise.
    """

    def __init__(self) -> None:
        self.before = _proc_table()
        self.stat0 = _cpu_stat()
        self.children0 = _children_cpu()
        self.t0 = time.monotonic()

    def machine(self) -> str:
        """How the whole machine spent the window: user, system, softirq, steal, idle."""
        now = _cpu_stat()
        d = [b - a for a, b in zip(self.stat0, now, strict=True)]
        total = sum(d) or 1
        user, nice, system, idle, iowait, irq, softirq, steal = d
        parts = {"user": user + nice, "sys": system + irq, "softirq": softirq, "steal": steal,
                 "idle": idle + iowait}  # fmt: skip
        return " ".join(f"{k} {100 * v / total:.0f}%" for k, v in parts.items())

    def result(self, threshold: float) -> tuple[float, str | None]:
        """(% of one core used by all others together, a note if above `threshold`).

        This benchmark's processes that ended inside the window count as its own (they
        were waited for: RUSAGE_CHILDREN); none of them may predate the window."""
        after, stat1 = _proc_table(), _cpu_stat()
        exited_mine_s = _children_cpu() - self.children0
        span = time.monotonic() - self.t0
        user, nice, system = (b - a for a, b in zip(self.stat0[:3], stat1[:3], strict=True))
        busy = (user + nice + system) / TICKS
        mine = _mine(after) | _mine(self.before)
        visible = others = 0.0
        use = []
        for pid, (_, cpu, name) in after.items():
            used = cpu - self.before.get(pid, (0, 0.0, ""))[1]  # a new process: all its CPU
            visible += used
            if pid not in mine:
                others += used
                use.append((100 * used / span, pid, name))
        # tick accounting differs a little between the two sources: ignore small negatives
        unseen = max(0.0, busy - visible - exited_mine_s)
        total = 100 * (others + unseen) / span
        if total <= threshold:
            return total, None
        use.sort(reverse=True)
        top = [f"{p:.0f}% pid {pid} {name[:50]}" for p, pid, name in use[:2]]
        top.append(f"{100 * unseen / span:.0f}% by processes that came and went")
        return total, f"other processes used {total:.0f}% of a core: " + ", ".join(top)


def wait_quiet(label: str, args: argparse.Namespace) -> str | None:
    """Wait until other processes use at most the threshold; None, or a note if they never did."""
    deadline = time.monotonic() + args.quiet_wait
    waited = 0.0
    while True:
        load = Path("/proc/loadavg").read_text().split()[:3]
        ps = subprocess.run(["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu"], capture_output=True,
                            text=True).stdout.splitlines()[1:4]  # fmt: skip
        meter = Others()
        time.sleep(2)
        total, note = meter.result(args.quiet_threshold)
        print(f"  [quiet check before {label}] loadavg {' '.join(load)}; others over 2 s: "
              f"{total:.0f}% of a core" + (f" ({note.split(': ', 1)[1]})" if note else ""))  # fmt: skip
        if note is None:
            if waited:
                print(f"  [quiet check] quiet after waiting {waited:.0f} s")
            return None
        if time.monotonic() + QUIET_SLEEP_S > deadline:
            print(f"  !! machine NOT quiet before {label} after {waited:.0f} s; measuring anyway")
            return f"machine NOT quiet before {label} after waiting {waited:.0f} s: {note}"
        lifetime = "; ".join(" ".join(line.split()[:3])[:70] for line in ps)
        print(
            f"  [quiet check] busy; ps (lifetime %CPU) top: {lifetime}; waiting {QUIET_SLEEP_S} s"
        )
        time.sleep(QUIET_SLEEP_S)
        waited += QUIET_SLEEP_S


# --- measurements --------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(int(rank), len(sorted_values)) - 1]


def middle_rate(ats: list[int]) -> float:
    """Arrivals per second between the 10th and the 90th percentile arrival."""
    if len(ats) < 10:
        return float("nan")
    ats = sorted(ats)
    lo, hi = int(len(ats) * 0.1), int(len(ats) * 0.9)
    span = (ats[hi] - ats[lo]) / 1000
    return (hi - lo) / span if span > 0 else float("inf")


def upstream_statuses(stats: dict[str, Any]) -> Counter[str]:
    """Requests to the stand-in's Yespo endpoints by status, all paths together."""
    out: Counter[str] = Counter()
    for by_status in stats.get("requests", {}).values():
        out.update(by_status)
    return out


@dataclass
class Drain:
    """One delivery of N events: the forwarder or the bare client."""

    name: str
    events: int
    wall_s: float = float("nan")  # process start -> stand-in counts N
    mid_rate: float = float("nan")
    client_s: float = float("nan")  # bare client: first request -> last reply, as it saw it
    threads: dict[str, float] = field(default_factory=dict)  # forwarder: CPU s by thread
    proc_cpu_s: float = float("nan")
    standin_cpu_s: float = float("nan")
    machine: str = ""
    arrived: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    spool: dict[str, int] | None = None
    quiet: str | None = None
    others_pct: float = float("nan")
    others: str | None = None  # a note when others used CPU during the phase
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.wall_s if self.wall_s == self.wall_s and self.wall_s else 0.0


def wait_count(s: StandIn, n: int, proc: subprocess.Popen[bytes] | None, timeout: float,
               exited_ok: bool = False) -> float | None:  # fmt: skip
    """Poll the stand-in every 50 ms until it counts n events; the monotonic time, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if s.count() >= n:
            return time.monotonic()
        if proc is not None and proc.poll() is not None and not exited_ok:
            return None
        time.sleep(POLL_S)
    return None


def check_arrivals(d: Drain, records: list[dict[str, Any]], expected: set[str]) -> list[int]:
    """Exactly-once check by keyValue; returns the `at` stamps."""
    keys = Counter(r["body"]["keyValue"] for r in records)
    d.arrived = len(records)
    dupes = sum(c - 1 for c in keys.values() if c > 1)
    missing = len(expected - keys.keys())
    unexpected = len(keys.keys() - expected)
    if dupes or missing or unexpected or len(records) != len(expected):
        d.problems.append(f"arrivals: {len(records)} records, {len(keys)} distinct keyValues, "
                          f"{dupes} duplicates, {missing} missing, {unexpected} unexpected")  # fmt: skip
    return [r["at"] for r in records]


def check_statuses(d: Drain, stats: dict[str, Any]) -> None:
    d.statuses = upstream_statuses(stats)
    bad = {k: v for k, v in d.statuses.items() if k != "200"}
    if bad:
        d.problems.append(f"stand-in answered other than 200: {bad}")


def run_forward(s: StandIn, entries: list[Entry], workdir: Path, args: argparse.Namespace,
                profile: Path | None = None) -> Drain:  # fmt: skip
    n = len(entries)
    d = Drain("forwarder", n)
    spool = workdir / f"spool-{'profile-' if profile else ''}{secrets.token_hex(3)}.db"
    took = prefill(spool, entries)
    print(f"  pre-filled {spool.name} with {n:,} events in {took:.1f} s")
    s.clear()
    if profile is None:
        d.quiet = wait_quiet("forward", args)
    log = workdir / "forward.log"
    env = delivery_env(s, spool, args.concurrency)
    meter = Others()
    cpu0 = s.cpu()
    t0 = time.monotonic()
    with running([*collector_cmd(), "forward"], env, log) as proc:
        spy = None
        if profile is not None:
            # attach once delivery runs (py-spy cannot attach before the interpreter is up)
            wait_count(s, 1, proc, 30)
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                 "--threads", "-d", str(args.profile_seconds), "-o", str(profile),
                 "--pid", str(proc.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        try:
            done = wait_count(s, n, proc, args.timeout)
            d.proc_cpu_s = cpu_seconds(proc.pid)
            d.threads = thread_cpu(proc.pid)
        finally:
            if spy is not None:
                if spy.poll() is None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
                try:
                    _, err = spy.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    _, err = spy.communicate()
                if profile is not None and not profile.exists():
                    print(f"  !! py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
        d.standin_cpu_s = s.cpu() - cpu0
        d.machine = meter.machine()
        d.others_pct, d.others = meter.result(args.quiet_threshold)
        if done is None:
            died = proc.poll()
            d.problems.append(
                f"forwarder exited with {died}" if died is not None
                else f"only {s.count():,} of {n:,} arrived within {args.timeout:g} s"
            )  # fmt: skip
        else:
            d.wall_s = done - t0
        time.sleep(0.3)  # a late duplicate (a retry) would show up in the checks below
    # the forwarder has stopped (SIGTERM: it flushes its acks and closes the spool)
    logged = tail(log)
    if logged:
        d.problems.append("forwarder log:\n      " + logged.replace("\n", "\n      "))
    check_statuses(d, s.stats())
    ats = check_arrivals(d, s.events(), {e.key.removeprefix("contact:") for e in entries})
    d.mid_rate = middle_rate(ats)
    d.spool = spool_status(spool)
    if d.spool.get("waiting") != 0 or d.spool.get("dead letters") != 0:
        d.problems.append(f"spool after the drain: {d.spool}")
    return d


def run_bare(s: StandIn, entries: list[Entry], workdir: Path, args: argparse.Namespace) -> Drain:
    n = len(entries)
    d = Drain(f"bare ({args.bare_loop})", n)
    bodies = workdir / "bodies.jsonl"
    bodies.write_bytes(b"\n".join(e.body for e in entries))  # orjson never writes a raw newline
    s.clear()
    d.quiet = wait_quiet("bare", args)
    log = workdir / "bare.log"
    result = workdir / "bare.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-client", s.api, str(bodies),
           str(result), "--concurrency", str(args.concurrency), "--bare-loop", args.bare_loop]  # fmt: skip
    meter = Others()
    cpu0 = s.cpu()
    t0 = time.monotonic()
    with running(cmd, clean_env(), log) as proc:
        done = wait_count(s, n, proc, args.timeout, exited_ok=True)
        d.standin_cpu_s = s.cpu() - cpu0
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            d.problems.append("bare client did not exit")
        d.machine = meter.machine()
        d.others_pct, d.others = meter.result(args.quiet_threshold)  # the client was waited for
    if done is None:
        d.problems.append(f"only {s.count():,} of {n:,} arrived within {args.timeout:g} s")
    else:
        d.wall_s = done - t0
    if result.exists():
        r = orjson.loads(result.read_bytes())
        d.client_s, d.proc_cpu_s = r["seconds"], r["cpu_s"]
        if r["errors"]:
            d.problems.append(f"bare client errors: {r['errors']}")
    else:
        d.problems.append(f"bare client wrote no result:\n{tail(log)}")
    check_statuses(d, s.stats())
    ats = check_arrivals(d, s.events(), {e.key.removeprefix("contact:") for e in entries})
    d.mid_rate = middle_rate(ats)
    return d


# --- the bare client (its own process) -----------------------------------------------------


def bare_client(api: str, bodies_path: str, result_path: str, concurrency: int, loop: str) -> int:
    """POST every body to {api}/v1/event, `concurrency` in flight over one session."""
    import aiohttp

    bodies = Path(bodies_path).read_bytes().split(b"\n")
    token = base64.b64encode(f"collector:{YESPO_KEY}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {token}"}
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, headers=headers,
                                         timeout=timeout) as session:  # fmt: skip
            it = iter(bodies)
            url = f"{api}/v1/event"

            async def worker() -> None:
                for body in it:  # the workers share one iterator: each body goes once
                    try:
                        async with session.post(url, data=body) as resp:
                            await resp.read()
                            statuses[str(resp.status)] += 1
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # noqa: UP041
                        errors[type(exc).__name__] += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t0

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            seconds = runner.run(main())
    else:
        seconds = asyncio.run(main())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    Path(result_path).write_bytes(orjson.dumps({
        "seconds": seconds, "cpu_s": ru.ru_utime + ru.ru_stime,
        "statuses": statuses, "errors": errors,
    }))  # fmt: skip
    return 0


# --- latency: ingest 2xx -> arrival --------------------------------------------------------


@dataclass
class Latency:
    rate: float
    duration: float
    sent: int = 0
    ok: int = 0
    non2xx: Counter[str] = field(default_factory=Counter)
    send_rate: float = float("nan")
    lag_p99_ms: float = float("nan")
    lag_max_ms: float = float("nan")
    ingest_p50_ms: float = float("nan")
    ingest_p99_ms: float = float("nan")
    arrived: int = 0
    matched: int = 0
    lat: list[float] = field(default_factory=list)  # ms, ascending
    serve_cpu_s: float = float("nan")
    standin_cpu_s: float = float("nan")
    statuses: Counter[str] = field(default_factory=Counter)
    spool: dict[str, int] | None = None
    quiet: str | None = None
    others_pct: float = float("nan")
    others: str | None = None  # a note when others used CPU during the phase
    machine: str = ""
    problems: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(self.lat, q)


async def load(url: str, rate: float, duration: float, run: str) -> dict[str, Any]:
    """Single events at a steady rate, on a schedule; 2xx wall-clock times by index."""
    import aiohttp

    total = int(rate * duration)
    bodies = [
        orjson.dumps({"type": "pageViewed", "messageId": f"lat-{run}-{i}",
                      "contact": {"email": f"u{i}@example.com"},
                      "properties": {"location": f"https://shop.example/{i}"}})
        for i in range(total)
    ]  # fmt: skip
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {COLLECTOR_KEY}"}
    ok_at: dict[int, float] = {}
    sent_at: dict[int, float] = {}
    lags: list[float] = []
    statuses: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, headers=headers,
                                     timeout=timeout) as session:  # fmt: skip

        async def send(i: int) -> None:
            sent_at[i] = time.time() * 1000
            try:
                async with session.post(url, data=bodies[i]) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        ok_at[i] = time.time() * 1000
                    statuses[str(resp.status)] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # noqa: UP041
                statuses[type(exc).__name__] += 1

        tasks = []
        start = loop.time() + 0.05
        for i in range(total):
            due = start + i / rate
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            lags.append((loop.time() - due) * 1000)
            tasks.append(asyncio.ensure_future(send(i)))
        await asyncio.gather(*tasks)
    return {"ok_at": ok_at, "sent_at": sent_at, "lags": lags, "statuses": statuses,
            "total": total}  # fmt: skip


def load_client(url: str, result_path: str, rate: float, duration: float, run: str) -> int:
    """The latency phase's load generator, in its own process: a small heap of its own, so
    no garbage collection of the benchmark's 60,000 entries delays a send or a 2xx stamp."""
    gc.collect()
    gc.freeze()
    out = asyncio.run(load(url, rate, duration, run))
    Path(result_path).write_bytes(orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS))
    return 0


def run_latency(s: StandIn, workdir: Path, args: argparse.Namespace, run: str) -> Latency:
    res = Latency(args.rate, args.duration)
    spool = workdir / f"spool-serve-{secrets.token_hex(3)}.db"
    port = free_port()
    env = delivery_env(s, spool, args.concurrency)
    env.update(COLLECTOR_API_KEYS=COLLECTOR_KEY, COLLECTOR_SPOOL_SYNC="full")
    log = workdir / "serve.log"
    s.clear()
    cmd = [*collector_cmd(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with running(cmd, env, log) as proc:
        wait_http(proc, f"http://127.0.0.1:{port}/healthz", log)
        res.quiet = wait_quiet("latency", args)
        meter = Others()
        cpu0, scpu0 = cpu_seconds(proc.pid), s.cpu()
        result = workdir / "load.json"
        gen = [sys.executable, str(Path(__file__).resolve()), "--load-client",
               f"http://127.0.0.1:{port}/v1/events", str(result), "--rate", str(args.rate),
               "--duration", str(args.duration), "--run", run]  # fmt: skip
        with running(gen, clean_env(), workdir / "load.log") as gp:
            try:
                gp.wait(timeout=args.duration + 60)
            except subprocess.TimeoutExpired:
                res.problems.append("the load generator did not finish in time")
        if not result.exists():
            raise RuntimeError(f"the load generator wrote no result:\n{tail(workdir / 'load.log')}")
        out = orjson.loads(result.read_bytes())
        ok_at: dict[int, float] = {int(k): v for k, v in out["ok_at"].items()}
        out["sent_at"] = {int(k): v for k, v in out["sent_at"].items()}
        res.sent, res.ok = out["total"], len(ok_at)
        res.non2xx = Counter({k: v for k, v in out["statuses"].items() if not k.startswith("2")})
        if res.non2xx:
            res.problems.append(f"ingest answered other than 2xx: {dict(res.non2xx)}")
        sends = sorted(out["sent_at"].values())
        if len(sends) > 1:
            res.send_rate = (len(sends) - 1) / ((sends[-1] - sends[0]) / 1000)
        lags = sorted(out["lags"])
        res.lag_p99_ms, res.lag_max_ms = percentile(lags, 99), lags[-1]
        ingest = sorted(ok_at[i] - out["sent_at"][i] for i in ok_at)
        res.ingest_p50_ms, res.ingest_p99_ms = percentile(ingest, 50), percentile(ingest, 99)
        if wait_count(s, res.ok, proc, ARRIVAL_WAIT_S) is None:
            res.problems.append(f"only {s.count():,} of {res.ok:,} acknowledged events arrived "
                                f"within {ARRIVAL_WAIT_S} s of the last send")  # fmt: skip
        res.serve_cpu_s, res.standin_cpu_s = cpu_seconds(proc.pid) - cpu0, s.cpu() - scpu0
        res.others_pct, res.others = meter.result(args.quiet_threshold)
        res.machine = meter.machine()
        time.sleep(0.3)
    logged = tail(log)
    if logged:
        res.problems.append("serve log:\n      " + logged.replace("\n", "\n      "))
    res.statuses = upstream_statuses(s.stats())
    bad = {k: v for k, v in res.statuses.items() if k != "200"}
    if bad:
        res.problems.append(f"stand-in answered other than 200: {bad}")
    records = s.events()
    res.arrived = len(records)
    index = {f"u{i}@example.com": i for i in range(res.sent)}
    seen: Counter[int] = Counter()
    lat = []
    for r in records:
        i = index.get(r["body"]["keyValue"])
        if i is None:
            continue
        seen[i] += 1
        if i in ok_at and seen[i] == 1:
            lat.append(r["at"] - ok_at[i])
    res.lat = sorted(lat)
    res.matched = len(lat)
    dupes = sum(c - 1 for c in seen.values() if c > 1)
    missing = len(ok_at.keys() - seen.keys())
    if dupes or missing or res.arrived != len(seen):
        res.problems.append(f"arrivals: {res.arrived} records, {len(seen)} known events, "
                            f"{dupes} duplicates, {missing} acknowledged but not arrived")  # fmt: skip
    res.spool = spool_status(spool)
    if res.spool.get("waiting") != 0 or res.spool.get("dead letters") != 0:
        res.problems.append(f"spool after the run: {res.spool}")
    return res


# --- profile -------------------------------------------------------------------------------

_LINE = re.compile(r"\s*\(([^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """'lease (collector/spool/sqlite.py:420)' -> 'lease (collector/spool/sqlite.py)'."""
    m = _LINE.search(frame)
    if not m:
        return frame
    func = frame[: m.start()]
    where = m.group(1)
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{func} ({where})"


# Frames every sample of a thread passes through: left out of the "total" list.
_WRAPPERS = re.compile(
    r"^(Command\.|Group\.|Context\.invoke|Runner\.run|run \(asyncio/runners|"
    r"BaseEventLoop\.(run_forever|run_until_complete|_run_once)|<module>|main \(collector|"
    r"forward \(collector/cli|Thread\.(run|_bootstrap)|Handle\._run)"
)


def summarize_profile(path: Path, top: int = 18) -> list[str]:
    self_c: Counter[tuple[str, str]] = Counter()
    total_c: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith("thread ("):
            thread = frames[0].rsplit(": ", 1)[-1]
            frames = frames[1:]
        threads[thread] += c
        samples += c
        names = [_frame_name(f) for f in frames]
        if names:
            self_c[(thread, names[-1])] += c
        for name in set(names):
            total_c[name] += c
    if not samples:
        return ["  (no samples)"]
    out = [
        f"  {samples:,} samples (100 Hz, threads while active, i.e. not idle; on uvloop the"
        " loop's own C work shows as self time of Runner.run)"
    ]
    out.append("  by thread: " + ", ".join(
        f"{t} {100 * c / samples:.1f}%" for t, c in threads.most_common()))  # fmt: skip
    out.append("  top by self time (thread, function):")
    out += [f"    {100 * c / samples:5.1f}%  [{t}] {n}" for (t, n), c in self_c.most_common(top)]
    out.append("  top by total time (in the stack; entry-point and loop frames left out):")
    shown = [(n, c) for n, c in total_c.most_common() if not _WRAPPERS.match(n)][:top]
    out += [f"    {100 * c / samples:5.1f}%  {n}" for n, c in shown]
    return out


# --- report --------------------------------------------------------------------------------


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole and whole == whole and part == part else "-"


def print_drain(d: Drain) -> None:
    print(f"  {d.name}: {d.events:,} events in {d.wall_s:.2f} s from process start = "
          f"{d.rate:,.0f} ev/s; middle 80% of arrivals {d.mid_rate:,.0f} ev/s"
          + (f"; client's own timing {d.client_s:.2f} s" if d.client_s == d.client_s else ""))  # fmt: skip
    print(f"    CPU: process {pct(d.proc_cpu_s, d.wall_s)}, stand-in {pct(d.standin_cpu_s, d.wall_s)}"
          f" (of one core), other processes {d.others_pct:.0f}%; machine: {d.machine};"
          f" stand-in statuses {dict(d.statuses)}; arrived {d.arrived:,}"
          + (f"; spool after: {d.spool}" if d.spool else ""))  # fmt: skip
    if d.threads:
        split = ", ".join(f"{k} {pct(v, d.wall_s)}" for k, v in sorted(d.threads.items()))
        print(
            f"    forwarder CPU by thread (of one core, process start to the last arrival): {split}"
        )
    if d.others:
        print(f"    !! {d.others}")
    for p in d.problems:
        print(f"    !! {p}")
    sys.stdout.flush()


def print_latency(r: Latency) -> None:
    print(f"  sent {r.sent:,} at {r.send_rate:,.0f}/s (schedule lag p99 {r.lag_p99_ms:.1f} ms, "
          f"max {r.lag_max_ms:.1f} ms), 2xx {r.ok:,}, ingest send->2xx p50 {r.ingest_p50_ms:.1f} ms "
          f"p99 {r.ingest_p99_ms:.1f} ms")  # fmt: skip
    print(f"  2xx -> arrival: p50 {r.p(50):.1f} ms, p90 {r.p(90):.1f} ms, p99 {r.p(99):.1f} ms, "
          f"max {r.lat[-1] if r.lat else float('nan'):.1f} ms, min "
          f"{r.lat[0] if r.lat else float('nan'):.1f} ms; arrived {r.matched:,} of {r.ok:,}")  # fmt: skip
    print(f"    CPU: serve {pct(r.serve_cpu_s, r.duration)}, stand-in {pct(r.standin_cpu_s, r.duration)}"
          f" (of one core, over the send window), other processes {r.others_pct:.0f}%;"
          f" machine: {r.machine};"
          f" stand-in statuses {dict(r.statuses)}; spool after: {r.spool}")  # fmt: skip
    if r.others:
        print(f"    !! {r.others}")
    for p in r.problems:
        print(f"    !! {p}")
    sys.stdout.flush()


def print_summary(fwd: Drain | None, bare: Drain | None, lat: Latency | None,
                  args: argparse.Namespace) -> bool:  # fmt: skip
    print()
    print(f"Summary: {args.events:,} events, {args.concurrency} in flight; latency at "
          f"{args.rate:g}/s for {args.duration:g} s; cores: {os.cpu_count()}")  # fmt: skip
    print(f"code at start: {args.code}; now: {code_version()}")
    if EXTRA_ENV:
        print(f"!! diagnostic run: the collector had extra settings {EXTRA_ENV}")
    head = (f"{'scenario':<16}{'events':>8}{'wall s':>8}{'ev/s':>9}{'mid80 ev/s':>12}"
            f"{'proc CPU':>10}{'standin CPU':>13}{'others CPU':>12}{'checks':>8}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for d in (fwd, bare):
        if d is None:
            continue
        print(f"{d.name:<16}{d.events:>8,}{d.wall_s:>8.2f}{d.rate:>9,.0f}{d.mid_rate:>12,.0f}"
              f"{pct(d.proc_cpu_s, d.wall_s):>10}{pct(d.standin_cpu_s, d.wall_s):>13}"
              f"{d.others_pct:>11.0f}%"
              f"{'ok' if not d.problems else 'FAIL':>8}")  # fmt: skip
    ok = True
    if fwd is not None:
        verdict = "meets" if fwd.rate >= 10_000 else "BELOW"
        print(f"forwarder: {fwd.rate:,.0f} ev/s from process start ({verdict} target >= 10,000); "
              f"{fwd.mid_rate:,.0f} ev/s over the middle 80%")  # fmt: skip
    if fwd is not None and bare is not None and bare.rate:
        ratio, mid = fwd.rate / bare.rate, fwd.mid_rate / bare.mid_rate
        verdict = "meets" if ratio >= 0.5 else "BELOW"
        print(f"forwarder / {bare.name} aiohttp: {ratio:.2f} from process start, {mid:.2f} over the "
              f"middle 80% ({verdict} target >= 0.50)")  # fmt: skip
    if lat is not None:
        mx = lat.lat[-1] if lat.lat else float("nan")
        verdict = "meets" if lat.p(99) < 250 and lat.matched == lat.ok == lat.sent else "BELOW"
        print(f"latency 2xx->arrival at {lat.send_rate:,.0f}/s: p50 {lat.p(50):.1f}  "
              f"p90 {lat.p(90):.1f}  p99 {lat.p(99):.1f}  max {mx:.1f} ms; arrived "
              f"{lat.matched:,}/{lat.sent:,} ({verdict} target p99 < 250 ms, all arrive); "
              f"serve CPU {pct(lat.serve_cpu_s, lat.duration)}, others "
              f"{lat.others_pct:.0f}%")  # fmt: skip
    notes = [n for x in (fwd, bare, lat) if x is not None for n in (x.quiet, x.others) if n]
    for note in notes:
        print(f"!! {note}")
    problems = sum(len(x.problems) for x in (fwd, bare, lat) if x is not None)
    if problems:
        ok = False
        print(f"!! {problems} problem(s) above: these figures are not to be trusted as they are")
    else:
        print("checks: every event arrived exactly once, every upstream reply 200, every ingest "
              "reply 2xx, spools empty, no dead letters")  # fmt: skip
    if not notes:
        print(f"quiet: no other process above {args.quiet_threshold:g}% of a core before any "
              "measured phase, and all others together below it during each")  # fmt: skip
    return ok


# --- main ----------------------------------------------------------------------------------


def _default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--spool", choices=("sqlite", "redis"), default="sqlite",
                   help="the forwarder's spool: a SQLite file (default) or a redis-server"
                   " of this run's own")  # fmt: skip
    p.add_argument("--events", type=int, default=60_000, help="events to deliver (default 60000)")
    p.add_argument("--concurrency", type=int, default=64,
                   help="requests in flight to the stand-in (default 64)")  # fmt: skip
    p.add_argument(
        "--rate", type=float, default=1000, help="latency phase: events/s (default 1000)"
    )
    p.add_argument("--duration", type=float, default=15,
                   help="latency phase: seconds of load (default 15)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=120,
                   help="at most this many seconds per drain (default 120)")  # fmt: skip
    p.add_argument("--phases", default="forward,bare,latency",
                   help="comma-separated subset of forward,bare,latency (default all)")  # fmt: skip
    p.add_argument("--profile", action="store_true",
                   help="also run an unmeasured drain with py-spy attached to the forwarder")  # fmt: skip
    p.add_argument("--profile-seconds", type=int, default=10, help="py-spy duration (default 10)")
    p.add_argument("--profile-out", type=Path, default=None,
                   help="keep py-spy's raw output here (default: a temp file, deleted)")  # fmt: skip
    p.add_argument("--quiet-threshold", type=float, default=30,
                   help="%% of a core any other process may use before a phase (default 30)")  # fmt: skip
    p.add_argument("--bare-loop", choices=("uvloop", "asyncio"), default=_default_loop(),
                   help="event loop of the bare client (default uvloop when installed: the "
                   "loop `collector forward` and `serve` run on)")  # fmt: skip
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra setting for collector forward/serve, for diagnostics (repeatable)")  # fmt: skip
    p.add_argument("--redo", type=int, default=2,
                   help="measure a phase again if others used > threshold during it (default 2)")  # fmt: skip
    p.add_argument("--quiet-wait", type=float, default=600,
                   help="wait at most this long for a quiet machine, s (default 600)")  # fmt: skip
    p.add_argument("--bare-client", nargs=3, metavar=("API", "BODIES", "RESULT"),
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--load-client", nargs=2, metavar=("URL", "RESULT"), help=argparse.SUPPRESS)
    p.add_argument("--run", default="r", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.events < 10 or args.concurrency < 1 or args.rate <= 0 or args.duration <= 0:
        p.error("--events >= 10, --concurrency >= 1, --rate and --duration > 0")
    for item in args.env:
        key, eq, value = item.partition("=")
        if not eq or not key:
            p.error(f"--env wants KEY=VALUE, got {item!r}")
        EXTRA_ENV[key] = value
    args.phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if args.phases - {"forward", "bare", "latency"}:
        p.error(f"unknown phase(s) {args.phases - {'forward', 'bare', 'latency'}}")
    return args


P = TypeVar("P", Drain, Latency)


def redo(label: str, phase: Callable[[], P], args: argparse.Namespace) -> P:
    """Run a phase; again (at most --redo times) if other processes disturbed it."""
    for attempt in range(args.redo + 1):
        result = phase()
        if isinstance(result, Drain):
            print_drain(result)
        else:
            print_latency(result)
        if result.others is None:
            return result
        if attempt < args.redo:
            print(f"  {label} was disturbed by other processes: measuring it again "
                  f"({attempt + 1} of at most {args.redo})")  # fmt: skip
    return result


def code_version() -> str:
    """The commit measured, and whether collector/ differs from it (others edit it too)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %cd %s",
                               "--date=format:%H:%M"], capture_output=True, text=True,
                              timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "collector"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return head + (
        f"; UNCOMMITTED changes in {', '.join(changed)}" if changed else "; collector/ clean"
    )


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through the context managers: processes get stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_client:
        api, bodies, result = args.bare_client
        return bare_client(api, bodies, result, args.concurrency, args.bare_loop)
    if args.load_client:
        url, result = args.load_client
        return load_client(url, result, args.rate, args.duration, args.run)
    signal.signal(signal.SIGTERM, _sigterm)
    # Ctrl-C: KeyboardInterrupt even if SIGINT came ignored (e.g. started with `&` by a shell)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = secrets.token_hex(3)
    fwd = bare = lat = None
    print(f"deliver bench {run}: {args.events:,} events, concurrency {args.concurrency}, "
          f"latency at {args.rate:g}/s for {args.duration:g} s; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    args.code = code_version()
    print(f"code: {args.code}")
    if EXTRA_ENV:
        print(f"extra settings for the collector (diagnostic run): {EXTRA_ENV}")
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-deliver-") as tmp,
            contextlib.ExitStack() as stack,
        ):
            workdir = Path(tmp)
            t = time.perf_counter()
            entries = make_entries(args.events, run)
            size = sum(len(e.body) for e in entries) / len(entries)
            gc.collect()
            gc.freeze()  # the entries live all run: no full collection walks them again
            print(f"built {len(entries):,} bodies (mean {size:.0f} bytes) in "
                  f"{time.perf_counter() - t:.1f} s")  # fmt: skip
            if args.spool == "redis":
                REDIS_URL.append(stack.enter_context(redis_server(workdir)))
                print(f"spool: redis-server at {REDIS_URL[0]} (appendfsync always)")
            with stand_in(workdir) as s:
                print(f"stand-in on {s.api} (pid {s.proc.pid})")
                if "forward" in args.phases:
                    print("phase 1: collector forward drains the spool")
                    fwd = redo("forward", lambda: run_forward(s, entries, workdir, args), args)
                if "bare" in args.phases:
                    print("phase 2: bare aiohttp client, same bodies, same stand-in")
                    bare = redo("bare", lambda: run_bare(s, entries, workdir, args), args)
                if "latency" in args.phases:
                    print(
                        f"phase 3: collector serve, {args.rate:g} events/s for {args.duration:g} s"
                    )
                    lat = redo("latency", lambda: run_latency(s, workdir, args, run), args)
                if args.profile:
                    out = args.profile_out or workdir / "forward.pyspy.txt"
                    print(f"profile: py-spy on an unmeasured forward drain of {len(entries):,} "
                          f"events (up to {args.profile_seconds} s), raw output {out}")  # fmt: skip
                    pd = run_forward(s, entries, workdir, args,
                                     profile=out)  # fmt: skip
                    print(
                        f"  (drain under py-spy: {pd.rate:,.0f} ev/s, {len(pd.problems)} problem(s))"
                    )
                    if out.exists():
                        print("\n".join(summarize_profile(out)))
    except KeyboardInterrupt:
        print("\ninterrupted; processes stopped", file=sys.stderr)
        return 130
    return 0 if print_summary(fwd, bare, lat, args) else 1


if __name__ == "__main__":
    sys.exit(main())
