"""Ingest throughput of the collector against a bare Starlette endpoint, with wrk.

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 64] [--runs 3]
                                     [--sync full|normal] [--no-message-id]

Not part of the test suite. Three scenarios, alternated `--runs` times so drift on a noisy
machine hits all of them equally; the medians are reported:

  bare      bench/bare_app.py: Starlette reads the body and answers 204 (the ceiling)
  single    the collector, POST /v1/events with one ~520-byte productViewed event
  batch100  the collector, POST /v1/events with {"batch": [100 events]}
  redis-single, redis-batch100   the same two with COLLECTOR_SPOOL_URL=redis://: a fresh
            redis-server per run in the temp directory, appendonly yes + appendfsync always
            (the same promise as SQLite's full sync); choose them with
            --scenarios bare,single,batch,rsingle,rbatch

Every server runs on 127.0.0.1 with one uvicorn worker ("auto" loop/http: uvloop +
httptools), log level warning, no access log, and is stopped when the script ends, also
on Ctrl-C or an error. Each collector run gets a fresh SQLite spool in a temp directory.
Each event carries a unique messageId (bench/events.lua), so the deduplication path runs
and nothing is a duplicate.

Honesty checks: req/s counts only 2xx answers; the warm-up checks every response body
({"accepted": N, "duplicates": 0, "rejected": []}); after each collector run the spool's
row count is compared with the events wrk saw acknowledged (it may exceed them by at most
the requests still in flight when wrk stopped).

wrk and the server share the machine's cores: the CPU columns show who had them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "events.lua"
API_KEY = "k"
WARMUP_S = 2
# No spool bound during the benchmark: at 100k events/s the default (1M) fills in 10 s and
# the rest of the run would be 503s.
SPOOL_MAX_EVENTS = 1_000_000_000
TICKS = os.sysconf("SC_CLK_TCK")


# --- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    collector: bool  # False: bench/bare_app.py
    batch: int  # 0: one event per request (no "batch" wrapper)
    redis: bool = False  # the spool in a redis-server of its own, not a SQLite file

    @property
    def events_per_request(self) -> int:
        return max(self.batch, 1)

    def expected_reply(self) -> str:
        """What every response must be (status, then exact body if it has one)."""
        if not self.collector:
            return "204"
        n = self.events_per_request
        return f'200 {{"accepted":{n},"duplicates":0,"rejected":[]}}'


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this script dies without cleaning up (e.g. SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], workdir: Path) -> Iterator[Server]:
    """Start `cmd --port P` on loopback, wait until GET /healthz answers, stop it at the end."""
    port = free_port()
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only this script, which stops it
            preexec_fn=_die_with_parent,
        )
    try:
        wait_healthy(proc, port, log)
        yield Server(proc, port, log)
    finally:
        stop(proc)


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 20) -> None:
    wait_http(proc, f"http://127.0.0.1:{port}/healthz", log, timeout)


def wait_http(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 20) -> None:
    """Until `url` answers 200; raise with the log's tail if the process dies or it times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError), _no_proxy.open(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{tail(log)}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down gracefully: the spool is closed), SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").strip()
        return "\n".join(text.splitlines()[-lines:])
    return ""


def clean_env() -> dict[str, str]:
    """This environment without any COLLECTOR_*/YESPO_* setting that could skew a run."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_", "YESPO_"))}


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A redis-server of the run's own (appendfsync always), its URL; stopped after."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             check=False).stdout.strip() != b"PONG":  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def redis_rows(url: str) -> int:
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["redis-cli", "-p", port, "zcard", "{yc}:all"], capture_output=True,
                         check=True).stdout  # fmt: skip
    return int(out)


def server_command(
    sc: Scenario, workdir: Path, args: argparse.Namespace, spool_url: str = ""
) -> tuple[list[str], dict[str, str]]:
    env = clean_env()
    if not sc.collector:
        cmd = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1",
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
        return cmd, env
    script = Path(sys.executable).parent / "collector"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "collector"]
    env.update(
        COLLECTOR_API_KEYS=API_KEY,
        COLLECTOR_SPOOL_URL=spool_url or f"sqlite:///{workdir / 'spool.db'}",  # 4 slashes
        COLLECTOR_SPOOL_SYNC=args.sync,
        COLLECTOR_SPOOL_MAX_EVENTS=str(SPOOL_MAX_EVENTS),
        COLLECTOR_LOG_LEVEL="warning",
        # Ingest only: delivery (bench/deliver.py measures it) would share the core and
        # empty the spool that the row-count check reads.
        COLLECTOR_FORWARD="false",
    )
    return [*cmd, "serve", "--host", "127.0.0.1"], env


# --- wrk -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int  # completed responses, any status
    seconds: float
    non2xx: int  # wrk's "Non-2xx or 3xx responses" (status >= 400)
    socket_errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    wrk_cpu_s: float
    check: tuple[int, int] | None = None  # (ok, bad) responses, when checked
    sample: str | None = None  # the first response that did not match
    output: str = ""

    @property
    def good(self) -> int:
        return self.requests - self.non2xx

    @property
    def good_rps(self) -> float:
        return self.good / self.seconds


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


def _seconds(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def wrk_command(url: str, duration: float, args: argparse.Namespace) -> list[str]:
    return ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s",
            "--timeout", "10s", "--latency", "-s", str(LUA), url]  # fmt: skip


def run_wrk(url: str, duration: float, sc: Scenario, args: argparse.Namespace, run_id: str,
            check: bool) -> WrkResult:  # fmt: skip
    env = os.environ.copy()
    env.update(
        BENCH_KEY=API_KEY,
        BENCH_BATCH=str(sc.batch),
        BENCH_MSGID="0" if args.no_message_id else "1",
        BENCH_RUN=run_id,
    )
    env.pop("BENCH_EXPECT", None)
    if check:
        env["BENCH_EXPECT"] = sc.expected_reply()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        wrk_command(url, duration, args), env=env, capture_output=True, text=True,
        timeout=duration + 60,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.stdout
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}\n{proc.stderr}")
    return parse_wrk(out, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))


def parse_wrk(out: str, cpu: float) -> WrkResult:
    done = re.search(rf"(\d+) requests in {_TIME}", out)
    if done is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    percentiles = {
        int(m[1]): _seconds(m[2], m[3]) * 1000
        for m in re.finditer(rf"^\s+(50|75|90|99)%\s+{_TIME}\s*$", out, re.M)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    names = ("connect", "read", "write", "timeout")
    check = re.search(r"BENCHCHECK ok=(\d+) bad=(\d+)", out)
    sample = re.search(r"^BENCHSAMPLE (.*)$", out, re.M)
    return WrkResult(
        requests=int(done[1]),
        seconds=_seconds(done[2], done[3]),
        non2xx=int(non2xx[1]) if non2xx else 0,  # wrk prints the line only when not zero
        socket_errors=dict(zip(names, map(int, sock.groups()), strict=True)) if sock else {},
        p50_ms=percentiles.get(50, float("nan")),
        p99_ms=percentiles.get(99, float("nan")),
        wrk_cpu_s=cpu,
        check=(int(check[1]), int(check[2])) if check else None,
        sample=sample[1] if sample else None,
        output=out,
    )


# --- one measurement -----------------------------------------------------------------------


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which is already in user
    return (total - idle) / TICKS, total / TICKS


@dataclass
class Measurement:
    scenario: Scenario
    timed: WrkResult
    warmup: WrkResult
    server_cpu_s: float
    machine_busy_s: float
    machine_total_s: float
    spool_rows: int | None = None
    server_log: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.timed.good_rps

    @property
    def events_per_s(self) -> float:
        return self.rps * self.scenario.events_per_request

    def acked_events(self) -> int:
        return (self.warmup.good + self.timed.good) * self.scenario.events_per_request

    def in_flight_bound(self, connections: int) -> int:
        # each of the two wrk runs may stop with one request outstanding per connection
        return 2 * connections * self.scenario.events_per_request


def measure(sc: Scenario, args: argparse.Namespace, run_id: str) -> Measurement:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{sc.name}-") as tmp,
        contextlib.ExitStack() as st,
    ):
        workdir = Path(tmp)
        spool_url = st.enter_context(redis_server(workdir)) if sc.redis else ""
        cmd, env = server_command(sc, workdir, args, spool_url)
        with server(cmd, env, workdir) as srv:
            url = f"http://127.0.0.1:{srv.port}/v1/events"
            warmup = run_wrk(url, WARMUP_S, sc, args, f"{run_id}w", check=True)
            cpu0, (busy0, total0) = srv.cpu_seconds(), machine_busy()
            timed = run_wrk(url, args.duration, sc, args, f"{run_id}t", check=False)
            cpu1, (busy1, total1) = srv.cpu_seconds(), machine_busy()
        # the server has stopped (gracefully): every commit it made is in the file
        m = Measurement(sc, timed, warmup, cpu1 - cpu0, busy1 - busy0, total1 - total0)
        m.server_log = tail(srv.log, 20)
        if sc.redis:
            m.spool_rows = redis_rows(spool_url)
        elif sc.collector:
            with contextlib.closing(sqlite3.connect(workdir / "spool.db")) as db:
                m.spool_rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
    check_measurement(m, args)
    return m


def check_measurement(m: Measurement, args: argparse.Namespace) -> None:
    for phase, r in (("warm-up", m.warmup), ("timed run", m.timed)):
        if r.non2xx:
            m.problems.append(f"{phase}: {r.non2xx} non-2xx responses")
        errors = {k: v for k, v in r.socket_errors.items() if v}
        if errors:
            m.problems.append(f"{phase}: socket errors {errors}")
    if m.warmup.check is None:
        m.problems.append("warm-up: wrk did not report the response check")
    elif m.warmup.check[1]:
        m.problems.append(
            f"warm-up: {m.warmup.check[1]} of {sum(m.warmup.check)} responses were not "
            f"{m.scenario.expected_reply()!r}; first: {m.warmup.sample}"
        )
    if m.spool_rows is not None:
        extra = m.spool_rows - m.acked_events()
        if not 0 <= extra <= m.in_flight_bound(args.connections):
            m.problems.append(
                f"spool holds {m.spool_rows} events but wrk saw {m.acked_events()} acknowledged "
                f"(allowed surplus 0..{m.in_flight_bound(args.connections)} in flight)"
            )
    if m.server_log:
        m.problems.append("server wrote to its log:\n    " + m.server_log.replace("\n", "\n    "))


# --- report --------------------------------------------------------------------------------


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def print_measurement(i: int, m: Measurement, args: argparse.Namespace) -> None:
    t = m.timed
    line = (
        f"  run {i}  {m.scenario.name:<9} {m.rps:>9,.0f} req/s {m.events_per_s:>10,.0f} ev/s"
        f"  p50 {t.p50_ms:6.2f} ms  p99 {t.p99_ms:7.2f} ms  non-2xx {t.non2xx}"
        f"  server CPU {pct(m.server_cpu_s, t.seconds)}  wrk CPU {pct(t.wrk_cpu_s, t.seconds)}"
        f"  machine busy {pct(m.machine_busy_s, m.machine_total_s)}"
    )
    print(line)
    if m.spool_rows is not None:
        extra = m.spool_rows - m.acked_events()
        print(
            f"           spool rows {m.spool_rows:,} vs 2xx events from wrk {m.acked_events():,}"
            f" (warm-up + timed): +{extra} in flight at the stop"
            f" (bound {m.in_flight_bound(args.connections):,})"
        )
    for problem in m.problems:
        print(f"           !! {problem}")
    sys.stdout.flush()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_summary(results: dict[str, list[Measurement]], args: argparse.Namespace) -> bool:
    print()
    print(f"Medians of {args.runs} run(s), {args.duration:g} s each, {args.connections} connections, "
          f"{args.threads} wrk thread(s), spool sync={args.sync}, "
          f"messageIds {'none' if args.no_message_id else 'unique per event'}")  # fmt: skip
    head = (f"{'scenario':<10}{'req/s':>10}{'events/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'non-2xx':>9}{'sock err':>9}{'srv CPU':>9}{'µs CPU/req':>11}{'wrk CPU':>9}"
            f"{'busy':>6}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for name, ms in results.items():
        if not ms:
            continue
        print(
            f"{name:<10}"
            f"{median([m.rps for m in ms]):>10,.0f}"
            f"{median([m.events_per_s for m in ms]):>11,.0f}"
            f"{median([m.timed.p50_ms for m in ms]):>9.2f}"
            f"{median([m.timed.p99_ms for m in ms]):>9.2f}"
            f"{sum(m.timed.non2xx + m.warmup.non2xx for m in ms):>9}"
            f"{sum(sum(m.timed.socket_errors.values()) for m in ms):>9}"
            f"{median([100 * m.server_cpu_s / m.timed.seconds for m in ms]):>8.0f}%"
            f"{median([1e6 * m.server_cpu_s / max(m.timed.requests, 1) for m in ms]):>11.1f}"
            f"{median([100 * m.timed.wrk_cpu_s / m.timed.seconds for m in ms]):>8.0f}%"
            f"{median([100 * m.machine_busy_s / m.machine_total_s for m in ms]):>5.0f}%"
        )
    print("(non-2xx: warm-up + timed, all runs; CPU: % of one core, busy: whole machine)")
    print()

    ok = True
    bare, single = results.get("bare", []), results.get("single", [])
    if bare and single:
        ratio = median([m.rps for m in single]) / median([m.rps for m in bare])
        per_run = ", ".join(f"{s.rps / b.rps:.2f}" for b, s in zip(bare, single, strict=False))
        verdict = "meets" if ratio >= 0.50 else "BELOW"
        print(f"single/bare ratio: {ratio:.2f} ({verdict} target >= 0.50; per run: {per_run})")
    batch = [v for k, v in results.items() if k.startswith("batch")]
    if batch and batch[0]:
        eps = median([m.events_per_s for m in batch[0]])
        verdict = "meets" if eps >= 100_000 else "BELOW"
        print(f"{batch[0][0].scenario.name} events/s: {eps:,.0f} ({verdict} target >= 100,000)")
    collector = [m for ms in results.values() for m in ms if m.spool_rows is not None]
    if collector:
        rows = sum(m.spool_rows or 0 for m in collector)
        acked = sum(m.acked_events() for m in collector)
        print(f"spool rows, all collector runs: {rows:,}; 2xx events reported by wrk: {acked:,} "
              f"(difference {rows - acked:+,}: requests in flight when wrk stopped)")  # fmt: skip
    problems = sum(len(m.problems) for ms in results.values() for m in ms)
    if problems:
        ok = False
        print(f"!! {problems} problem(s) above: these figures are not to be trusted as they are")
    else:
        print("checks: no non-2xx, no socket errors, every warm-up reply as expected, "
              "spool row counts match")  # fmt: skip
    return ok


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10, help="seconds per timed run (default 10)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--runs", type=int, default=3, help="rounds of all scenarios (default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="wrk threads (default 1: leaves the other core to the server)")  # fmt: skip
    p.add_argument("--sync", choices=("full", "normal"), default="full",
                   help="COLLECTOR_SPOOL_SYNC: full = fsync per commit (default), normal")  # fmt: skip
    p.add_argument("--no-message-id", action="store_true",
                   help="send events without messageId (the collector makes the ids)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=100, help="events per batch request")
    p.add_argument("--scenarios", default="bare,single,batch",
                   help="comma-separated subset of bare,single,batch,rsingle,rbatch"
                        " (default bare,single,batch)")  # fmt: skip
    args = p.parse_args(argv)
    if args.duration <= 0 or args.runs <= 0 or args.batch_size <= 0:
        p.error("--duration, --runs and --batch-size must be positive")
    if args.connections < args.threads:
        p.error("--connections must be at least --threads")
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    known = {
        "bare": Scenario("bare", collector=False, batch=0),
        "single": Scenario("single", collector=True, batch=0),
        "batch": Scenario(f"batch{args.batch_size}", collector=True, batch=args.batch_size),
        "rsingle": Scenario("redis-single", collector=True, batch=0, redis=True),
        "rbatch": Scenario(
            f"redis-batch{args.batch_size}", collector=True, batch=args.batch_size, redis=True
        ),
    }
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in known]
    if unknown:
        sys.exit(f"unknown scenario(s) {unknown}; choose from {', '.join(known)}")
    return [known[s] for s in chosen]


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through the context managers: servers get stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with:  apt-get install -y wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    chosen = scenarios(args)
    results: dict[str, list[Measurement]] = {sc.name: [] for sc in chosen}
    token = secrets.token_hex(3)
    estimate = args.runs * len(chosen) * (args.duration + WARMUP_S + 3)
    print(f"wrk: {' '.join(wrk_command('http://127.0.0.1:P/v1/events', args.duration, args))}")
    print(f"cores: {os.cpu_count()} (wrk and the server share them); about {estimate:.0f} s in all")
    try:
        for i in range(1, args.runs + 1):
            for sc in chosen:  # alternate, so drift hits every scenario alike
                m = measure(sc, args, f"{token}-{i}-{sc.name}")
                results[sc.name].append(m)
                print_measurement(i, m, args)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    return 0 if print_summary(results, args) else 1


if __name__ == "__main__":
    sys.exit(main())
