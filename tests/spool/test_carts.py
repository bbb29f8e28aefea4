"""The spool's remembered carts and rejected calls, on every backend."""

from __future__ import annotations

from collector.spool import Rejected, Spool

from .conftest import T0, SpoolFactory


async def test_a_saved_cart_comes_back_and_none_forgets_it(spool: Spool) -> None:
    assert await spool.cart("cart:a") is None
    await spool.save_carts({"cart:a": b'{"products":[1]}', "cart:b": b"{}"}, T0)
    assert await spool.cart("cart:a") == b'{"products":[1]}'
    await spool.save_carts({"cart:a": b'{"products":[1,2]}', "cart:b": None}, T0 + 1)
    assert await spool.cart("cart:a") == b'{"products":[1,2]}'
    assert await spool.cart("cart:b") is None


async def test_carts_survive_a_restart(make_spool: SpoolFactory) -> None:
    s = make_spool()
    await s.open()
    await s.save_carts({"cart:a": b"[1]"}, T0)
    await s.close()
    again = make_spool()
    await again.open()
    try:
        # The memory backend keeps nothing across a restart by design; a durable one must.
        expected = None if type(again).__name__ == "MemorySpool" else b"[1]"
        assert await again.cart("cart:a") == expected
    finally:
        await again.close()


async def test_carts_expire_by_age_and_the_oldest_beyond_the_bound(spool: Spool) -> None:
    await spool.save_carts({"cart:old": b"1"}, T0)
    await spool.save_carts({"cart:a": b"2"}, T0 + 10)
    await spool.save_carts({"cart:b": b"3"}, T0 + 20)
    await spool.save_carts({"cart:c": b"4"}, T0 + 30)
    await spool.save_carts({"cart:a": b"5"}, T0 + 40)  # saved again: now the newest
    assert await spool.expire_carts(T0 + 5, max_carts=2) == 2  # cart:old by age, cart:b by count
    assert [k for k in ("cart:old", "cart:a", "cart:b", "cart:c") if await spool.cart(k)] == [
        "cart:a",
        "cart:c",
    ]


def rejected(reason: str, n: int) -> Rejected:
    return Rejected("segment", reason, f"why {n}", f"m{n}", b'{"n":%d}' % n, T0 + n)


async def test_rejected_calls_are_kept_with_their_reason_oldest_first(spool: Spool) -> None:
    await spool.keep_rejected([rejected("no_url", 1), rejected("no_product_id", 2)], keep=100)
    await spool.keep_rejected([rejected("no_url", 3)], keep=100)
    calls = await spool.rejected(10)
    assert [(c.reason, c.message_id, c.body, c.at) for c in calls] == [
        ("no_url", "m1", b'{"n":1}', T0 + 1),
        ("no_product_id", "m2", b'{"n":2}', T0 + 2),
        ("no_url", "m3", b'{"n":3}', T0 + 3),
    ]
    assert calls[0].seq < calls[1].seq < calls[2].seq
    assert [c.message_id for c in await spool.rejected(10, reason="no_url")] == ["m1", "m3"]
    assert await spool.rejected_counts() == {"no_url": 2, "no_product_id": 1}


async def test_only_the_newest_rejected_calls_are_kept(spool: Spool) -> None:
    await spool.keep_rejected([rejected("r", n) for n in range(5)], keep=3)
    await spool.keep_rejected([rejected("r", 5)], keep=3)
    assert [c.message_id for c in await spool.rejected(10)] == ["m3", "m4", "m5"]


async def test_rejected_calls_are_purged_by_reason_or_all(spool: Spool) -> None:
    await spool.keep_rejected([rejected("a", 1), rejected("b", 2), rejected("a", 3)], keep=10)
    assert await spool.purge_rejected("a") == 2
    assert [c.message_id for c in await spool.rejected(10)] == ["m2"]
    assert await spool.purge_rejected() == 1
    assert await spool.rejected(10) == []
