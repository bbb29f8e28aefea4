"""One contract, every spool backend: durability, dedup, bounds, per-key order, leases,
dead letters."""

from __future__ import annotations

import asyncio
import os

import pytest

from collector.errors import DeliveryClaimed, SpoolFull
from collector.spool import Spool

from .conftest import T0, WINDOW_MS, Entry, SpoolFactory


async def test_append_stores_in_order(spool: Spool) -> None:
    assert await spool.append([Entry("m1"), Entry("m2", key="k2")], T0) == [True, True]
    records = await spool.pending(10)
    assert [r.message_id for r in records] == ["m1", "m2"]
    assert records[0].received_at == T0
    assert records[0].seq < records[1].seq
    assert (await spool.stats()).depth == 2


async def test_repeat_message_id_is_acknowledged_and_not_stored_twice(spool: Spool) -> None:
    assert await spool.append([Entry("m1")], T0) == [True]
    assert await spool.append([Entry("m1"), Entry("m2")], T0 + 1000) == [False, True]
    assert [r.message_id for r in await spool.pending(10)] == ["m1", "m2"]


async def test_repeat_inside_one_append_is_stored_once(spool: Spool) -> None:
    assert await spool.append([Entry("m1"), Entry("m1")], T0) == [True, False]
    assert len(await spool.pending(10)) == 1


async def test_repeat_is_detected_after_delivery(spool: Spool) -> None:
    await spool.append([Entry("m1")], T0)
    [rec] = await spool.lease(10, 30_000, T0)
    await spool.ack([rec.seq])
    assert await spool.append([Entry("m1")], T0 + 5000) == [False]
    assert await spool.pending(10) == []


async def test_message_id_is_accepted_again_after_the_window(spool: Spool) -> None:
    await spool.append([Entry("m1")], T0)
    assert await spool.append([Entry("m1")], T0 + WINDOW_MS + 1) == [True]


async def test_generated_ids_are_not_deduplicated(spool: Spool) -> None:
    # Ids the collector made up are unique by construction: no dedup lookup for them.
    stored = await spool.append([Entry("g1", client_id=False), Entry("g1", client_id=False)], T0)
    assert stored == [True, True]


async def test_full_spool_refuses_whole_append_and_stores_nothing(make_spool: SpoolFactory) -> None:
    s = make_spool(max_events=3)
    await s.open()
    try:
        await s.append([Entry("m1"), Entry("m2")], T0)
        with pytest.raises(SpoolFull):
            await s.append([Entry("m3"), Entry("m4")], T0)
        assert [r.message_id for r in await s.pending(10)] == ["m1", "m2"]
        assert await s.append([Entry("m3")], T0) == [True]
    finally:
        await s.close()


async def test_lease_hands_out_only_the_head_of_each_key(spool: Spool) -> None:
    await spool.append(
        [Entry("a1", key="A"), Entry("a2", key="A"), Entry("b1", key="B"), Entry("a3", key="A")],
        T0,
    )
    first = await spool.lease(10, 30_000, T0)
    assert [r.message_id for r in first] == ["a1", "b1"]
    # While a1 is in flight, nothing more of key A comes out.
    assert await spool.lease(10, 30_000, T0) == []
    await spool.ack([first[0].seq])
    assert [r.message_id for r in await spool.lease(10, 30_000, T0)] == ["a2"]


async def test_lease_of_one_kind_takes_only_its_heads(spool: Spool) -> None:
    await spool.append(
        [
            Entry("o1", key="order:1", kind="order"),
            Entry("e1", key="contact:x"),
            Entry("e2", key="order:2"),  # order 2's event goes before its order
            Entry("o2", key="order:2", kind="order"),
            Entry("o3", key="order:3", kind="order"),
        ],
        T0,
    )
    orders = await spool.lease(10, 30_000, T0, kind="order")
    assert [r.message_id for r in orders] == ["o1", "o3"]
    assert [r.message_id for r in await spool.lease(10, 30_000, T0)] == ["e1", "e2"]


async def test_released_entry_holds_back_its_key_until_retry_time(spool: Spool) -> None:
    await spool.append([Entry("a1", key="A"), Entry("a2", key="A"), Entry("b1", key="B")], T0)
    leased = await spool.lease(10, 30_000, T0)
    a1 = next(r for r in leased if r.message_id == "a1")
    await spool.release([a1.seq], not_before=T0 + 5000)
    assert await spool.lease(10, 30_000, T0 + 1000) == []  # a2 waits behind a1; b1 in flight
    again = await spool.lease(10, 30_000, T0 + 5000)
    assert [(r.message_id, r.attempts) for r in again] == [("a1", 1)]


async def test_expired_lease_is_handed_out_again(spool: Spool) -> None:
    await spool.append([Entry("a1")], T0)
    assert len(await spool.lease(10, 1000, T0)) == 1
    assert await spool.lease(10, 1000, T0 + 500) == []
    assert [r.message_id for r in await spool.lease(10, 1000, T0 + 1001)] == ["a1"]


async def test_dead_letter_keeps_the_entry_aside_and_frees_its_key(spool: Spool) -> None:
    await spool.append([Entry("a1", key="A"), Entry("a2", key="A")], T0)
    [a1] = await spool.lease(10, 30_000, T0)
    await spool.dead_letter([a1.seq], "rejected", 400, "bad param", T0 + 10)
    assert [r.message_id for r in await spool.lease(10, 30_000, T0)] == ["a2"]
    [dead] = await spool.dead_letters(10)
    assert (dead.record.message_id, dead.reason, dead.status, dead.detail) == (
        "a1", "rejected", 400, "bad param",
    )  # fmt: skip
    stats = await spool.stats()
    assert (stats.depth, stats.dead) == (1, 1)


async def test_stats_report_oldest_and_in_flight(spool: Spool) -> None:
    assert (await spool.stats()).oldest_received_at is None
    await spool.append([Entry("a1", key="A")], T0)
    await spool.append([Entry("b1", key="B")], T0 + 10)
    await spool.lease(1, 10**12, T0)
    stats = await spool.stats()
    assert (stats.depth, stats.in_flight, stats.oldest_received_at) == (2, 1, T0)


# Bodies and keys that could trip up how rows reach the spool in bulk: lengths from 1 byte
# to 20 KB, multi-byte UTF-8, quotes, backslashes, a NUL, a JSON-looking key.
ODD_BODIES = [
    b"{}",
    '{"v":"\u00e9\u20ac\U0001f600 \\" \\\\ \u2028"}'.encode(),
    b"\x00 not json at all \xff",
    b"x",
    b'{"big":"' + b"a" * 20_000 + b'"}',
]


def odd_entries(request: int) -> list[Entry]:
    return [
        Entry(
            f"r{request}-{i}",
            key=f'contact:"{request}"\\{i % 2}',
            client_id=i % 3 != 0,
            kind="order" if i % 4 == 0 else "event",
            event_type=f"type{i}",
            event_time=None if i % 2 else T0 - i,
            body=body + str(request).encode(),
        )
        for i, body in enumerate(ODD_BODIES)
    ]


def as_stored(entry: Entry, received_at: int) -> tuple[object, ...]:
    return (entry.message_id, entry.kind, entry.key, entry.event_type, received_at,
            entry.event_time, entry.body)  # fmt: skip


async def test_concurrent_appends_keep_every_field_byte_for_byte_in_order(spool: Spool) -> None:
    requests = [odd_entries(r) for r in range(20)]
    results = await asyncio.gather(
        *(spool.append(entries, T0 + r) for r, entries in enumerate(requests))
    )
    assert results == [[True] * len(ODD_BODIES)] * 20
    records = await spool.pending(1000)
    stored = [(r.message_id, r.kind, r.key, r.event_type, r.received_at, r.event_time,
               bytes(r.body)) for r in records]  # fmt: skip
    assert stored == [as_stored(e, T0 + r) for r, entries in enumerate(requests) for e in entries]
    assert [r.seq for r in records] == sorted(r.seq for r in records)


async def test_repeats_in_a_busy_group_leave_the_others_exact(spool: Spool) -> None:
    await spool.append(odd_entries(0), T0)
    again = odd_entries(0)  # its client ids repeat; its generated ids do not count as repeats
    twice = odd_entries(1)
    results = await asyncio.gather(
        spool.append(odd_entries(2), T0 + 1),
        spool.append(again, T0 + 2),
        spool.append(twice + twice, T0 + 3),
    )
    fresh = [not e.client_id for e in again]
    assert results == [[True] * 5, fresh, [True] * 5 + fresh]
    records = await spool.pending(1000)
    stored = [(r.message_id, r.kind, r.key, r.event_type, r.received_at, r.event_time,
               bytes(r.body)) for r in records]  # fmt: skip
    expected = [
        *(as_stored(e, T0) for e in odd_entries(0)),
        *(as_stored(e, T0 + 1) for e in odd_entries(2)),
        *(as_stored(e, T0 + 2) for e in again if not e.client_id),
        *(as_stored(e, T0 + 3) for e in twice),
        *(as_stored(e, T0 + 3) for e in twice if not e.client_id),
    ]
    assert stored == expected


async def test_replay_requeues_dead_letters_at_the_end_and_purge_drops_them(
    spool: Spool,
) -> None:
    await spool.append([Entry("a1", key="A"), Entry("b1", key="B"), Entry("c1", key="C")], T0)
    leased = {r.message_id: r for r in await spool.lease(10, 30_000, T0)}
    await spool.dead_letter([leased["a1"].seq], "rejected", 400, "bad", T0)
    await spool.dead_letter([leased["b1"].seq], "expired", 503, "gone", T0)
    await spool.ack([leased["c1"].seq])
    await spool.append([Entry("a2", key="A")], T0)

    assert await spool.replay(reason="rejected") == 1
    waiting = await spool.pending(10)
    assert [r.message_id for r in waiting] == ["a2", "a1"]
    assert waiting[1].attempts == 0 and waiting[1].seq > waiting[0].seq
    [left] = await spool.dead_letters(10)
    assert left.record.message_id == "b1"
    assert await spool.purge(seqs=[left.record.seq]) == 1
    assert await spool.dead_letters(10) == []
    assert (await spool.stats()).depth == 2


async def test_reset_leases_frees_entries_a_dead_forwarder_held(spool: Spool) -> None:
    await spool.append([Entry("a1", key="A"), Entry("b1", key="B")], T0)
    assert len(await spool.lease(10, 60_000, T0)) == 2
    assert await spool.lease(10, 60_000, T0 + 1) == []
    assert await spool.reset_leases() == 2
    assert [r.message_id for r in await spool.lease(10, 60_000, T0 + 1)] == ["a1", "b1"]


# An order event is keyed by its order and waits (`after`) for its contact's key.
def order(mid: str, order_id: str = "1", contact: str = "A", kind: str = "event") -> Entry:
    return Entry(mid, key=f"order:{order_id}", kind=kind, after=f"contact:{contact}")


def contact(mid: str, who: str = "A") -> Entry:
    return Entry(mid, key=f"contact:{who}")


async def leased_ids(spool: Spool, now: int = T0, kind: str | None = None) -> list[str]:
    return [r.message_id for r in await spool.lease(10, 30_000, now, kind)]


async def test_order_waits_while_its_contacts_earlier_event_is_pending(spool: Spool) -> None:
    await spool.append([contact("view"), order("created")], T0)
    # Both are heads of their keys; the order still waits for the page view.
    assert await leased_ids(spool) == ["view"]
    assert await leased_ids(spool, kind="order") == []


async def test_order_waits_while_its_contacts_earlier_event_is_leased(spool: Spool) -> None:
    await spool.append([contact("view")], T0)
    [view] = await spool.lease(10, 30_000, T0)
    await spool.append([order("created")], T0)
    assert await leased_ids(spool) == []
    await spool.ack([view.seq])
    assert await leased_ids(spool) == ["created"]


async def test_order_waits_while_its_contacts_earlier_event_waits_for_a_retry(
    spool: Spool,
) -> None:
    await spool.append([contact("view"), contact("cart"), order("created")], T0)
    [view] = await spool.lease(10, 30_000, T0)
    await spool.release([view.seq], not_before=T0 + 5000)
    for _ in range(3):  # walked again and again while the retry is not due
        assert await leased_ids(spool, T0 + 1000) == []
    assert await leased_ids(spool, T0 + 5000) == ["view"]
    [view] = await spool.pending(1)
    await spool.ack([view.seq])
    [cart] = await spool.lease(10, 30_000, T0 + 5000)
    assert cart.message_id == "cart"
    await spool.ack([cart.seq])
    assert await leased_ids(spool, T0 + 5000) == ["created"]


async def test_order_goes_once_its_contacts_earlier_events_are_acked_or_dead(
    spool: Spool,
) -> None:
    await spool.append([contact("view"), contact("cart"), order("created")], T0)
    [view] = await spool.lease(10, 30_000, T0)
    await spool.ack([view.seq])
    [cart] = await spool.lease(10, 30_000, T0)
    await spool.dead_letter([cart.seq], "rejected", 400, "bad", T0)
    assert await leased_ids(spool) == ["created"]


async def test_contacts_later_events_do_not_hold_the_order_back(spool: Spool) -> None:
    await spool.append([contact("view"), order("created"), contact("thanks")], T0)
    [view] = await spool.lease(10, 30_000, T0)
    assert view.message_id == "view"
    await spool.ack([view.seq])
    # "thanks" came after the order: both go now.
    assert await leased_ids(spool) == ["created", "thanks"]


async def test_order_of_add_orders_waits_for_its_contact_too(spool: Spool) -> None:
    await spool.append([contact("view"), order("o1", kind="order")], T0)
    assert await leased_ids(spool, kind="order") == []
    [view] = await spool.lease(10, 30_000, T0)
    await spool.ack([view.seq])
    assert await leased_ids(spool, kind="order") == ["o1"]


async def test_a_waiting_contact_holds_back_only_its_own_orders(spool: Spool) -> None:
    await spool.append(
        [
            contact("a-view", "A"),
            order("a-order", "1", "A"),
            contact("b-view", "B"),
            order("b-order", "2", "B"),
            order("x-order", "3", "X"),  # a contact with no event waiting
            contact("a-cart", "A"),
        ],
        T0,
    )
    first = {r.message_id: r for r in await spool.lease(10, 30_000, T0)}
    # The order of a contact with nothing waiting goes at once.
    assert list(first) == ["a-view", "b-view", "x-order"]
    await spool.release([first["a-view"].seq], not_before=T0 + 10_000)  # A waits for a retry
    await spool.ack([first["b-view"].seq])
    # Contact B's order flows; contact A's waits, and nothing of A goes before the retry.
    assert await leased_ids(spool, T0 + 1) == ["b-order"]
    assert await leased_ids(spool, T0 + 2) == []
    assert await leased_ids(spool, T0 + 10_000) == ["a-view"]


async def test_status_steps_of_one_order_stay_in_order(spool: Spool) -> None:
    await spool.append(
        [contact("view"), order("created"), order("updated"), order("delivered")], T0
    )
    [view] = await spool.lease(10, 30_000, T0)  # the order's steps wait for its contact
    assert view.message_id == "view"
    await spool.ack([view.seq])
    steps = []
    for _ in range(3):
        [step] = await spool.lease(10, 30_000, T0)  # one step of the order at a time
        steps.append(step.message_id)
        await spool.ack([step.seq])
    assert steps == ["created", "updated", "delivered"]


async def test_replayed_order_keeps_waiting_for_its_contact(spool: Spool) -> None:
    await spool.append([order("created")], T0)
    [created] = await spool.lease(10, 30_000, T0)
    await spool.dead_letter([created.seq], "rejected", 400, "bad", T0)
    await spool.append([contact("view")], T0)
    assert await spool.replay() == 1  # to the end of the queue: after the page view now
    assert await leased_ids(spool) == ["view"]
    [replayed] = await spool.pending(10, after_seq=(await spool.pending(1))[0].seq)
    assert replayed.after == "contact:A"


async def test_one_forwarder_claims_delivery_at_a_time(spool: Spool) -> None:
    # `reset_leases` at a forwarder's start clears every lease: a second forwarder would
    # hand out again what the first has in flight.
    await spool.claim_delivery()
    with pytest.raises(DeliveryClaimed, match=rf"\(.*pid {os.getpid()}\) is already delivering"):
        await spool.claim_delivery()
    await spool.release_delivery()
    await spool.claim_delivery()
    await spool.release_delivery()
    await spool.release_delivery()  # releasing what is not claimed does nothing
