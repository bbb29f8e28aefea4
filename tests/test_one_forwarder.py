"""One forwarder per SQLite spool, in real processes: a second one refuses to start and
names the first, processes that only take events in start beside it, and the lock dies
with its holder."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from standin import Faults, StandIn

from .conftest import ROOT, YESPO_KEY, Process, free_port
from .test_delivery_process import EVENTS, arrived, env_for, post_all, waiting_in

# How long a refused process may take to start and give up (a bound, not a figure).
REFUSED_WITHIN_S = 30


async def refused(proc: Process, log: Path) -> str:
    """Wait for a process that must refuse to start; its non-zero exit's log."""
    code = await asyncio.to_thread(proc.proc.wait, REFUSED_WITHIN_S)
    out = await asyncio.to_thread(log.read_text)
    assert code != 0, out
    return out


async def all_arrive(standin: StandIn) -> None:
    deadline = time.monotonic() + 30
    while len(arrived(standin)) < EVENTS and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert len(arrived(standin)) == EVENTS, f"{EVENTS - len(arrived(standin))} events lost"


async def test_second_forwarder_refuses_naming_the_first_and_ingest_starts_beside_it(
    tmp_path: Path, processes: list[Process]
) -> None:
    db = tmp_path / "spool.db"
    async with StandIn(api_key=YESPO_KEY) as standin:
        env = env_for(standin, db)
        first = Process(free_port(), env, tmp_path / "first.log")
        processes.append(first)
        await first.wait_ready()
        pid = first.proc.pid

        second = Process(free_port(), env, tmp_path / "second.log")
        processes.append(second)
        out = await refused(second, tmp_path / "second.log")
        assert f"another collector (pid {pid}) is already delivering from {db}" in out
        assert "--no-forward" in out and "Traceback" not in out

        forward = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "collector", "forward"],
            env={**os.environ, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=REFUSED_WITHIN_S,
        )
        assert forward.returncode != 0, forward.stderr
        assert f"another collector (pid {pid}) is already delivering" in forward.stderr
        assert "Traceback" not in forward.stderr

        ingest = Process(free_port(), env, tmp_path / "ingest.log", "--no-forward")
        processes.append(ingest)
        await ingest.wait_ready()

        first.kill()  # SIGKILL: nothing of it runs to release the lock, the kernel does
        third = Process(free_port(), env, tmp_path / "third.log")
        processes.append(third)
        await third.wait_ready()
        await post_all(ingest.url)  # taken in beside it, delivered by it
        await all_arrive(standin)


async def test_dry_run_beside_a_delivering_collector_refuses_and_no_event_is_lost(
    tmp_path: Path, processes: list[Process]
) -> None:
    # The Quick start, as it went wrong: a collector delivering to Yespo holds queued
    # events (Yespo answers 503), and a second `collector serve` in the same directory,
    # without YESPO_API_KEY, would "deliver" them to its log and delete them.
    db = tmp_path / "spool.db"
    async with StandIn(api_key=YESPO_KEY) as standin:
        standin.faults = Faults(status=503)
        delivering = Process(free_port(), env_for(standin, db), tmp_path / "delivering.log")
        processes.append(delivering)
        await delivering.wait_ready()
        await post_all(delivering.url)

        dry = Process(free_port(), env_for(standin, db, YESPO_API_KEY=""), tmp_path / "dry.log")
        processes.append(dry)
        out = await refused(dry, tmp_path / "dry.log")
        assert f"(pid {delivering.proc.pid}) is already delivering" in out
        assert waiting_in(db) == EVENTS

        standin.faults = Faults()
        await all_arrive(standin)
