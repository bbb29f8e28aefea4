"""The OpenAPI document (/openapi.json) describes every endpoint, and a live collector keeps
to it: schemathesis sends it generated requests, valid and not, and every answer must be
no 5xx, of a documented status, content type, headers and shape."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from collector.app import create_app
from collector.config import Settings

from .conftest import API_KEY, Process, free_port, make_settings

WRITE_KEY = "wk-openapi"
INSPECT_KEY = "inspect-openapi"

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Our validation is finer than a schema can say (Yespo's rules), so generated data the
# schema allows may be refused with a precise 400: what the document promises is the
# shape of every answer, not which valid-looking events Yespo would take.
CHECKS = ["--exclude-checks", "positive_data_acceptance,negative_data_rejection"]
# (which operations, how to authenticate)
RUNS = [
    (["--include-path", "/v1/events"], ["-H", f"Authorization: Bearer {API_KEY}"]),
    (["--include-path-regex", "^/api/"], ["--auth", f"x:{API_KEY}"]),
    (["--include-path-regex", "^/v1/(?!events)"], ["--auth", f"{WRITE_KEY}:"]),
    (["--exclude-path-regex", "^/api/|^/v1/|^/inspect"], []),
    # The inspector's API with its key; not its stream (an answer that does not end), nor
    # the page and login (which no generated key opens).
    (
        ["--include-path-regex", "^/inspect/dead"],
        ["-H", f"Authorization: Bearer {INSPECT_KEY}"],
    ),
]


def test_the_document_names_every_route_of_the_app(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, web_path="/t/x")
    app = create_app(settings)
    document = app.state.openapi
    routes = {r.path for r in app.routes if not r.path.startswith("/demo")}  # type: ignore[attr-defined]
    assert set(document["paths"]) == routes
    assert "/t/x" in document["paths"] and "/t/x.js" in document["paths"]
    assert not any(path.startswith("/inspect") for path in document["paths"])


def test_the_document_names_the_inspectors_routes_when_it_is_on(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, inspect_key=INSPECT_KEY))
    routes = {r.path for r in app.routes if not r.path.startswith("/demo")}  # type: ignore[attr-defined]
    assert set(app.state.openapi["paths"]) == routes
    assert "/inspect/stream" in routes and "/inspect/dead/replay" in routes


@pytest.fixture
async def live(tmp_path: Path, processes: list[Process]) -> str:
    port = free_port()
    env = {
        "COLLECTOR_API_KEYS": API_KEY,
        "COLLECTOR_SPOOL_URL": f"sqlite:///{tmp_path}/spool.db",
        "COLLECTOR_FORWARD": "false",
        "COLLECTOR_SITE_KEYS": "site=self",
        "COLLECTOR_SEGMENT_WRITE_KEYS": WRITE_KEY,
        "COLLECTOR_INSPECT_KEY": INSPECT_KEY,
        "COLLECTOR_LOG_LEVEL": "warning",
    }
    proc = Process(port, env, tmp_path / "collector.log")
    processes.append(proc)
    await proc.wait_ready()
    return proc.url


@pytest.mark.parametrize(
    ("select", "auth"), RUNS, ids=["events", "yespo", "segment", "others", "inspect"]
)
async def test_every_answer_matches_the_document(
    live: str, tmp_path: Path, select: list[str], auth: list[str]
) -> None:
    origin = ["-H", f"Origin: {live}"]  # the browser endpoint's site key is for this host
    command = [
        str(SCHEMATHESIS), "run", f"{live}/openapi.json", *select, *auth, *origin, *CHECKS,
        "--max-examples", "40", "--generation-deterministic",
        "--no-color", "--request-timeout", "10",
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.split("SUMMARY")[-1]
    async with aiohttp.ClientSession() as http, http.get(live + "/healthz") as resp:
        assert resp.status == 200  # still up


def test_the_document_is_the_one_for_these_settings() -> None:
    assert Settings().web_path in create_app(Settings(spool_url="memory://")).state.openapi["paths"]
