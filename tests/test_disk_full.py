"""A full disk under the SQLite spool, on a real 24 MB filesystem (a tmpfs; CI runs as
root): ingest answers 503 + Retry-After, readiness says "not ready" with the reason and
recovers with the space, and every acknowledged event reaches Yespo exactly once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from standin import Faults, StandIn

from .conftest import YESPO_KEY, Running, delivering, running

FILLER_BYTES = 12 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB filesystem of its own, half of it taken by a file the test can delete.

    Not smaller: SQLite's WAL grows to ~4 MB before its checkpoint, and the database file
    must grow by as much to take it in; on a disk too small for both the spool stays full
    however much is freed."""
    assert os.geteuid() == 0, "mounting a tmpfs needs root (as CI runs)"
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
    try:
        (disk / "filler").write_bytes(b"\0" * FILLER_BYTES)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def event(n: int) -> dict[str, Any]:
    return {
        "type": "wishlistAdded",
        "messageId": f"big-{n}",
        "contact": {"email": f"shopper{n % 50}@example.com"},
        "properties": {"note": f"{n}:" + "x" * 10_000},
    }


async def readyz(c: Running) -> tuple[int, Any]:
    async with c.http.get(c.url + "/readyz") as resp:
        return resp.status, await resp.json()


async def test_a_full_disk_refuses_events_and_readiness_says_so_until_space_returns(
    small_disk: Path,
) -> None:
    async with StandIn(api_key=YESPO_KEY) as standin:
        standin.faults = Faults(status=503)  # Yespo is down: the spool fills the disk
        settings = delivering(small_disk, standin.url, spool_url=f"sqlite:///{small_disk}/s.db")
        async with running(settings) as c:
            assert (await readyz(c))[0] == 200
            acknowledged: list[str] = []
            refusal = None
            for start in range(0, 5000, 20):
                batch = [event(n) for n in range(start, start + 20)]
                async with c.http.post(
                    c.url + "/v1/events", json={"batch": batch}, headers=c.auth()
                ) as resp:
                    if resp.status == 503:
                        refusal = (resp.headers.get("Retry-After"), await resp.json())
                        break
                    assert resp.status == 200
                    acknowledged += [e["messageId"] for e in batch]
            assert refusal is not None, "the disk never filled"
            retry_after, body = refusal
            assert retry_after is not None and int(retry_after) > 0
            assert "disk is full" in body["error"]

            status, ready = await readyz(c)
            assert status == 503 and ready["ready"] is False
            assert ready["spool"].startswith("disk full")

            (small_disk / "filler").unlink()  # space comes back
            status, ready = await readyz(c)
            assert (status, ready["ready"]) == (200, True), ready

            more = [event(n) for n in range(9000, 9005)]
            async with c.http.post(
                c.url + "/v1/events", json={"batch": more}, headers=c.auth()
            ) as resp:
                assert resp.status == 200
            acknowledged += [e["messageId"] for e in more]

            standin.faults = Faults()
            await standin.wait_for_events(len(acknowledged), within_s=30)
            arrived = Counter(
                p["value"].split(":")[0]
                for r in standin.events
                for p in orjson.loads(r.raw)["params"]
                if p["name"] == "note"
            )
            assert sorted(arrived) == sorted(m.removeprefix("big-") for m in acknowledged)
            assert set(arrived.values()) == {1}

        with sqlite3.connect(small_disk / "s.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
