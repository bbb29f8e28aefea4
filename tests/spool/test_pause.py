"""The 401 pause that collectors sharing a spool share, on every backend: a backend that is
one process's (memory, SQLite) says so (None) and leases as ever; a shared one (Redis)
pauses every spool object on the storage, hands entries only to the one with the turn to
probe, and resumes them all at once."""

from __future__ import annotations

from collector.spool import SharedPause, Spool

from .conftest import T0, Entry, SpoolFactory

REASON = "Yespo answered HTTP 401: the API key is wrong or disabled"
TURN_MS = 60_000


async def two(make_spool: SpoolFactory) -> tuple[Spool, Spool]:
    a, b = make_spool(), make_spool()
    await a.open()
    await b.open()
    return a, b


async def test_a_pause_stops_every_spool_but_the_prober_and_a_resume_ends_it(
    make_spool: SpoolFactory,
) -> None:
    a, b = await two(make_spool)
    try:
        await a.append([Entry("m1", key="k1"), Entry("m2", key="k2")], T0)
        paused = await a.pause_delivery(REASON, T0, TURN_MS)
        if paused is None:  # one process's storage: its forwarder pauses on its own
            assert await b.delivery_pause(TURN_MS) is None
            assert await a.delivery_pause(TURN_MS) is None
            assert [r.message_id for r in await a.lease(1, 1000, T0)] == ["m1"]
            await a.resume_delivery()
            return
        assert paused == SharedPause(REASON, T0, probing=True)
        assert await b.delivery_pause() == SharedPause(REASON, T0, probing=False)
        assert await b.lease(10, 1000, T0) == []  # b has not the turn: nothing for it
        assert [r.message_id for r in await a.lease(1, 1000, T0)] == ["m1"]  # a's probe

        await a.resume_delivery()
        assert await b.delivery_pause() == SharedPause(None, 0, probing=False)
        assert [r.message_id for r in await b.lease(10, 1000, T0)] == ["m2"]
    finally:
        await a.close()
        await b.close()


async def test_a_second_pause_keeps_the_first_and_its_prober(make_spool: SpoolFactory) -> None:
    a, b = await two(make_spool)
    try:
        if await a.pause_delivery(REASON, T0, TURN_MS) is None:
            assert await b.pause_delivery("HTTP 403", T0 + 5, TURN_MS) is None
            return
        # b got a 401 of its own, to a request it sent before it knew of the pause
        again = await b.pause_delivery("Yespo answered HTTP 403", T0 + 5, TURN_MS)
        assert again == SharedPause(REASON, T0, probing=False)
        assert (await a.delivery_pause(TURN_MS)).probing  # a keeps its turn
        assert not (await b.delivery_pause(TURN_MS)).probing
    finally:
        await a.close()
        await b.close()


async def test_the_turn_to_probe_passes_on_when_its_holder_stops_asking(
    make_spool: SpoolFactory,
) -> None:
    a, b = await two(make_spool)
    try:
        if await a.pause_delivery(REASON, T0, turn_ms=1) is None:
            return
        # a's turn was for 1 ms and a asks no more (it died): b takes the turn, and leases
        await a.append([Entry("m1")], T0)
        for _ in range(1000):  # until the millisecond is over, however slow the machine
            pause = await b.delivery_pause(TURN_MS)
            if pause is not None and pause.probing:
                break
        assert pause == SharedPause(REASON, T0, probing=True)
        assert [r.message_id for r in await b.lease(1, 1000, T0)] == ["m1"]
        assert await a.lease(1, 1000, T0) == []
    finally:
        await a.close()
        await b.close()
