"""The wheel, the image and the command line as a user meets them.

No Docker engine runs on the build machines, so the image is not built here; what can
be checked without one is: a wheel built from what the image copies serves the script and
the demo from anywhere, the HEALTHCHECK command really tells a live collector from a dead
one, and the image runs as a non-root user with the spool on a volume. The wheel holds
the product, `collector`, and not the Yespo stand-in (`standin`).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp

from .conftest import API_KEY, ROOT, Process, free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def healthcheck_argv() -> list[str]:
    match = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])", DOCKERFILE)
    assert match, "Dockerfile has no exec-form HEALTHCHECK"
    argv: list[str] = json.loads(match.group(1))
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(healthcheck_argv(), env=env, capture_output=True, timeout=10)


def image_sources() -> list[str]:
    """What the Dockerfile copies into the image, the build context of its `pip install .`."""
    sources: list[str] = []
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M):
        *names, _dest = line.split()
        sources += names
    return sources


def build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of exactly what the image copies (not the checkout, whose
    stray build/ or untracked files could hide a file the package forgot to declare)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in image_sources():
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "-w", str(dist)], check=True, timeout=120)
    (wheel,) = dist.glob("*.whl")
    return wheel


def install_wheel(wheel: Path, venv: Path) -> None:
    """`wheel` alone in a fresh venv; its dependencies are read from this venv's
    site-packages through a .pth file, so nothing is downloaded. (A directory named in a
    .pth file joins sys.path, but its own .pth files are not run: the checkout's editable
    install stays out.)"""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)],
        check=True,
        timeout=120,
    )
    (site,) = (venv / "lib").glob("python*/site-packages")
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dependencies.pth").write_text("".join(p + "\n" for p in sorted(paths)))


def installed_collector(tmp_path: Path, elsewhere: Path) -> Path:
    """The `collector` command of a wheel installed in a fresh venv under `tmp_path`."""
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        top = {n.split("/")[0] for n in z.namelist() if ".dist-info/" not in n}
    assert top == {"collector"}
    venv = tmp_path / "venv"
    install_wheel(wheel, venv)
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import collector; print(collector.__file__)"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel's, not the checkout's
    return venv / "bin" / "collector"


async def test_an_installed_wheel_serves_the_script_and_the_demo_from_any_directory(
    tmp_path: Path, processes: list[Process]
) -> None:
    elsewhere = tmp_path / "elsewhere"  # no static/, no checkout
    elsewhere.mkdir()
    command = await asyncio.to_thread(installed_collector, tmp_path, elsewhere)
    log = tmp_path / "collector.log"
    env = {"COLLECTOR_API_KEYS": API_KEY, "COLLECTOR_DEMO": "true",
           "COLLECTOR_SPOOL_URL": f"sqlite:///{tmp_path}/s.db"}  # fmt: skip
    proc = Process(free_port(), env, log, command=(str(command),), cwd=elsewhere)
    processes.append(proc)
    await proc.wait_ready()
    async with aiohttp.ClientSession() as http:
        async with http.get(proc.url + "/lib/y.js") as resp:
            assert resp.status == 200
            assert await resp.read() == (ROOT / "collector" / "static" / "y.js").read_bytes()
        async with http.get(proc.url + "/demo/") as resp:
            assert resp.status == 200
            assert '"yc","/lib/y.js")' in await resp.text()  # the demo loads the script
    banner = log.read_text()
    assert "script at /lib/y.js" in banner and "demo shop at /demo/" in banner
    assert "missing" not in banner


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
