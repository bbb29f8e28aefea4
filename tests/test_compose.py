"""compose.yaml, run as the processes it describes.

There is no Docker engine on the machines this project is tested on, so `docker compose
up` itself cannot run here. This test runs what it would start, read from the file: the
redis service's own command, the stand-in's own entrypoint, and each collector with its
own environment, the service names (`redis`, `standin`) pointed at loopback ports. An
event sent to each collector with the file's key must reach the stand-in, so a setting
misspelt or a service pointed at the wrong place in compose.yaml fails here."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from .conftest import ROOT, Process, free_port
from .redis_server import RedisServer

COMPOSE = ROOT / "compose.yaml"


def services() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, Any] = doc["services"]
    return found


def collectors(all_services: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each collector service's environment (the services built from the Dockerfile
    whose entrypoint is the Dockerfile's own: `collector serve`)."""
    return {
        name: {k: str(v) for k, v in s.get("environment", {}).items()}
        for name, s in all_services.items()
        if s.get("build") and "entrypoint" not in s
    }


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_redis_in_compose_persists_every_write_before_it_answers() -> None:
    # docs/redis.md: a 2xx survives a crash of Redis only with AOF fsynced on every write.
    command = services()["redis"]["command"]
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--appendfsync") == "always"


def test_collectors_wait_for_a_healthy_redis() -> None:
    # A collector whose Redis does not answer yet exits at start; compose would then leave
    # it stopped. So each waits for redis's health check, and restarts if it fails anyway.
    everything = services()
    assert "healthcheck" in everything["redis"]
    for name in collectors(everything):
        service = everything[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert service.get("restart") in ("on-failure", "unless-stopped", "always"), name


def launch(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)


async def until_redis_answers(port: int) -> None:
    for _ in range(500):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.write(b"PING\r\n")
        answer = await reader.read(16)
        writer.close()
        if answer.startswith(b"+PONG"):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"redis-server on port {port} did not answer")


@pytest.fixture
def stopping() -> Any:
    started: list[subprocess.Popen[bytes] | Process | RedisServer] = []
    yield started
    for p in started:
        if isinstance(p, subprocess.Popen):
            p.terminate()
            p.wait(timeout=10)
        else:
            p.stop()


async def test_each_collector_of_compose_delivers_to_the_stand_in(
    tmp_path: Path, stopping: list[Any]
) -> None:
    everything = services()
    redis_args = everything["redis"]["command"]
    redis_port = free_port()
    stopping.append(
        launch([*redis_args, "--port", str(redis_port), "--bind", "127.0.0.1",
                "--dir", str(tmp_path), "--save", "", "--daemonize", "no"])
    )  # fmt: skip
    await until_redis_answers(redis_port)  # compose's health check, before the collectors

    standin_args = list(everything["standin"]["entrypoint"])
    assert standin_args[:3] == ["python", "-m", "standin"]
    standin_port = free_port()
    standin_args[standin_args.index("--host") + 1] = "127.0.0.1"
    standin_args[standin_args.index("--port") + 1] = str(standin_port)
    stopping.append(launch([sys.executable, *standin_args[1:]]))

    where = {"redis:6379": f"127.0.0.1:{redis_port}", "standin:9090": f"127.0.0.1:{standin_port}"}
    envs = collectors(everything)
    assert len(envs) >= 2, "compose.yaml shows several collectors on one Redis"
    running = []
    for name, env in envs.items():
        for service, local in where.items():
            env = {k: v.replace(service, local) for k, v in env.items()}
        process = Process(free_port(), env, tmp_path / f"{name}.log")
        stopping.append(process)
        running.append((name, env, process))
    for _, _, process in running:
        await process.wait_ready(within_s=30)

    async with aiohttp.ClientSession() as http:
        for name, env, process in running:
            key = env["COLLECTOR_API_KEYS"].split(",")[0]
            event = {
                "type": "pageViewed",
                "messageId": f"compose-{name}",
                "contact": {"email": f"{name}@example.com"},
                "properties": {"location": "https://shop.example/"},
            }
            headers = {"Authorization": f"Bearer {key}"}
            async with http.post(process.url + "/v1/events", json=event, headers=headers) as r:
                assert r.status == 200, await r.text()
        stand_in = f"http://127.0.0.1:{standin_port}/_standin/events"
        wanted = {f"{name}@example.com" for name in envs}
        seen: set[str] = set()
        for _ in range(300):  # up to 30 s: the collectors deliver within a second
            async with http.get(stand_in) as r:
                got = await r.json()
            seen = {e["body"]["keyValue"] for e in got["events"]} & wanted
            if seen == wanted:
                break
            await asyncio.sleep(0.1)
        assert seen == wanted
