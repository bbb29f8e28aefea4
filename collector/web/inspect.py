"""The live inspector's HTTP side, under /inspect: the page, login, the stream of steps
(server-sent events) and the dead letters. Only routed when COLLECTOR_INSPECT_KEY is set;
without it every /inspect path is the plain 404 of an unknown path.

Auth: `Authorization: Bearer <key>`, or the cookie `POST /inspect/login` sets: an HMAC of
a fixed label under the key, so it outlives a restart and dies with a change of key. The
actions take JSON only, which a form on another site cannot send: the cookie (SameSite
Strict besides) cannot be used from elsewhere."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import zlib
from collections.abc import AsyncIterator, Callable
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ..config import Settings
from ..inspect import LIVE_STEPS_PER_S, Filter, Journal, render
from ..inspect.journal import FLUSH_S
from ..inspect.mask import mask_json, mask_key, mask_text
from ..spool import DeadLetter, Spool
from .http import json_response

COOKIE = "yc_inspect"
_LABEL = b"yc-inspect-session-v1"
# A comment line this often keeps proxies and browsers from closing a quiet stream.
PING_S = 15.0
# Steps a watcher is sent live, a second at the most (a bucket of as many; the journal
# records about as many while anyone watches, see collector/inspect/journal.py): a page
# cannot show more, and each costs the collector a render (masking every string of two
# bodies). Past it the stream carries a sample of whole journeys (those whose id hashes
# into the sampled share, so a journey shown keeps its later steps) and says how many
# steps it left out; a filter (contact, order, type, step) narrows the stream to what fits.
# Login and action bodies are a key or a list of seqs: a few KB is plenty.
MAX_ACTION_BYTES = 64 * 1024
# Dead letters listed at once, at most.
MAX_DEAD_LISTED = 1000


class Inspector:
    """The /inspect endpoints of one collector."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        journal: Journal,
        static_dir: Traversable,
        notify: Callable[[], None] | None = None,
    ) -> None:
        assert settings.inspect_key is not None
        self.key = settings.inspect_key.encode()
        self.cookie = hmac.new(self.key, _LABEL, hashlib.sha256).hexdigest()
        self.spool = spool
        self.journal = journal
        self.notify = notify
        self.page = static_dir / "inspect" / "index.html"

    def routes(self) -> list[Route]:
        return [
            Route("/inspect", self.serve_page, methods=["GET"]),
            Route("/inspect/login", self.login, methods=["POST"]),
            Route("/inspect/logout", self.logout, methods=["POST"]),
            Route("/inspect/stream", self.stream, methods=["GET"]),
            Route("/inspect/dead", self.dead, methods=["GET"]),
            Route("/inspect/dead/replay", self.replay, methods=["POST"]),
            Route("/inspect/dead/purge", self.purge, methods=["POST"]),
        ]

    # -- auth -----------------------------------------------------------------------------

    def _allowed(self, request: Request) -> bool:
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and cred.strip():
            return hmac.compare_digest(cred.strip().encode(), self.key)
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.cookie.encode())

    @staticmethod
    def _refused() -> Response:
        return json_response(
            {
                "error": "send the inspector key (COLLECTOR_INSPECT_KEY) as 'Authorization:"
                " Bearer <key>', or log in at POST /inspect/login"
            },
            401,
            {"WWW-Authenticate": 'Bearer realm="inspect"'},
        )

    async def serve_page(self, request: Request) -> Response:
        # The page holds no data: without a cookie its script shows only the key form.
        if not self.page.is_file():
            return json_response(
                {"error": f"the inspector's page is not installed here ({self.page})"}, 404
            )
        headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
        return Response(
            self.page.read_bytes(), media_type="text/html; charset=utf-8", headers=headers
        )

    async def login(self, request: Request) -> Response:
        body = await _body(request)
        key: object = None
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                data = None
            key = data.get("key") if isinstance(data, dict) else None
        else:
            given = parse_qs(body.decode(errors="replace")).get("key")
            key = given[0] if given else None
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(), self.key):
            return json_response({"error": "wrong inspector key"}, 401)
        reply = RedirectResponse("/inspect", status_code=303)
        reply.set_cookie(
            COOKIE, self.cookie, path="/inspect", httponly=True, samesite="strict",
            secure=request.url.scheme == "https",
        )  # fmt: skip
        return reply

    async def logout(self, request: Request) -> Response:
        reply = RedirectResponse("/inspect", status_code=303)
        reply.delete_cookie(COOKIE, path="/inspect", httponly=True, samesite="strict")
        return reply

    # -- the stream -----------------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        if not self._allowed(request):
            return self._refused()
        q = request.query_params
        keep = Filter(
            journey=q.get("journey") or None,
            contact=q.get("contact") or None,
            order=q.get("order") or None,
            types=_listed(q.get("type")),
            sources=_listed(q.get("source")),
            steps=_listed(q.get("step")),
        )
        mask = q.get("mask") != "0"
        after = request.headers.get("last-event-id") or q.get("after") or None
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            self._steps(keep, mask, after), media_type="text/event-stream", headers=headers
        )

    async def _steps(self, keep: Filter, mask: bool, after: str | None) -> AsyncIterator[bytes]:
        journal = self.journal
        # Registered before the backlog is read: a step recorded meanwhile is fed to the
        # watcher at the next flush and is not in the buffer yet, so none is lost or twice.
        watcher = journal.watch(keep)
        sampler = Sampler(LIVE_STEPS_PER_S)
        try:
            hello = {"collector": journal.name, "buffer": journal.buffer, "mask": mask}
            yield b"event: hello\ndata: " + orjson.dumps(hello) + b"\n\n"
            backlog = [_event(step, mask) for step in await journal.backlog(after, keep, watcher)]
            if backlog:
                yield b"".join(backlog)
            while True:
                try:
                    steps = await asyncio.wait_for(watcher.queue.get(), PING_S)
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                while not watcher.queue.empty():  # what came together goes together
                    steps += watcher.queue.get_nowait()
                watcher.waiting -= len(steps)
                # Left out: past the journal's share (never recorded) and by this stream's.
                not_recorded, watcher.skipped = watcher.skipped, 0
                shown, left_out = sampler.take(steps) if steps else ([], 0)
                out = [_event(step, mask) for step in shown]
                if left_out or not_recorded:
                    out.append(_skipped(left_out, not_recorded, sampler.share))
                if out:
                    yield b"".join(out)
                if watcher.dropped and watcher.queue.empty():
                    return  # the client reconnects and reads what it missed
        finally:
            journal.unwatch(watcher)

    # -- dead letters ---------------------------------------------------------------------

    async def dead(self, request: Request) -> Response:
        if not self._allowed(request):
            return self._refused()
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return json_response({"error": "limit must be a whole number"}, 400)
        if not 0 <= limit <= MAX_DEAD_LISTED:
            return json_response({"error": f"limit must be 0 to {MAX_DEAD_LISTED}"}, 400)
        mask = request.query_params.get("mask") != "0"
        letters = await self.spool.dead_letters(limit) if limit else []
        total = (await self.spool.stats()).dead
        listed = b",".join(_letter(d, mask) for d in letters)
        body = b'{"dead":[%s],"total":%d}' % (listed, total)
        return Response(body, media_type="application/json")

    async def replay(self, request: Request) -> Response:
        return await self._act(request, "replayed")

    async def purge(self, request: Request) -> Response:
        return await self._act(request, "purged")

    async def _act(self, request: Request, step: str) -> Response:
        if not self._allowed(request):
            return self._refused()
        if not request.headers.get("content-type", "").startswith("application/json"):
            return json_response({"error": "send the selection as application/json"}, 415)
        try:
            data = orjson.loads(await _body(request))
        except orjson.JSONDecodeError as exc:
            return json_response({"error": f"body is not valid JSON: {exc}"}, 400)
        chosen = _selection(data)
        if isinstance(chosen, str):
            return json_response({"error": chosen}, 400)
        seqs, reason = chosen
        # Which letters go, for their steps: the spool's own selection, read first.
        letters = [
            d
            for d in await self.spool.dead_letters(10**9)
            if (seqs is None or d.record.seq in seqs) and (reason is None or d.reason == reason)
        ]
        if step == "replayed":
            count = await self.spool.replay(seqs, reason)
            if self.notify is not None:
                self.notify()
        else:
            count = await self.spool.purge(seqs, reason)
        if self.journal.live:
            for d in letters:
                r = d.record
                detail = {"seq": r.seq, "reason": d.reason}
                self.journal.note(
                    step, r.message_id, "delivery", r.event_type, r.key, r.after, detail
                )
        return json_response({step: count})


def _listed(value: str | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (value or "").split(",") if v.strip())


class Sampler:
    """At most `rate` steps a second to one watcher (a bucket of `rate`): past it, the
    steps of one journey in `share` (a power of two, the smallest that fits), chosen by
    a hash of the journey's id, so that a journey shown is shown whole."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.at = time.monotonic()
        self.share = 1

    def take(self, steps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        now = time.monotonic()
        self.tokens = min(float(self.rate), self.tokens + (now - self.at) * self.rate)
        self.at = now
        share = 1
        while len(steps) / share > max(self.tokens, 1.0) and share < 1 << 20:
            share *= 2
        self.share = share
        if share == 1:
            shown = steps
        else:
            shown = [s for s in steps if zlib.crc32(s["journey"].encode()) % share == 0]
        self.tokens = max(0.0, self.tokens - len(shown))
        return shown, len(steps) - len(shown)


def _skipped(left_out: int, not_recorded: int, share: int) -> bytes:
    data = {
        "skipped": left_out + not_recorded,
        # Past the journal's share a window records the requests that come first; past
        # the stream's, it sends whole journeys by a hash of their id.
        "sample": (
            f"the first steps of every {FLUSH_S * 1000:.0f} ms"
            if not_recorded
            else f"1 journey in {share}"
        ),
        "unrecorded": not_recorded,
        "limit": LIVE_STEPS_PER_S,
    }
    return b"event: skipped\ndata: %s\n\n" % orjson.dumps(data)


def _event(step: dict[str, Any], mask: bool) -> bytes:
    return b"id: %s\nevent: step\ndata: %s\n\n" % (step["id"].encode(), render(step, mask))


def _letter(d: DeadLetter, mask: bool) -> bytes:
    r = d.record
    shown: dict[str, Any] = {
        "seq": r.seq, "journey": r.message_id, "type": r.event_type, "key": r.key,
        "reason": d.reason, "status": d.status, "detail": d.detail, "dead_at": d.dead_at,
        "body": orjson.Fragment(r.body),
    }  # fmt: skip
    if mask:
        shown["key"] = mask_key(r.key)
        shown["detail"] = mask_text(d.detail)
        shown["body"] = mask_json(orjson.loads(r.body))
    return orjson.dumps(shown)


def _selection(data: object) -> tuple[list[int] | None, str | None] | str:
    """(seqs, reason) from `{"seqs": [..]}`, `{"reason": ".."}` or `{"all": true}`; or what
    is wrong with it."""
    wrong = 'send {"seqs": [n, ...]}, {"reason": "rejected"} or {"all": true}'
    if not isinstance(data, dict):
        return wrong
    seqs, reason, everything = data.get("seqs"), data.get("reason"), data.get("all")
    if seqs is not None and (
        not isinstance(seqs, list) or not seqs or not all(type(s) is int for s in seqs)
    ):
        return "'seqs' must be a non-empty list of dead letters' seq numbers"
    if reason is not None and not (isinstance(reason, str) and reason):
        return "'reason' must be a reason such as 'rejected' or 'expired'"
    if seqs is None and reason is None and everything is not True:
        return wrong
    return seqs, reason


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_ACTION_BYTES:
            break
    return body[:MAX_ACTION_BYTES]
