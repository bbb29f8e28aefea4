"""Segment's HTTP Tracking API: POST /v1/batch, /v1/track, /v1/identify, /v1/page,
/v1/screen, /v1/group and /v1/alias.

A shop that sends with Segment's SDKs (or RudderStack's, which speak the same protocol)
points them here by changing only their host. Authentication is Segment's: HTTP Basic with
a write key (COLLECTOR_SEGMENT_WRITE_KEYS) as the user name, or `writeKey` in the body.
Bodies may be gzip-encoded (the Python SDK's `gzip=True`). The answers are Segment's, so
that its SDKs neither retry good calls forever nor drop them: 200 `{"success": true}` once
the calls are committed; 400 with a reason for a body that is not JSON, not a call or a
batch, or over Segment's limits; 401 for an unknown key; 503 + Retry-After when the spool
cannot take them now.

A call that cannot become a Yespo event is answered 200 all the same: Segment's SDKs send
calls in batches and would otherwise retry (or drop) the good calls beside it. It is
counted in /metrics by reason, logged, and kept in the spool's rejected log
(`collector spool rejected`). docs/segment.md has the whole mapping.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ...errors import BadRequest, PayloadTooLarge, SpoolFull, Unauthorized
from ...inspect.journal import sent
from ...normalize.segment import (
    MAX_CALL_BYTES,
    MAX_REQUEST_BYTES,
    Call,
    Refused,
    batch_sent_at,
    read_call,
)
from ...spool import Rejected
from ...web.auth import ApiKeys
from ...web.http import ErrorForm, parse_json, read_body
from ..base import Counters, Source
from ..visitors import Holding
from .people import People, locked, names

log = logging.getLogger("collector.segment")

# Segment's errors are JSON with a `message`; its SDKs authenticate with Basic.
SEGMENT = ErrorForm("message", "Basic")
# Path -> the call type it takes (None: /v1/batch, each call names its own).
PATHS: dict[str, str | None] = {
    "/v1/batch": None,
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/alias": "alias",
}
# Rejected calls kept for operators to read (the newest); the metric counts every one. At
# most 32 KB each, so the log stays within a few hundred MB however it is flooded.
MAX_REJECTED_KEPT = 10_000
# A request's people are locked, and their state read, again when the first reading showed
# names linked to people the request did not lock; after this many tries it goes on.
_LOCK_TRIES = 3
# Rejected calls logged per second at most; the rest are counted in the next line (and
# every one is in the rejected log and the metric).
_LOG_PER_S = 10
_SUCCESS = orjson.dumps({"success": True})


def inflate(body: bytes, limit: int) -> bytes:
    """A gzip body, inflated to at most `limit` bytes (a small body may inflate a
    thousandfold, so the bound is on what it inflates to)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid gzip: {exc}") from None
    if len(data) > limit:
        raise BadRequest(f"body inflates to over {limit} bytes, Segment's limit per request")
    if not inflater.eof:
        raise BadRequest("gzip body is cut short")
    return data


def _too_large(call: object) -> Refused | None:
    """A call of a batch over Segment's 32 KB, written out as JSON."""
    try:
        size = len(orjson.dumps(call))
    except TypeError:  # nested deeper than any JSON writer goes (orjson: 254 levels)
        return Refused("invalid", "the call is nested too deeply to be written as JSON")
    return (
        Refused("too_large", f"{size} bytes, over Segment's 32 KB")
        if size > MAX_CALL_BYTES
        else None
    )


class Segment(Source):
    """Segment's endpoints, bound to one spool."""

    def setup(self) -> None:
        s = self.settings
        self.keys = ApiKeys(s.segment_write_keys)
        self.holding = Holding(s, self.spool, self.metrics, self._on_append)
        self.holding.journal = self.journal
        self.holding.source = "segment"
        self.holding.note_writes = True
        self._counters = Counters(self.metrics, "segment")
        self.counters = (self._counters,)
        self._log_second = 0
        self._logged = 0
        self._unlogged = 0

    def endpoint(self, path: str) -> Callable[[Request], Any]:
        """The handler of one of `PATHS`."""
        call_type = PATHS[path]

        async def handle(request: Request) -> Response:
            return await self._handle(request, call_type)

        return handle

    async def _handle(self, request: Request, call_type: str | None) -> Response:
        given = self._header_key(request)
        if given is not None:
            self._check(given)  # before the body: an unknown sender's body is not read
        body = await self._body(request)
        if call_type is not None and len(body) > MAX_CALL_BYTES:
            raise BadRequest(f"the call is {len(body)} bytes, over Segment's 32 KB per call")
        data = parse_json(body)
        if not isinstance(data, dict):
            raise BadRequest(f"body must be a JSON object, got {type(data).__name__}")
        if given is None:
            key = data.get("writeKey")
            if not isinstance(key, str) or not key:
                raise Unauthorized(
                    "send the write key as Basic auth's user name, or as writeKey in the body"
                )
            self._check(key.encode())
        sent_at: int | Refused | None = None
        if call_type is None:
            calls, batch_sent = self._batch(data)
            # An unreadable sentAt spoils the time of every call of the batch: each is
            # rejected with it (a 400 would make the SDK drop the batch unseen).
            sent_at = batch_sent_at(batch_sent)
        else:
            calls = [data]
        await self._take(calls, call_type, sent_at, len(body))
        return Response(_SUCCESS, media_type="application/json")

    # -- the request ----------------------------------------------------------------------

    @staticmethod
    def _header_key(request: Request) -> bytes | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, cred = header.partition(" ")
        if scheme.lower() != "basic" or not cred.strip():
            raise Unauthorized("send the write key as Basic auth's user name (no OAuth here)")
        try:
            user, _, _ = base64.b64decode(cred.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            raise Unauthorized("malformed Basic credentials") from None
        return user

    def _check(self, key: bytes) -> None:
        if not self.settings.segment_write_keys:
            raise Unauthorized(
                "this collector takes no Segment calls: set COLLECTOR_SEGMENT_WRITE_KEYS"
            )
        if not self.keys.known(key):
            raise Unauthorized("unknown write key")

    @staticmethod
    async def _body(request: Request) -> bytes:
        try:
            body = await read_body(request, MAX_REQUEST_BYTES)
        except PayloadTooLarge as exc:  # Segment answers 400: its SDKs retry no 4xx but a few
            raise BadRequest(f"{exc.message} (Segment's limit per request)") from None
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding != "gzip":
            raise BadRequest(f"Content-Encoding {encoding!r} is not taken: send gzip or none")
        return inflate(body, MAX_REQUEST_BYTES)

    @staticmethod
    def _batch(data: dict[str, Any]) -> tuple[list[Any], object]:
        """The calls of a /v1/batch body, each with the batch's context under its own."""
        calls = data.get("batch")
        if not isinstance(calls, list):
            raise BadRequest('a batch body is {"batch": [calls], "sentAt": ...}')
        shared = data.get("context")
        if isinstance(shared, dict) and shared:
            calls = [
                {**c, "context": {**shared, **(c.get("context") or {})}}
                if isinstance(c, dict) and isinstance(c.get("context") or {}, dict)
                else c
                for c in calls
            ]
        return calls, data.get("sentAt")

    # -- the calls ------------------------------------------------------------------------

    async def _take(
        self,
        calls: list[Any],
        call_type: str | None,
        sent_at: int | Refused | None,
        body_size: int,
    ) -> None:
        now = int(time.time() * 1000)
        if self.journal.on:
            for raw in calls:
                self._note_received(raw)
        read: list[tuple[Any, Call | Refused]] = []
        for raw in calls:
            # Only a body over 32 KB can hold a call over 32 KB: measured only then.
            too_large = _too_large(raw) if body_size > MAX_CALL_BYTES else None
            if too_large is not None:
                read.append((raw, too_large))
            elif isinstance(sent_at, Refused):
                read.append((raw, sent_at))
            else:
                read.append((raw, read_call(raw, call_type, sent_at, now)))
        taken = [c for _, c in read if isinstance(c, Call)]
        by_type: dict[str, int] = {}
        for call in taken:
            by_type[call.type] = by_type.get(call.type, 0) + 1
        for kind, count in by_type.items():
            self.metrics.segment_calls.labels(kind).inc(count)
        events = sum(1 for c in taken if c.type in ("track", "page", "screen"))
        if events > self.spool.room():
            raise SpoolFull(f"no room for the {events} events of this request")
        keys = [k for call in taken for k in names(call)]
        people = People(self.holding, now, self.settings.segment_custom_events)
        await people.load(keys)
        if people.lockless(taken):
            await self._take_all(people, read)
        else:
            people = await self._take_locked(people.lock_keys(keys), keys, read, now)
        await people.flush()  # known people's events: other requests need not wait for it
        await self._settle(people, len(calls))

    async def _take_locked(
        self, lock_keys: set[str], keys: list[str], read: list[tuple[Any, Call | Refused]], now: int
    ) -> People:
        """The calls, under the locks of the people they name, read again under them. When
        that reading finds names linked to people not locked (an alias meanwhile), the
        locks are taken again with theirs."""
        for attempt in range(_LOCK_TRIES):
            people = People(self.holding, now, self.settings.segment_custom_events)
            async with locked(self.holding, lock_keys):
                await people.load(keys)
                need = people.lock_keys(keys)
                done = need <= lock_keys or attempt == _LOCK_TRIES - 1
                if done:
                    await self._take_all(people, read)
                    if people.needs_lock():
                        await people.flush()
            if done:
                break
            lock_keys |= need
        return people

    @staticmethod
    async def _take_all(people: People, read: list[tuple[Any, Call | Refused]]) -> None:
        for raw, read_as in read:
            if isinstance(read_as, Refused):
                people.refuse(raw, read_as)
            else:
                await people.take(read_as, raw)

    def _note_received(self, raw: Any) -> None:
        call = raw if isinstance(raw, dict) else {}
        mid, name = call.get("messageId"), call.get("event") or call.get("type")
        journey = mid if isinstance(mid, str) and mid else None
        event_type = name if isinstance(name, str) else None
        self.journal.note(
            "received",
            journey or "",
            "segment",
            event_type,
            None,
            None,
            {"body": sent(raw)},
        )

    async def _settle(self, people: People, received: int) -> None:
        """Keep and count what the request's calls became."""
        outcome = people.outcome
        duplicates = people.writes.duplicates
        if outcome.refused and self.journal.live:
            for r in outcome.refused:
                errors = [{"field": r.reason, "message": r.detail}]
                detail = {"errors": errors, "status": 200}  # Segment's protocol: success
                self.journal.note(
                    "refused", r.message_id or "", "segment", None, None, None, detail
                )
        if outcome.refused:
            await self.spool.keep_rejected(outcome.refused, MAX_REJECTED_KEPT)
            for refused in outcome.refused:
                self.metrics.segment_rejected.labels(refused.reason).inc()
            self._log(outcome.refused)
        for reason, count in outcome.ignored.items():
            self.metrics.segment_ignored.labels(reason).inc(count)
        counters = self._counters
        counters.received += received
        counters.accepted += outcome.accepted - duplicates
        counters.duplicates += duplicates
        counters.rejected += len(outcome.refused)

    def _log(self, refused: list[Rejected]) -> None:
        second = int(time.monotonic())
        if second != self._log_second:
            self._log_second, self._logged = second, 0
        for call in refused:
            if self._logged >= _LOG_PER_S:
                self._unlogged += 1
                continue
            self._logged += 1
            more = f" (and {self._unlogged} more before it, unlogged)" if self._unlogged else ""
            self._unlogged = 0
            log.warning(
                "Segment call %s is no Yespo event (%s): %s; kept in the rejected log%s",
                call.message_id or "without messageId",
                call.reason,
                call.detail,
                more,
            )
