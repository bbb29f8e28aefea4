"""Shared fixtures: a real uvicorn server on loopback, real HTTP clients."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from collector.app import create_app
from collector.config import Settings
from collector.web.server import UVICORN_OPTIONS

from .redis_server import RedisServer

API_KEY = "test-key"
YESPO_KEY = "yespo-key"  # the key the Yespo stand-in takes in tests
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: ASGIApp, port: int = 0) -> AsyncIterator[str]:
    """Run `app` under uvicorn in this event loop (on `port`, when given: a collector can
    stop and come back there); yield its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", **UVICORN_OPTIONS)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start within 10 s")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@dataclass
class Running:
    url: str
    app: Starlette
    settings: Settings
    http: aiohttp.ClientSession

    def auth(self, key: str = API_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        headers = kw.pop("headers", self.auth())
        async with self.http.post(self.url + path, json=body, headers=headers, **kw) as resp:
            data = (
                await resp.json() if resp.content_type == "application/json" else await resp.text()
            )
            return resp.status, data


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test collector; delivery is off unless a test turns it on, so
    ingest tests can look at what the spool holds."""
    base = Settings(api_keys=(API_KEY,), spool_url=f"sqlite:///{tmp_path}/spool.db", forward=False)
    return dataclasses.replace(base, **overrides)


def delivering(tmp_path: Path, yespo_url: str, **overrides: Any) -> Settings:
    """Test settings that deliver to a Yespo stand-in at `yespo_url`: no rate ceiling,
    short timeouts, retries within a second."""
    values: dict[str, Any] = {
        "forward": True,
        "yespo_api_url": yespo_url,
        "yespo_api_key": YESPO_KEY,
        "yespo_max_rps": 0,
        "yespo_timeout_s": 2,
        "retry_base_ms": 50,
        "retry_max_delay_s": 1,
    }
    return make_settings(tmp_path, **{**values, **overrides})


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    app = create_app(settings)
    async with serve(app) as url, aiohttp.ClientSession() as http:
        yield Running(url, app, settings, http)


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Running]:
    async with running(make_settings(tmp_path)) as c:
        yield c


class Process:
    """`python -m collector serve` as a child process, the way a user starts it (or
    `command serve`, from `cwd`; `args`: more of its options)."""

    def __init__(
        self,
        port: int,
        env: dict[str, str],
        log: Path,
        *args: str,
        command: tuple[str, ...] = (sys.executable, "-m", "collector"),
        cwd: Path = ROOT,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [*command, "serve", "--port", str(port), *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    async def wait_ready(self, within_s: float = 15) -> None:
        deadline = time.monotonic() + within_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"collector exited with {self.proc.returncode}")
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError("collector did not become healthy")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that use it flush it first."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port())
    yield server
    server.stop()
