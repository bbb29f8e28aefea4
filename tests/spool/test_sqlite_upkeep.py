"""The SQLite spool over time and across processes: counts that other processes change,
expired messageIds forgotten at any rate, and a stuck key that must not stop the others."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from collector.errors import SpoolFull
from collector.spool.sqlite import SqliteSpool
from collector.spool.sqlite import leases as sqlite_leases
from collector.spool.sqlite import spool as sqlite_module

from .conftest import T0, Entry

WINDOW_MS = 60_000


def entries(prefix: str, n: int, key: str | None = None) -> list[Entry]:
    return [Entry(f"{prefix}{i}", key=key or f"contact:{prefix}{i}") for i in range(n)]


@asynccontextmanager
async def opened(
    path: Path, max_events: int = 10_000, window_ms: int = WINDOW_MS
) -> AsyncIterator[SqliteSpool]:
    """A spool on `path`, as one process has it."""
    spool = SqliteSpool(str(path), max_events=max_events, dedup_window_ms=window_ms)
    await spool.open()
    try:
        yield spool
    finally:
        await spool.close()


async def test_a_bound_freed_by_another_process_takes_events_again(tmp_path: Path) -> None:
    # `collector serve --no-forward` beside `collector forward`: the forwarder's process
    # delivers (acks) what the serving process appended, in the same file.
    path = tmp_path / "spool.db"
    async with opened(path, max_events=5) as serve, opened(path, max_events=5) as forward:
        assert await serve.append(entries("a", 5), T0) == [True] * 5
        with pytest.raises(SpoolFull):
            await serve.append(entries("b", 1), T0)
        leased = await forward.lease(10, 60_000, T0)
        await forward.ack([r.seq for r in leased])
        assert (await forward.stats()).depth == 0
        # The next append may fall within a second of the refused one, which already had
        # the file counted: a later one must get in.
        await asyncio.sleep(sqlite_module._RECOUNT_WHEN_FULL_S)
        assert await serve.append(entries("c", 5), T0) == [True] * 5
        with pytest.raises(SpoolFull):
            await serve.append(entries("d", 1), T0)


async def test_entries_replayed_by_another_process_count_against_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `collector spool replay` moves dead letters back while `collector serve` runs.
    monkeypatch.setattr(sqlite_module, "_RECOUNT_EVERY_S", 0.05)
    path = tmp_path / "spool.db"
    async with opened(path, max_events=5) as serve:
        await serve.append(entries("a", 3), T0)
        leased = await serve.lease(10, 60_000, T0)
        await serve.dead_letter([r.seq for r in leased], "rejected", 400, "bad", T0)
        async with opened(path, max_events=5) as cli:
            assert await cli.replay() == 3
        await asyncio.sleep(0.3)  # the writer counts again, even with nothing else to do
        with pytest.raises(SpoolFull):
            await serve.append(entries("b", 3), T0)
        assert await serve.append(entries("c", 2), T0) == [True, True]


def claims(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT count(*) FROM seen").fetchone()[0]
        return count


async def test_expired_message_ids_are_forgotten_faster_than_they_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One prune pass takes a bounded number of claims; a backlog must not wait a whole
    # period per pass, and an idle writer must still prune.
    monkeypatch.setattr(sqlite_module, "_PRUNE_EVERY_S", 0.5)
    monkeypatch.setattr(sqlite_module, "_PRUNE_AGAIN_S", 0.01)
    monkeypatch.setattr(sqlite_module, "_PRUNE_ROWS", 100)
    path = tmp_path / "spool.db"
    async with opened(path, window_ms=1) as spool:
        for i in range(10):
            await spool.append(entries(f"m{i}-", 200), T0)
        assert claims(path) == 2000
        await asyncio.sleep(1.2)  # nothing else asked of the writer meanwhile
        assert claims(path) == 0


async def test_a_key_stuck_in_retries_with_a_long_queue_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lease walks a bounded number of waiting entries; here one key's entries fill more
    # than that bound, and its first one waits five minutes for a retry.
    monkeypatch.setattr(sqlite_leases, "_LEASE_SCAN", 100)
    async with opened(tmp_path / "spool.db") as spool:
        await spool.append(entries("a", 250, key="contact:stuck"), T0)
        await spool.append(entries("b", 1, key="contact:other"), T0)
        [head] = await spool.lease(10, 60_000, T0)
        await spool.release([head.seq], T0 + 300_000)
        handed: list[str] = []
        for _ in range(5):  # the forwarder asks again after each empty lease
            handed += [r.key for r in await spool.lease(10, 60_000, T0 + 1000)]
        assert handed == ["contact:other"]
        # The prefix is forgotten once the stuck key's retry is due: its head goes again.
        [again] = await spool.lease(10, 60_000, T0 + 300_000)
        assert (again.seq, again.attempts) == (head.seq, 1)
        # Once its head is a dead letter, the stuck key's next entry goes.
        await spool.dead_letter([again.seq], "rejected", 400, "bad", T0 + 300_000)
        [following] = await spool.lease(10, 60_000, T0 + 300_000)
        assert (following.key, following.message_id) == ("contact:stuck", "a1")


async def test_orders_behind_a_contact_stuck_in_retries_do_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As above, with the stuck contact's orders among its entries: each waits for the
    # contact, so the walk must skip them as it skips the contact's own entries.
    monkeypatch.setattr(sqlite_leases, "_LEASE_SCAN", 100)
    async with opened(tmp_path / "spool.db") as spool:
        stuck = [
            Entry(f"o{i}", key=f"order:{i}", after="contact:stuck")
            if i % 10 == 9
            else Entry(f"a{i}", key="contact:stuck")
            for i in range(250)
        ]
        await spool.append(stuck, T0)
        await spool.append(entries("b", 1, key="contact:other"), T0)
        [head] = await spool.lease(10, 60_000, T0)
        await spool.release([head.seq], T0 + 300_000)
        handed: list[str] = []
        for _ in range(5):
            handed += [r.key for r in await spool.lease(10, 60_000, T0 + 1000)]
        assert handed == ["contact:other"]
