"""The image and the command line as a user meets them.

No Docker engine runs on the build machines, so the image is not built here; what can
be checked without one is: the HEALTHCHECK command really tells a live collector from a
dead one, and the image runs as a non-root user with the spool on a volume. The wheel is
built: it holds the product, `collector`, and not the Yespo stand-in (`standin`).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import API_KEY, ROOT, Process, free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def healthcheck_argv() -> list[str]:
    match = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])", DOCKERFILE)
    assert match, "Dockerfile has no exec-form HEALTHCHECK"
    argv: list[str] = json.loads(match.group(1))
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(healthcheck_argv(), env=env, capture_output=True, timeout=10)


def test_image_runs_unprivileged_with_spool_on_a_volume() -> None:
    assert re.search(r"^USER (?!root)\S+", DOCKERFILE, re.M)
    assert 'VOLUME ["/data"]' in DOCKERFILE
    assert "COLLECTOR_SPOOL_URL=sqlite:////data/spool.db" in DOCKERFILE
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE, re.M)


async def test_healthcheck_command_passes_on_a_live_collector_only(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    env = {"COLLECTOR_PORT": str(port)}
    dead = await asyncio.to_thread(run_healthcheck, env)
    assert dead.returncode != 0

    proc = Process(
        port,
        {"COLLECTOR_API_KEYS": API_KEY, "COLLECTOR_SPOOL_URL": f"sqlite:///{tmp_path}/s.db"},
        tmp_path / "collector.log",
    )
    processes.append(proc)
    await proc.wait_ready()
    alive = await asyncio.to_thread(run_healthcheck, env)
    assert alive.returncode == 0, alive.stderr


def test_cli_reports_a_bad_setting_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collector", "serve"],
        env={"COLLECTOR_SPOOL_SYNC": "sometimes", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "COLLECTOR_SPOOL_SYNC" in result.stderr


def test_wheel_holds_the_collector_and_not_the_stand_in(tmp_path: Path) -> None:
    # Built from a copy: a build in the checkout would leave build/ and *.egg-info there.
    src = tmp_path / "src"
    junk = (".*", "__pycache__", "build", "dist", "*.egg-info", "data", "*.db", "*.db-*")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*junk))
    assert (src / "standin" / "__init__.py").is_file()  # there to be left out
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "out", src],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "out").glob("yespo_collector-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"collector/__init__.py", "collector/cli.py", "collector/spool/sqlite/spool.py"} <= set(
        names
    )
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"collector"}
    assert [name for name in names if "standin" in name] == []
