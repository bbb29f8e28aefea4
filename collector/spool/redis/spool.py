"""The Redis spool: one queue that several collectors share (docs/redis.md).

Each method is one Lua script (`scripts.py`): one round trip, atomic on the server,
whatever the batch size. Leases are kept in Redis with their expiry and their owner (one
id per spool object), so every collector on the same Redis leases from one queue: an
entry is leased by one of them at a time, a key's entries go in order across all of them,
and the leases of a collector that died run out and are taken by the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ...errors import DeliveryClaimed, SpoolError, SpoolFull
from ..base import (
    DeadLetter,
    EntryLike,
    LocalVisitorLocks,
    Record,
    Rejected,
    SharedPause,
    Spool,
    SpoolStats,
    StepStream,
)
from . import scripts
from .steps import RedisSteps

log = logging.getLogger("collector.spool")

#: Every key starts with this; the braces are a hash tag: one slot, so that a script may
#: touch every key on Redis Cluster too.
PREFIX = "{yc}:"

# A visitor's lock outlives a request (a request is bounded by its body and the spool's
# write, well under a second) but not a collector that dies holding it: another takes
# the visitor after this long at most.
VISITOR_LOCK_TTL_MS = 10_000
# Append groups on their way to Redis at once, each on its own connection: with
# appendfsync always Redis answers a group only after its fsync, and with one group in
# flight it waits idle for the next between them. Groups in flight together were all
# sent before any was answered: no caller has been told of one before another began, so
# their relative order promises nothing (a request's own entries stay in one script).
# Batches of 100 from 64 connections: 1 group 332-406 requests/s, 4 groups 545-608,
# 8 groups 624-670 (bench/ingest.py and a profile script, docs/redis.md).
GROUPS_IN_FLIGHT = 8
# How long a waiter for a visitor's lock held by another collector sleeps between tries,
# at first and at most: short, since a request holds it for milliseconds.
_LOCK_POLL_S = (0.001, 0.02)

_decode = msgspec.msgpack.Decoder().decode


def _record(seq: bytes, fields: bytes, body: bytes) -> Record:
    mid, kind, key, event_type, received_at, event_time, after, attempts = _decode(fields)
    return Record(
        int(seq),
        mid,
        kind,
        key,
        event_type,
        int(received_at),
        None if event_time is False else int(event_time),
        body,
        attempts=int(attempts),
        after=after or None,
    )


def _records(flat: list[Any]) -> list[Record]:
    return [_record(*flat[i : i + 3]) for i in range(0, len(flat), 3)]


_encode = msgspec.msgpack.Encoder().encode


def _batch(entries: Sequence[EntryLike], received_at: int) -> list[Any]:
    """The entries as the scripts take them: one argument packing each entry's messageId,
    client flag, kind and key, then per entry its stored fields, packed here (`false` for
    a missing value: a Lua table cannot hold a nil), and its body. A script so unpacks one
    argument and stores the rest as they come."""
    args: list[Any] = [_encode([(e.message_id, e.client_id, e.kind, e.key) for e in entries])]
    for e in entries:
        fields = (e.message_id, e.kind, e.key, e.event_type, received_at,
                  False if e.event_time is None else e.event_time, e.after or False, 0)  # fmt: skip
        args += (_encode(fields), e.body)
    return args


def _settle(done: asyncio.Future[Any], result: Any) -> None:
    if done.done():
        return
    if isinstance(result, BaseException):
        done.set_exception(_error(result))
    else:
        done.set_result(result)


class RedisSpool(Spool):
    def __init__(self, url: str, *, max_events: int, dedup_window_ms: int) -> None:
        self.url = url
        self.max_events = max_events
        self._window = dedup_window_ms
        self._redis: aioredis.Redis = aioredis.Redis.from_url(url)
        # Leases are tagged with this: `reset_leases` ends only this object's own.
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._local = LocalVisitorLocks()
        self._depth = 0  # the queue's depth as the last script saw it (`room`)
        self._delivering = False
        self.durability: str | None = "unknown"  # the server's appendfsync, read at `open`
        self._writes: list[tuple[Any, list[Any], asyncio.Future[Any]]] = []
        self._groups = 0  # groups on their way to Redis
        self._drains: set[asyncio.Task[None]] = set()
        s = self._redis.register_script
        self._append = s(scripts.APPEND)
        self._lease = s(scripts.LEASE)
        self._reset = s(scripts.RESET)
        self._ack = s(scripts.ACK)
        self._release = s(scripts.RELEASE)
        self._dead_letter = s(scripts.DEAD_LETTER)
        self._dead_letters = s(scripts.DEAD_LETTERS)
        self._replay_or_purge = s(scripts.REPLAY_OR_PURGE)
        self._pending = s(scripts.PENDING)
        self._stats = s(scripts.STATS)
        self._hold = s(scripts.HOLD)
        self._held = s(scripts.HELD)
        self._identify = s(scripts.IDENTIFY)
        self._contact_of = s(scripts.CONTACT_OF)
        self._expire_held = s(scripts.EXPIRE_HELD)
        self._unlock = s(scripts.UNLOCK)
        self._tokens = s(scripts.TOKENS)
        self._pause = s(scripts.PAUSE)
        self._save_carts = s(scripts.SAVE_CARTS)
        self._expire_carts = s(scripts.EXPIRE_CARTS)
        self._keep_rejected = s(scripts.KEEP_REJECTED)
        self._rejected = s(scripts.REJECTED)
        self._purge_rejected = s(scripts.PURGE_REJECTED)
        self._scripts = [self._append, self._hold, self._identify]  # run by `_write`

    async def _run(self, script: Any, args: Sequence[Any]) -> Any:
        try:
            return await script(keys=[PREFIX + "seq"], args=list(args))
        except (RedisError, OSError) as exc:
            raise _error(exc) from exc

    async def _write(self, script: Any, args: list[Any]) -> Any:
        """Run a writing script in the next group: the requests that arrive while a group
        is on its way go together in one pipeline, in the order they came, so seqs follow
        the order of the calls (as SQLite's group commit does) and many requests share a
        round trip."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writes.append((script, args, done))
        if self._groups < GROUPS_IN_FLIGHT:
            self._groups += 1
            task = asyncio.create_task(self._drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        return await done

    async def _drain(self) -> None:
        try:
            while self._writes:
                group, self._writes = self._writes, []
                await self._send_group(group)
        finally:
            self._groups -= 1

    async def _send_group(self, group: list[tuple[Any, list[Any], asyncio.Future[Any]]]) -> None:
        """One pipeline of scripts; each caller gets its script's result or error. Sent
        again once, for the scripts Redis no longer had (a restart, a FLUSH)."""
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for script, args, _ in group:
                pipe.execute_command("EVALSHA", script.sha, 1, PREFIX + "seq", *args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:
                results = [exc] * len(group)
            again = []
            for item, result in zip(group, results, strict=True):
                if attempt == 0 and isinstance(result, NoScriptError):
                    again.append(item)
                else:
                    _settle(item[2], result)
            if not again:
                return
            try:
                await self._load_scripts()
            except (RedisError, OSError) as exc:
                for _, _, done in again:
                    _settle(done, exc)
                return
            group = again

    async def _load_scripts(self) -> None:
        for script in self._scripts:
            script.sha = await self._redis.script_load(script.script)

    async def open(self) -> None:
        try:
            await self._redis.ping()
            await self._load_scripts()
            self.durability = await self._read_durability()
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis spool unreachable: {exc}") from exc
        self._depth = (await self.stats()).depth
        log.info("spool: redis %s, persistence %s", self._redis_location(), self.durability)

    def step_stream(self) -> StepStream:
        return RedisSteps(self._redis, PREFIX)

    def _redis_location(self) -> str:
        kw = self._redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

    async def _read_durability(self) -> str:
        """What a 2xx means on this server: "appendfsync always" survives a Redis crash;
        "everysec" may lose the last second; no AOF loses what came after the last RDB
        snapshot. Managed Redis may refuse CONFIG: then it is "unknown"."""
        try:
            got: dict[Any, Any] = {
                _text(k): _text(v) for k, v in (await self._redis.config_get("append*")).items()
            }
        except ResponseError:
            return "unknown (CONFIG GET refused)"
        if got.get("appendonly") != "yes":
            return "appendonly no (a Redis restart loses what came after its last snapshot)"
        policy = got.get("appendfsync", "?")
        return f"appendonly yes, appendfsync {policy}"

    async def close(self) -> None:
        self._delivering = False
        await self._redis.aclose()

    async def claim_delivery(self) -> None:
        # Leases live in Redis and are shared: every collector on this Redis may deliver.
        # Only two forwarders on one spool object are refused, since `reset_leases` at a
        # forwarder's start ends this object's leases, the other forwarder's included.
        if self._delivering:
            raise DeliveryClaimed(self.url, f"a forwarder of this process, pid {os.getpid()}")
        self._delivering = True

    async def release_delivery(self) -> None:
        self._delivering = False

    def _limit(self, bound: int | None) -> int:
        return self.max_events if bound is None else min(bound, self.max_events)

    async def append(
        self, entries: Sequence[EntryLike], received_at: int, bound: int | None = None
    ) -> list[bool]:
        if not entries:
            return []
        args = [received_at, self._window, self._limit(bound), *_batch(entries, received_at)]
        out = await self._write(self._append, args)
        self._depth = int(out[0])
        return [bool(x) for x in out[1:]]

    def room(self, bound: int | None = None) -> int:
        return max(0, self._limit(bound) - self._depth)

    async def lease(
        self, limit: int, lease_ms: int, now: int, kind: str | None = None
    ) -> list[Record]:
        if limit <= 0:
            return []
        return _records(
            await self._run(self._lease, [now, limit, lease_ms, kind or "", self._owner])
        )

    async def take_tokens(
        self, most: int, rate: float, burst: int, unused: int = 0
    ) -> tuple[int, int] | None:
        taken, wait = await self._run(self._tokens, [most, repr(rate), burst, unused])
        return int(taken), int(wait)

    # The 401 pause is shared: a key in Redis that every collector's `lease` looks at (so
    # none sends once it is on, with no round trip of its own), and a turn to probe that
    # one collector at a time has.

    async def pause_delivery(self, reason: str, since: int, turn_ms: int) -> SharedPause | None:
        return await self._pause_op("pause", turn_ms, reason, since)

    async def delivery_pause(self, turn_ms: int = 0) -> SharedPause | None:
        return await self._pause_op("look", turn_ms)

    async def resume_delivery(self) -> None:
        await self._pause_op("resume", 0)

    async def _pause_op(
        self, op: str, turn_ms: int, reason: str = "", since: int = 0
    ) -> SharedPause:
        got = await self._run(self._pause, [op, self._owner, turn_ms, reason, since])
        if not got:
            return SharedPause(None, 0, False)
        return SharedPause(_text(got[0]), int(got[1]), bool(int(got[2])))

    async def reset_leases(self) -> int:
        return int(await self._run(self._reset, [self._owner]))

    async def ack(self, seqs: Sequence[int]) -> None:
        if seqs:
            self._depth = int(await self._run(self._ack, seqs))

    async def release(self, seqs: Sequence[int], not_before: int) -> None:
        if seqs:
            await self._run(self._release, [not_before, *seqs])

    async def dead_letter(
        self, seqs: Sequence[int], reason: str, status: int | None, detail: str, now: int
    ) -> None:
        if seqs:
            args = [now, reason, "" if status is None else status, detail, *seqs]
            await self._run(self._dead_letter, args)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        flat = await self._run(self._dead_letters, [limit])
        out = []
        for i in range(0, len(flat), 4):
            reason, status, detail, dead_at = _decode(flat[i + 3])
            record = _record(*flat[i : i + 3])
            out.append(
                DeadLetter(record, reason, None if status is False else int(status), detail,
                           int(dead_at))
            )  # fmt: skip
        return out

    async def _pick(self, replay: bool, seqs: Sequence[int] | None, reason: str | None) -> int:
        now = int(time.time() * 1000)
        args = [1 if replay else 0, now, reason or "", 1 if seqs is None else 0, *(seqs or ())]
        return int(await self._run(self._replay_or_purge, args))

    async def replay(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        return await self._pick(True, seqs, reason)

    async def purge(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        return await self._pick(False, seqs, reason)

    async def dead_counts(self) -> dict[str, int]:
        try:
            got = await self._redis.hgetall(PREFIX + "dr")
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis spool unreachable: {exc}") from exc
        return {_text(k): int(v) for k, v in got.items() if int(v) > 0}

    async def pending(self, limit: int, after_seq: int = 0) -> list[Record]:
        return _records(await self._run(self._pending, [after_seq, limit]))

    async def stats(self) -> SpoolStats:
        depth, in_flight, dead, first, held = await self._run(
            self._stats, [int(time.time() * 1000)]
        )
        self._depth = int(depth)
        oldest = int(_decode(first)[4]) if first else None
        return SpoolStats(int(depth), int(in_flight), int(dead), oldest, int(held))

    async def check(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis spool unreachable: {exc}") from exc

    # -- anonymous visitors ----------------------------------------------------------------

    @asynccontextmanager
    async def visitor_lock(self, visitor: str) -> AsyncIterator[None]:
        # This process's waiters queue on a local lock; only its holder polls Redis,
        # where the lock excludes every other collector's.
        async with self._local.visitor_lock(visitor):
            key = f"{PREFIX}lk:{visitor}"
            token = secrets.token_hex(8)
            pause = _LOCK_POLL_S[0]
            try:
                while not await self._redis.set(key, token, nx=True, px=VISITOR_LOCK_TTL_MS):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _LOCK_POLL_S[1])
            except (RedisError, OSError) as exc:
                raise SpoolError(f"redis spool unreachable: {exc}") from exc
            try:
                yield
            finally:
                try:
                    await self._unlock(keys=[key], args=[token])
                except (RedisError, OSError):
                    log.warning("visitor lock of %s not released; it expires by itself", visitor)

    async def hold(
        self, entries: Sequence[EntryLike], received_at: int, per_visitor: int
    ) -> tuple[list[bool], int]:
        if not entries:
            return [], 0
        args = [received_at, self._window, per_visitor, self.max_events]
        out = await self._write(self._hold, [*args, *_batch(entries, received_at)])
        return [bool(x) for x in out[1:]], int(out[0])

    async def held(self, visitor: str) -> list[Record]:
        return _records(await self._run(self._held, [visitor]))

    async def identify(
        self,
        visitor: str,
        contact: bytes,
        now: int,
        release: Sequence[int] = (),
        entries: Sequence[EntryLike] = (),
        bound: int | None = None,
    ) -> None:
        args = [now, self._limit(bound), visitor, contact, _encode(list(release))]
        args += _batch(entries, now)
        self._depth = int(await self._write(self._identify, args))

    async def contact_of(self, visitor: str, since: int) -> bytes | None:
        got = await self._run(self._contact_of, [visitor])
        if not got or int(got[1]) < since:
            return None
        return bytes(got[0])

    async def expire_held(self, held_before: int, visitors_before: int) -> int:
        args = [held_before, visitors_before, self.max_events]
        return int(await self._run(self._expire_held, args))

    # -- carts and rejected calls ----------------------------------------------------------

    async def cart(self, key: str) -> bytes | None:
        try:
            found = await self._redis.hget(PREFIX + "ct", key)
        except (RedisError, OSError) as exc:
            raise _error(exc) from exc
        return found.encode() if isinstance(found, str) else found

    async def save_carts(self, carts: Mapping[str, bytes | None], now: int) -> None:
        if carts:
            args: list[Any] = [now]
            for key, cart in carts.items():
                args += (key, 0 if cart is None else 1, cart or b"")
            await self._run(self._save_carts, args)

    async def expire_carts(self, saved_before: int, max_carts: int) -> int:
        return int(await self._run(self._expire_carts, [saved_before, max_carts]))

    async def keep_rejected(self, calls: Sequence[Rejected], keep: int) -> None:
        fields = [(c.source, c.reason, c.detail, c.message_id or False, c.at) for c in calls]
        await self._run(self._keep_rejected, [keep, _encode(fields), *(c.body for c in calls)])

    async def rejected(self, limit: int, reason: str | None = None) -> list[Rejected]:
        flat = await self._run(self._rejected, [limit, reason or ""])
        out = []
        for i in range(0, len(flat), 3):
            source, why, detail, message_id, at = _decode(flat[i + 1])
            out.append(
                Rejected(source, why, detail, message_id or None, bytes(flat[i + 2]), int(at),
                         seq=int(flat[i]))
            )  # fmt: skip
        return out

    async def purge_rejected(self, reason: str | None = None) -> int:
        return int(await self._run(self._purge_rejected, [reason or ""]))

    async def rejected_counts(self) -> dict[str, int]:
        try:
            got = await self._redis.hgetall(PREFIX + "rr")
        except (RedisError, OSError) as exc:
            raise _error(exc) from exc
        return {_text(k): int(v) for k, v in got.items() if int(v) > 0}


def _error(exc: BaseException) -> SpoolError:
    """A Redis error as the spool's: a script's FULL reply is `SpoolFull`."""
    if isinstance(exc, ResponseError) and str(exc).startswith("FULL "):
        return SpoolFull(str(exc)[5:])
    if isinstance(exc, ResponseError):
        return SpoolError(f"redis spool: {exc}")
    return SpoolError(f"redis spool unreachable: {exc}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
