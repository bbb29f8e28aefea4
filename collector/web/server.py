"""The HTTP server: uvicorn, with each response's writes handed to the socket at once.

uvicorn writes a response in two calls, the status line and headers, then the body, and
each becomes its own `send()` system call and, on loopback, its own TCP segment that
wakes the client twice. On a small VM a system call costs several microseconds, which
for a small JSON reply is a fifth of the whole request. `CorkedTransport` collects the
writes made during one turn of the event loop and sends them as one: the reply leaves
within the same loop iteration, in one segment. (The bare 204 answer has no body, so a
request that answers 204 is unaffected; a JSON reply gets the single write it deserves.)
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport whose writes in one loop iteration reach the socket as one write."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()  # what was written before close() still goes out, as with a transport
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# A request's line and headers may take this many bytes. uvicorn's httptools server keeps
# any amount in memory (one 200 MB header block took the process from 59 to 255 MB);
# nginx allows 32 KB by default.
MAX_HEAD_BYTES = 64 * 1024
# A request must arrive whole (line, headers and body) within this many seconds of its
# first byte, or of the connection's start: uvicorn's httptools server waits forever for
# a client that sends part of a request, or nothing (each holds a socket).
REQUEST_TIMEOUT_S = 30.0
_SWEEP_EVERY_S = 1.0
HEAD_TOO_LARGE = f"the request line and headers are over the limit of {MAX_HEAD_BYTES:,} bytes"


# Answers that never end on their own: server-sent events.
ENDLESS = frozenset({"/inspect/stream"})


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CorkedTransport`, with a bound on a request's
    head (`MAX_HEAD_BYTES`, else 431) and on the time it takes to arrive
    (`REQUEST_TIMEOUT_S`, else 408 and the connection is closed).

    Both cost a request next to nothing: the head is counted only while it is incomplete
    after a read, and a completed head is measured only when the reads it came in add up
    to more than the bound (a request of a few KB in one read, the usual case, never is);
    one sweep per second for all connections watches for a request that stays unfinished.
    """

    _head_of: object = None  # the cycle before the head being counted
    _head_bytes = 0
    # Bytes received since the start of the read in which the last head was completed: the
    # next head to complete is within them, so while they are few it cannot be too large.
    _window = 0
    _read = 0  # the size of the read being parsed
    _stuck: tuple[object, float] | None = None  # (cycle, first seen unfinished), by sweep

    def shutdown(self) -> None:
        """A graceful shutdown waits for the answers in progress; an endless one (the
        inspector's stream) is cut at once instead, which its reader takes for the
        restart it is (it reconnects): else every open page would hold a stop for the
        whole of uvicorn's graceful timeout."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.scope["path"] in ENDLESS:
            self.transport.close()
            return
        super().shutdown()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        corked: Any = CorkedTransport(transport, self.loop)
        super().connection_made(corked)
        _sweep_later(self.loop, self.connections)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        # uvicorn leaves `more_body` set on a request answered before its body was read
        # (a 401, 404 or 413): its later bytes count as a head then, not as a body.
        reading_body = cycle is not None and cycle.more_body and not cycle.response_complete
        self._read = len(data)
        self._window += self._read
        super().data_received(data)
        if self.cycle is cycle and not reading_body:
            # No body was being read and no head was completed by this read: a head is
            # (a body's last read, which completes its request, is not one).
            if self._head_of is not cycle:
                self._head_of, self._head_bytes = cycle, 0
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._refuse(431, "Request Header Fields Too Large", HEAD_TOO_LARGE)

    def on_headers_complete(self) -> None:
        # A head that arrived whole within reads that together pass the bound (one large
        # read, or the last of several) is measured; it goes to an app that answers 431.
        if self._window > MAX_HEAD_BYTES and self._head_size() > MAX_HEAD_BYTES:
            app, self.app = self.app, _head_too_large
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        self._window = self._read  # the rest of this read may begin the next head

    def _head_size(self) -> int:
        """The bytes of the request line, the headers and the blank line after them, as
        written without optional spaces ("GET /path HTTP/1.1", "Name: value")."""
        size = len(self.parser.get_method()) + len(self.url) + 14
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    def _receiving(self) -> bool:
        """A request is on its way: nothing yet on a new connection, a head after the
        last response (uvicorn's keep-alive timer is off once a byte came), or a body."""
        cycle = self.cycle
        if cycle is None:
            return True
        if cycle.response_complete:
            return self.timeout_keep_alive_task is None
        return cycle.more_body

    def send_400_response(self, msg: str) -> None:
        """Bytes the HTTP parser refuses (a NUL in the path, two Content-Lengths, TLS sent
        to the plain port): uvicorn's answer is text; the collector's refusals are JSON."""
        self._refuse(400, "Bad Request", "the request is not valid HTTP/1.1")

    def _unsupported_upgrade_warning(self) -> None:
        """Nothing to say: with ws="none" a request asking for a WebSocket (or any other
        protocol) is answered as the plain HTTP request it also is. uvicorn logs two
        warnings for each, one of them advice to install a WebSocket library: anyone could
        fill the log with them."""

    def _refuse(self, status: int, phrase: str, reason: str) -> None:
        self.transport.write(refusal(status, phrase, reason))
        self.transport.close()


async def _head_too_large(scope: Any, receive: Any, send: Any) -> None:
    """Answers a request whose head passed `MAX_HEAD_BYTES`, and closes the connection."""
    body = orjson.dumps({"error": HEAD_TOO_LARGE})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def refusal(status: int, phrase: str, reason: str) -> bytes:
    """A whole HTTP answer that closes the connection, with `reason` as the collector words
    its refusals (`{"error": ...}`): the protocol answers before any endpoint is chosen."""
    body = orjson.dumps({"error": reason})
    head = f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
    head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    return head.encode() + body


# How uvicorn runs the collector, in `collector serve` and in the tests alike.
UVICORN_OPTIONS: dict[str, Any] = {
    "http": CorkedHttpToolsProtocol,  # one write per response, bounded requests (above)
    # No endpoint speaks WebSocket: an Upgrade request is answered as the plain HTTP
    # request it also is, not handed to the websockets library (whose 403 had no body).
    "ws": "none",
    "access_log": False,  # one log line per event request would cost more than the request
    "server_header": False,
    # uvicorn's X-Forwarded-* parsing stays off: only the browser endpoint's ceiling reads
    # the client's address, and it believes X-Forwarded-For from COLLECTOR_TRUSTED_PROXIES
    # only (web/ratelimit.py); nothing reads the scheme (origins are checked by their Host).
    "proxy_headers": False,
}


_sweeping: set[asyncio.AbstractEventLoop] = set()


def _sweep_later(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Once per loop: every _SWEEP_EVERY_S, close the connections whose request has stayed
    unfinished for longer than REQUEST_TIMEOUT_S."""
    if loop in _sweeping:
        return
    _sweeping.add(loop)

    def sweep() -> None:
        now = loop.time()
        for protocol in list(connections):
            if not isinstance(protocol, CorkedHttpToolsProtocol) or protocol.transport.is_closing():
                continue
            if not protocol._receiving():
                protocol._stuck = None
                continue
            stuck = protocol._stuck
            if stuck is None or stuck[0] is not protocol.cycle:
                protocol._stuck = (protocol.cycle, now)
            elif now - stuck[1] > REQUEST_TIMEOUT_S:
                reason = f"the request did not arrive whole within {REQUEST_TIMEOUT_S:g} s"
                protocol._refuse(408, "Request Timeout", reason)
        if connections:
            loop.call_later(_SWEEP_EVERY_S, sweep)
        else:
            _sweeping.discard(loop)  # the next connection starts it again

    loop.call_later(_SWEEP_EVERY_S, sweep)


# Young objects between collections of generation 0 (Python's default is 700). A batch of
# events is thousands of small dicts that live until their commit; at 700 the collector
# keeps tracing them, and promotes enough of them to trigger full collections over every
# object of the process. 50,000 such objects are a few MB.
GC_GEN0_THRESHOLD = 50_000


# How long a thread may hold the GIL while another waits for it (Python's default is 5 ms).
# The spool's writer thread needs the GIL for a moment between its SQLite statements, which
# run without it; at 5 ms it waited that long after each statement while the loop's thread
# worked, and the group's requests waited with it. 0.2 ms against 0.5 ms, medians of 3
# alternated runs: batches of 100 945 against 795 req/s, single events 14,166 against
# 13,518 (1, 2 and 5 ms did no better than 0.5 in earlier comparisons).
SWITCH_INTERVAL_S = 0.0002


def tune_runtime() -> None:
    """Freeze what start-up made (modules, classes: never garbage) out of the garbage
    collector's sight, collect young objects less often (measured with bench/ingest.py,
    batches of 100: about 18% less CPU per request, the same as with the collector off),
    and hand the GIL over sooner (`SWITCH_INTERVAL_S`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
