"""`collector tail` as a user runs it, against a real collector process: one line per
step, filters, --json, and a collector restart crossed with Last-Event-ID."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson

from .conftest import API_KEY, ROOT, Process, free_port

INSPECT_KEY = "inspect-tail"


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        "COLLECTOR_API_KEYS": API_KEY,
        "COLLECTOR_SPOOL_URL": f"sqlite:///{tmp_path}/spool.db",
        "COLLECTOR_FORWARD": "false",
        "COLLECTOR_INSPECT_KEY": INSPECT_KEY,
        "COLLECTOR_LOG_LEVEL": "warning",
    }


async def post(url: str, n: int, email: str = "alice@example.com") -> None:
    event = {"type": "pageViewed", "messageId": f"t-{n}", "contact": {"email": email},
             "properties": {"location": f"https://shop.example/p/{n}"}}  # fmt: skip
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/v1/events", json=event, headers=headers) as resp,
    ):
        assert resp.status == 200


@asynccontextmanager
async def tail(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "tail", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def line_of(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    return (await asyncio.wait_for(stream.readline(), 15)).decode().rstrip("\n")


async def test_tail_prints_each_step_masked_one_line_each(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    proc = Process(port, env_for(tmp_path), tmp_path / "collector.log")
    processes.append(proc)
    await proc.wait_ready()
    async with tail("--url", proc.url, "--key", INSPECT_KEY, "--step", "normalized") as t:
        await asyncio.sleep(0.5)  # connected (steps before it would come from the buffer too)
        await post(proc.url, 1)
        line = await line_of(t.stdout)
        assert "normalized" in line and "pageViewed" in line and "a***@example.com" in line
        assert "alice@" not in line


async def test_tail_json_follows_the_collector_across_a_restart(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    env = env_for(tmp_path)
    first = Process(port, env, tmp_path / "collector.log")
    processes.append(first)
    await first.wait_ready()
    args = ("--url", first.url, "--json", "--no-mask", "--source", "events")
    async with tail(*args, "--key", INSPECT_KEY) as t:
        await post(first.url, 1)
        steps = [orjson.loads(await line_of(t.stdout)) for _ in range(2)]
        assert [s["step"] for s in steps] == ["received", "normalized"]
        assert steps[0]["keyValue"] == "alice@example.com"

        first.stop()
        said = await line_of(t.stderr)
        assert "reconnecting" in said and steps[1]["id"] in said
        second = Process(port, env, tmp_path / "collector.log")
        processes.append(second)
        await second.wait_ready()
        assert "reconnected" in await line_of(t.stderr)
        await post(second.url, 2)
        again = [orjson.loads(await line_of(t.stdout)) for _ in range(2)]
        assert [(s["journey"], s["step"]) for s in again] == [
            ("t-2", "received"),
            ("t-2", "normalized"),
        ]
        assert again[0]["collector"] != steps[0]["collector"]


async def test_tail_says_why_it_cannot_read_and_exits(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    proc = Process(port, env_for(tmp_path), tmp_path / "collector.log")
    processes.append(proc)
    await proc.wait_ready()
    async with tail("--url", proc.url, "--key", "wrong") as t:
        assert await asyncio.wait_for(t.wait(), 15) == 1
        assert "401" in await line_of(t.stderr)
