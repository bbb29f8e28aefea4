"""What the live inspector costs ingest: bench/ingest.py's `single` scenario (POST
/v1/events, one event per request, wrk), with the inspector off, on without a watcher, and
on with one watcher reading /inspect/stream, in a new order each round of one run.

    .venv/bin/python bench/inspector.py [--duration 10] [--connections 64] [--runs 3]

Targets (#17): on without a watcher at most 2% slower than off, with one watcher at most
10%: judged on the server's CPU per event (throughput swings with whatever else runs on
the machine; at saturation the two say the same) and printed for both. The watcher is curl reading the stream (masked, as a page opens it) into a
file; its steps are counted after the run and compared with the events acknowledged (two
steps each: received and normalized). Not part of the test suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, from any directory: the checkout's `bench` package (for ingest.py) must
# be importable. (Not named inspect.py: in bench/, first on sys.path for every script run
# from there, it would hide the standard library's `inspect` from all of them.)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from bench import ingest  # noqa: E402

INSPECT_KEY = "bench-inspect"
VARIANTS = ("off", "on", "watched")


@dataclass
class Run:
    variant: str
    events_per_s: float
    server_cpu_s: float
    seconds: float
    acked: int
    steps_seen: int | None
    problems: list[str]


def measure(variant: str, args: argparse.Namespace, run_id: str) -> Run:
    sc = ingest.Scenario("single", collector=True, batch=0)
    with tempfile.TemporaryDirectory(prefix=f"bench-inspect-{variant}-") as tmp:
        workdir = Path(tmp)
        cmd, env = ingest.server_command(sc, workdir, args)
        if variant != "off":
            env["COLLECTOR_INSPECT_KEY"] = INSPECT_KEY
            if args.buffer is not None:
                env["COLLECTOR_INSPECT_BUFFER"] = str(args.buffer)
        with ingest.server(cmd, env, workdir) as srv, contextlib.ExitStack() as st:
            base = f"http://127.0.0.1:{srv.port}"
            steps_file = workdir / "stream.txt"
            if variant == "watched":
                out = st.enter_context(steps_file.open("wb"))
                watcher = subprocess.Popen(
                    ["curl", "-sN", "-H", f"Authorization: Bearer {INSPECT_KEY}",
                     f"{base}/inspect/stream"],
                    stdout=out, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                st.callback(watcher.wait)
                st.callback(watcher.terminate)
                time.sleep(0.3)  # connected before the load starts
            url = f"{base}/v1/events"
            warmup = ingest.run_wrk(url, ingest.WARMUP_S, sc, args, f"{run_id}w", check=True)
            cpu0 = srv.cpu_seconds()
            timed = ingest.run_wrk(url, args.duration, sc, args, f"{run_id}t", check=False)
            cpu1 = srv.cpu_seconds()
            time.sleep(0.5)  # the last flush reaches the watcher
        problems = []
        for phase, r in (("warm-up", warmup), ("timed", timed)):
            if r.non2xx or any(r.socket_errors.values()):
                problems.append(f"{phase}: {r.non2xx} non-2xx, socket errors {r.socket_errors}")
        if warmup.check is None or warmup.check[1]:
            problems.append(f"warm-up replies not as expected: {warmup.sample}")
        acked = warmup.good + timed.good
        seen = None
        if variant == "watched":
            text = steps_file.read_bytes()
            seen = text.count(b"\nevent: step\n")
            # past LIVE_STEPS_PER_S the stream sends a sample and counts what it left out
            skipped = sum(int(n) for n in re.findall(rb'"skipped":(\d+)', text))
            if seen + skipped < 2 * acked:
                problems.append(
                    f"the watcher saw {seen} steps and was told of {skipped} left out,"
                    f" of {2 * acked} at least"
                )
        return Run(variant, timed.good_rps, cpu1 - cpu0, timed.seconds, acked, seen, problems)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--buffer", type=int, help="COLLECTOR_INSPECT_BUFFER (default: its default)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="a subset of off,on,watched")
    args = p.parse_args()
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    # What bench/ingest.py's wrk and server helpers read.
    args.threads, args.sync, args.no_message_id = 1, "full", False
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install -y {tool})", file=sys.stderr)
            return 2
    token = secrets.token_hex(3)
    results: dict[str, list[Run]] = {v: [] for v in variants}
    for i in range(1, args.runs + 1):
        # Each round in a new order: drift, and whichever variant runs after which, hit
        # each alike.
        for variant in random.sample(variants, len(variants)):
            r = measure(variant, args, f"{token}-{i}-{variant}")
            results[variant].append(r)
            seen = "" if r.steps_seen is None else f"  watcher saw {r.steps_seen:,} steps"
            print(f"  run {i}  {variant:<8} {r.events_per_s:>9,.0f} events/s"
                  f"  server CPU {100 * r.server_cpu_s / r.seconds:3.0f}%"
                  f"  {1e6 * r.server_cpu_s / max(r.events_per_s * r.seconds, 1):6.1f} µs/event"
                  f"{seen}")  # fmt: skip
            for problem in r.problems:
                print(f"           !! {problem}")
            sys.stdout.flush()
    med = {v: ingest.median([r.events_per_s for r in rs]) for v, rs in results.items()}
    cpu = {
        v: ingest.median([1e6 * r.server_cpu_s / max(r.events_per_s * r.seconds, 1) for r in rs])
        for v, rs in results.items()
    }
    print(
        f"\nMedians of {args.runs} run(s), {args.duration:g} s each, {args.connections} connections"
    )
    for v in variants:
        print(f"  {v:<8} {med[v]:>9,.0f} events/s  {cpu[v]:6.1f} µs CPU/event")
    for v, target in (("on", 2.0), ("watched", 10.0)):
        if v not in med or "off" not in med:
            continue
        costlier = 100 * (cpu[v] / cpu["off"] - 1)
        slower = 100 * (1 - med[v] / med["off"])
        verdict = "meets" if costlier <= target else "ABOVE"
        print(
            f"  {v} vs off: {costlier:+.1f}% CPU per event ({verdict} target <= {target:g}%),"
            f" {slower:+.1f}% events/s slower"
        )
    problems = sum(len(r.problems) for rs in results.values() for r in rs)
    if problems:
        print(f"!! {problems} problem(s) above")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
