"""What only the SQLite spool has: a file that outlives the process, a writer thread,
group commits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from collector.errors import DeliveryClaimed, SpoolError, SpoolFull
from collector.spool.sqlite import SqliteSpool
from collector.spool.sqlite import spool as sqlite_module
from collector.spool.sqlite.jobs import STOP as _STOP

from .conftest import T0, WINDOW_MS, Entry
from .test_visitors import CONTACT, V1, V2, held


async def test_sqlite_keeps_events_and_dedup_across_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    s = SqliteSpool(path, max_events=100, dedup_window_ms=WINDOW_MS)
    await s.open()
    await s.append([Entry("m1"), Entry("m2", key="B")], T0)
    await s.close()

    s = SqliteSpool(path, max_events=100, dedup_window_ms=WINDOW_MS)
    await s.open()
    try:
        assert [r.message_id for r in await s.pending(10)] == ["m1", "m2"]
        assert await s.append([Entry("m1"), Entry("m3")], T0 + 1) == [False, True]
        assert (await s.stats()).depth == 3
    finally:
        await s.close()


async def test_sqlite_bound_counts_events_already_on_disk(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    s = SqliteSpool(path, max_events=2, dedup_window_ms=WINDOW_MS)
    await s.open()
    await s.append([Entry("m1"), Entry("m2")], T0)
    await s.close()
    s = SqliteSpool(path, max_events=2, dedup_window_ms=WINDOW_MS)
    await s.open()
    try:
        with pytest.raises(SpoolFull):
            await s.append([Entry("m3")], T0)
    finally:
        await s.close()


async def test_sqlite_concurrent_appends_share_commits(tmp_path: Path) -> None:
    s = SqliteSpool(str(tmp_path / "spool.db"), max_events=10_000, dedup_window_ms=WINDOW_MS)
    await s.open()
    try:
        results = await asyncio.gather(
            *(s.append([Entry(f"m{i}", key=f"k{i}")], T0) for i in range(300))
        )
        assert all(r == [True] for r in results)
        assert len(await s.pending(1000)) == 300
        # Requests that arrive while a commit runs ride on the next one.
        assert s.commits < 300 / 3, s.commits
    finally:
        await s.close()


async def test_sqlite_close_commits_what_was_queued(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    s = SqliteSpool(path, max_events=1000, dedup_window_ms=WINDOW_MS)
    await s.open()
    tasks = [asyncio.create_task(s.append([Entry(f"m{i}")], T0)) for i in range(50)]
    await asyncio.sleep(0)
    await s.close()
    assert all(t.result() == [True] for t in tasks)
    s = SqliteSpool(path, max_events=1000, dedup_window_ms=WINDOW_MS)
    await s.open()
    try:
        assert (await s.stats()).depth == 50
    finally:
        await s.close()


async def test_sqlite_refuses_work_once_its_writer_is_gone(tmp_path: Path) -> None:
    """Nothing may wait forever on a writer thread that is not there to answer."""
    s = SqliteSpool(str(tmp_path / "spool.db"), max_events=1000, dedup_window_ms=WINDOW_MS)
    await s.open()
    try:
        s._jobs.put(_STOP)  # the writer ends, and close() is not what ended it
        writer = s._writer
        assert writer is not None
        await asyncio.to_thread(writer.join, 5)
        assert not writer.is_alive()
        with pytest.raises(SpoolError, match="writer is not running"):
            await asyncio.wait_for(s.append([Entry("m1")], T0), 5)
        with pytest.raises(SpoolError, match="writer is not running"):
            await asyncio.wait_for(s.stats(), 5)
        assert s._queued == 0
    finally:
        s._closed = True


async def test_sqlite_group_commit_stops_at_its_byte_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that fell behind takes the queue in bounded transactions, in order."""
    monkeypatch.setattr(sqlite_module, "_GROUP_BYTES", 1000)
    s = SqliteSpool(str(tmp_path / "spool.db"), max_events=1000, dedup_window_ms=WINDOW_MS)
    await s.open()
    try:
        body = b"x" * 400
        results = await asyncio.gather(
            *(s.append([Entry(f"m{i}", body=body)], T0) for i in range(20))
        )
        assert results == [[True]] * 20
        assert [r.message_id for r in await s.pending(100)] == [f"m{i}" for i in range(20)]
        # At most three 400-byte bodies reach 1,000 bytes: 20 requests take 7 commits or more.
        assert s.commits >= 7, s.commits
    finally:
        await s.close()


async def test_held_entries_and_visitors_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    first = SqliteSpool(path, max_events=100, dedup_window_ms=60_000)
    await first.open()
    await first.hold([held("a1"), held("b1", V2)], T0, 10)
    await first.identify(V2, CONTACT, T0, [r.seq for r in await first.held(V2)], [Entry("b1")])
    await first.close()

    second = SqliteSpool(path, max_events=100, dedup_window_ms=60_000)
    await second.open()
    try:
        assert [r.message_id for r in await second.held(V1)] == ["a1"]
        assert await second.contact_of(V2, T0) == CONTACT
        assert [r.message_id for r in await second.pending(10)] == ["b1"]
        assert (await second.stats()).held == 1
        assert await second.hold([held("a1")], T0 + 1, 10) == ([False], 0)
    finally:
        await second.close()


# The two tables of a spool file as the collector wrote them before entries had `after`.
OLD_TABLES = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL, kind TEXT NOT NULL,
    key TEXT NOT NULL, event_type TEXT NOT NULL, received_at INTEGER NOT NULL,
    event_time INTEGER, body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    not_before INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE dead (
    seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    event_type TEXT NOT NULL, received_at INTEGER NOT NULL, event_time INTEGER,
    body BLOB NOT NULL, attempts INTEGER NOT NULL, reason TEXT NOT NULL, status INTEGER,
    detail TEXT NOT NULL, dead_at INTEGER NOT NULL
);
INSERT INTO events (message_id, kind, key, event_type, received_at, body)
    VALUES ('old-view', 'event', 'contact:A', 'pageViewed', 1, x'7b7d');
INSERT INTO dead VALUES (7, 'old-dead', 'event', 'contact:B', 'pageViewed', 1, NULL, x'7b7d',
    3, 'rejected', 400, 'bad', 2);
"""


async def test_a_spool_file_from_before_order_waits_opens_and_keeps_its_entries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(OLD_TABLES)
    s = SqliteSpool(str(path), max_events=100, dedup_window_ms=WINDOW_MS)
    await s.open()
    try:
        [dead] = await s.dead_letters(10)
        assert (dead.record.message_id, dead.record.after, dead.reason) == (
            "old-dead", None, "rejected",
        )  # fmt: skip
        await s.append([Entry("o1", key="order:1", kind="order", after="contact:A")], T0)
        assert await s.replay() == 1
        assert [(r.message_id, r.after) for r in await s.pending(10)] == [
            ("old-view", None), ("o1", "contact:A"), ("old-dead", None),
        ]  # fmt: skip
        # The order waits for the page view the old collector accepted before it.
        assert [r.message_id for r in await s.lease(10, 30_000, T0)] == ["old-view", "old-dead"]
    finally:
        await s.close()
    # Opened again (now with the column), nothing changes.
    s = SqliteSpool(str(path), max_events=100, dedup_window_ms=WINDOW_MS)
    await s.open()
    try:
        assert len(await s.pending(10)) == 3
    finally:
        await s.close()


async def test_delivery_claim_reaches_every_spool_object_of_the_file_until_close(
    tmp_path: Path,
) -> None:
    # The lock is on the file (flock), not on the object: a second process, or a second
    # spool object of this one, cannot deliver from it; one that only appends can.
    path = str(tmp_path / "spool.db")
    first = SqliteSpool(path, max_events=100, dedup_window_ms=WINDOW_MS)
    second = SqliteSpool(path, max_events=100, dedup_window_ms=WINDOW_MS)
    await first.open()
    await second.open()
    try:
        await first.claim_delivery()
        with pytest.raises(DeliveryClaimed) as refused:
            await second.claim_delivery()
        assert refused.value.holder == f"pid {os.getpid()}"
        assert refused.value.spool == path
        assert await second.append([Entry("m1")], T0) == [True]
        await first.close()  # closing ends the claim
        await second.claim_delivery()
    finally:
        await first.close()
        await second.close()
    assert (tmp_path / "spool.db.lock").read_bytes() == b""  # no name left that holds nothing
