"""The spool's anonymous-visitor store, on every backend: hold, identify, expire, lock."""

from __future__ import annotations

import asyncio

import pytest

from collector.errors import SpoolFull
from collector.spool import Spool

from .conftest import T0, Entry, SpoolFactory

V1 = "visitor:v1"


V2 = "visitor:v2"


CONTACT = b'{"email":"a@example.com"}'


def held(message_id: str, visitor: str = V1, event_time: int | None = None) -> Entry:
    return Entry(message_id, key=visitor, kind="held", event_time=event_time, body=b"{}")


async def test_held_entries_wait_apart_and_are_never_leased(spool: Spool) -> None:
    stored, dropped = await spool.hold([held("a1"), held("a2"), held("b1", V2)], T0, 10)
    assert (stored, dropped) == ([True, True, True], 0)
    assert await spool.lease(10, 60_000, T0) == []
    assert await spool.pending(10) == []
    assert [r.message_id for r in await spool.held(V1)] == ["a1", "a2"]
    stats = await spool.stats()
    assert (stats.depth, stats.held) == (0, 3)


async def test_held_entries_share_the_dedup_window(spool: Spool) -> None:
    await spool.hold([held("a1")], T0, 10)
    assert await spool.hold([held("a1"), held("a2")], T0 + 1, 10) == ([False, True], 0)
    # ...with the queue too: a held messageId sent again with a contact is a repeat.
    assert await spool.append([Entry("a1")], T0 + 2) == [False]


async def test_identify_moves_held_entries_into_the_queue_in_order(spool: Spool) -> None:
    await spool.hold([held("a1", event_time=T0 - 5), held("a2"), held("b1", V2)], T0, 10)
    records = await spool.held(V1)
    became = [Entry(r.message_id, key="contact:a@example.com", event_time=r.event_time)
              for r in records]  # fmt: skip
    await spool.identify(V1, CONTACT, T0 + 10, [r.seq for r in records], became)
    assert await spool.held(V1) == []
    queued = await spool.pending(10)
    assert [r.message_id for r in queued] == ["a1", "a2"]
    assert queued[0].event_time == T0 - 5
    assert await spool.contact_of(V1, T0) == CONTACT
    assert await spool.contact_of(V2, T0) is None
    stats = await spool.stats()
    assert (stats.depth, stats.held) == (2, 1)
    # Leased like any other entry.
    assert [r.message_id for r in await spool.lease(10, 60_000, T0 + 20)] == ["a1"]


async def test_a_visitor_keeps_only_its_newest_entries(spool: Spool) -> None:
    await spool.hold([held(f"a{i}") for i in range(4)], T0, 3)
    assert await spool.hold([held("a4"), held("b1", V2)], T0 + 1, 3) == ([True, True], 1)
    assert [r.message_id for r in await spool.held(V1)] == ["a2", "a3", "a4"]
    assert (await spool.stats()).held == 4


async def test_expire_held_by_age_and_forget_old_visitors(spool: Spool) -> None:
    await spool.hold([held("a1"), held("b1", V2)], T0, 10)
    await spool.hold([held("a2")], T0 + 1000, 10)
    await spool.identify("visitor:old", CONTACT, T0)
    await spool.identify("visitor:new", CONTACT, T0 + 1000)
    assert await spool.expire_held(T0 + 500, T0 + 500) == 2
    assert [r.message_id for r in await spool.held(V1)] == ["a2"]
    assert await spool.held(V2) == []
    assert (await spool.stats()).held == 1
    assert await spool.contact_of("visitor:old", 0) is None
    assert await spool.contact_of("visitor:new", 0) == CONTACT
    assert await spool.contact_of("visitor:new", T0 + 2000) is None  # identified too long ago


async def test_held_entries_are_bounded_in_all_and_the_oldest_make_room(
    make_spool: SpoolFactory,
) -> None:
    # A site key is public: a flood of made-up visitors must push out unidentified events,
    # not shut every real visitor out with 503s until they age out.
    s = make_spool(max_events=3)
    await s.open()
    try:
        await s.hold([held("a1"), held("a2")], T0, 10)
        stored, dropped = await s.hold([held("b1", V2), held("b2", V2)], T0, 10)
        assert (stored, dropped) == ([True, True], 1)
        assert [r.message_id for r in await s.held(V1)] == ["a2"]
        assert [r.message_id for r in await s.held(V2)] == ["b1", "b2"]
        assert (await s.stats()).held == 3
        # the queue's bound is another matter: still refused when full
        await s.append([Entry("e1"), Entry("e2"), Entry("e3")], T0)
        with pytest.raises(SpoolFull):
            await s.append([Entry("e4")], T0)
    finally:
        await s.close()


async def test_remembered_visitors_are_bounded_and_the_oldest_forgotten(
    make_spool: SpoolFactory,
) -> None:
    # Anyone can identify made-up visitors through a public site key, by the thousand.
    s = make_spool(max_events=2)
    await s.open()
    try:
        for n in range(4):
            await s.identify(f"visitor:{n}", CONTACT, T0 + n)
        await s.expire_held(0, 0)  # nothing is old enough by age
        remembered = [v for v in range(4) if await s.contact_of(f"visitor:{v}", 0)]
        assert remembered == [2, 3]
    finally:
        await s.close()


async def test_identifies_at_once_keep_to_the_bound_together(make_spool: SpoolFactory) -> None:
    s = make_spool(max_events=300)  # room for all 200 held entries
    await s.open()
    try:
        visitors = [f"visitor:{n}" for n in range(20)]
        for v in visitors:
            await s.hold([held(f"{v}-{i}", v) for i in range(10)], T0, 10)

        async def identify(v: str) -> bool:
            records = await s.held(v)
            entries = [Entry(r.message_id, key=f"contact:{v}") for r in records]
            try:
                await s.identify(v, CONTACT, T0, [r.seq for r in records], entries, bound=80)
            except SpoolFull:
                return False
            return True

        done = await asyncio.gather(*(identify(v) for v in visitors))
        assert sum(done) == 8  # 8 x 10 entries fill the share of 80; the rest stay held
        assert (await s.stats()).depth == 80
    finally:
        await s.close()


async def test_one_request_of_a_visitor_at_a_time_and_other_visitors_go_on(spool: Spool) -> None:
    order: list[str] = []
    first_in = asyncio.Event()
    let_go = asyncio.Event()

    async def first() -> None:
        async with spool.visitor_lock(V1):
            order.append("first in")
            first_in.set()
            await let_go.wait()
            order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with spool.visitor_lock(V1):
            order.append("second in")

    other_in = asyncio.Event()

    async def other_visitor() -> None:
        await first_in.wait()
        async with spool.visitor_lock(V2):
            order.append("other visitor")
            other_in.set()

    tasks = [asyncio.create_task(f()) for f in (first, second, other_visitor)]
    await first_in.wait()
    # Until V2's lock is taken: a lock shared by several collectors (Redis) costs a round
    # trip, more than a few turns of the event loop.
    await other_in.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == ["first in", "other visitor"]  # V1's second request waits, V2 does not
    let_go.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "other visitor", "first out", "second in"]


async def test_identify_releases_held_entries_of_the_other_names_of_a_person(
    spool: Spool,
) -> None:
    # One person, two names (Segment's anonymousId and userId): one identify releases what
    # was held under either, in the order it came, and the rest stays held.
    await spool.hold([held("a1"), held("b1", V2), held("a2"), held("b2", V2)], T0, 10)
    records = sorted([*await spool.held(V1), *await spool.held(V2)], key=lambda r: r.seq)
    release = [r for r in records if r.message_id != "b2"]
    became = [Entry(r.message_id) for r in release]
    await spool.identify(V1, CONTACT, T0 + 1, [r.seq for r in release], became)
    assert [r.message_id for r in await spool.pending(10)] == ["a1", "b1", "a2"]
    assert await spool.held(V1) == []
    assert [r.message_id for r in await spool.held(V2)] == ["b2"]
    assert (await spool.stats()).held == 1


async def test_many_visitors_contacts_are_read_at_once(spool: Spool) -> None:
    await spool.identify(V1, CONTACT, T0)
    await spool.identify(V2, b'{"email":"b@example.com"}', T0 + 10)
    found = await spool.contacts_of([V1, V2, "visitor:nobody", V1], T0)
    assert found == {V1: CONTACT, V2: b'{"email":"b@example.com"}'}
    assert await spool.contacts_of([V1, V2], T0 + 5) == {V2: b'{"email":"b@example.com"}'}
    assert await spool.contacts_of([], T0) == {}
