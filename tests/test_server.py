"""The HTTP protocol: a response's writes reach the socket as one write, and a request's
head and arrival time are bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.web import server
from collector.web.server import CorkedTransport

from .conftest import Process, free_port, serve


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


async def test_writes_in_one_loop_turn_go_out_as_one() -> None:
    raw = FakeTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    corked.write(b"{}")
    assert raw.writes == []
    assert corked.get_write_buffer_size() == 40
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    corked.write(b"next")
    await asyncio.sleep(0)
    assert raw.writes[1:] == [b"next"]


async def test_close_sends_what_was_written_first_and_other_calls_pass_through() -> None:
    raw = FakeTransport()
    corked = CorkedTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"bye")
    corked.write(b"")  # nothing to send: no empty write either
    corked.close()
    assert raw.writes == [b"bye"] and raw.closed
    assert corked.get_extra_info("peername") == ("127.0.0.1", 1)
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert raw.writes == [b"bye"]


# --- the protocol's bounds, over real sockets ----------------------------------------------


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (message := await receive())["type"] == "http.request" and message.get("more_body"):
        pass
    if message["type"] != "http.request":
        return  # the client went away
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _read_all(reader: asyncio.StreamReader, within_s: float) -> bytes:
    return await asyncio.wait_for(reader.read(), within_s)


def _json_reason(answer: bytes) -> str:
    """The `error` of a raw HTTP answer with a JSON body (every refusal has one)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    reason: str = orjson.loads(body)["error"]
    return reason


async def test_a_request_head_past_its_bound_is_refused_and_the_connection_closed() -> None:
    async with serve(_hello) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(100):  # 100 x 1 KB, never finished
            writer.write(b"a" * 1024)
            await writer.drain()
        answer = await _read_all(reader, 5)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
        assert "65,536 bytes" in _json_reason(answer)
        writer.close()
        # a plain request still works
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await _read_all(reader, 5)).startswith(b"HTTP/1.1 200")
        writer.close()


HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "


@pytest.mark.parametrize(
    "writes",
    [
        [HEAD + b"a" * 64 * 1024 + b"\r\n\r\n"],  # a whole head in one read
        [HEAD + b"a" * 100_000 + b"\r\n\r\n"],
        [HEAD + b"a" * 60_000, b"a" * 10_000 + b"\r\n\r\n"],  # its last read completes it
        # behind a small request, in the same read as it, then finished by a small read
        [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + HEAD + b"a" * 60_000, b"a" * 10_000 + b"\r\n\r\n"],
    ],
    ids=["64KB-at-once", "100KB-at-once", "finished-by-a-small-read", "pipelined"],
)
async def test_a_request_head_past_its_bound_is_refused_however_its_bytes_arrive(
    writes: list[bytes],
) -> None:
    async with serve(_hello) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.05)  # one read each, as far as the loopback allows
        answer = await _read_all(reader, 5)
        if len(writes) == 2 and writes[0].startswith(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            first, _, answer = answer.partition(b"\r\n0\r\n\r\n")  # the small one's answer
            assert first.startswith(b"HTTP/1.1 200"), first
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
        assert "65,536 bytes" in _json_reason(answer)
        writer.close()
        # a request just under the bound is taken, however it arrives
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(HEAD + b"a" * 60_000 + b"\r\nConnection: close\r\n\r\n")
        assert (await _read_all(reader, 5)).startswith(b"HTTP/1.1 200")
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /h\x00z HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # TLS to the plain port
    ],
    ids=["nul-in-path", "two-lengths", "bad-chunk", "tls"],
)
async def test_a_request_that_is_not_http_gets_400_with_a_json_reason(request_bytes: bytes) -> None:
    async with serve(_hello) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request_bytes)
        answer = await _read_all(reader, 5)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
        assert _json_reason(answer) == "the request is not valid HTTP/1.1"
        writer.close()


async def test_a_large_body_sent_after_its_head_is_no_head() -> None:
    # curl writes the head, then the body: the read that completes a 100 KB body is not
    # part of any head.
    async with serve(_hello) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = b"x" * 100_000
        head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(body)
        await writer.drain()
        assert (await _read_all(reader, 5)).startswith(b"HTTP/1.1 200")
        writer.close()


async def _early(scope: Any, receive: Any, send: Any) -> None:
    """Answers before reading the body (as a 401, 404 or 413 does)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_a_head_after_an_early_answer_is_still_bounded() -> None:
    async with serve(_early) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 404")
        writer.write(b"x" + b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(100):  # 100 x 1 KB of a header that never ends
            writer.write(b"a" * 1024)
            await writer.drain()
        try:  # closed at once by the head bound, not by the 30 s sweep
            answer = await _read_all(reader, 5)
        except ConnectionResetError:  # closed while this side still wrote: the 431 is lost
            answer = b"reset"
        assert b"431" in answer or answer == b"reset", answer[-200:]
        writer.close()


async def test_a_client_that_never_finishes_its_request_is_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "REQUEST_TIMEOUT_S", 0.5)
    monkeypatch.setattr(server, "_SWEEP_EVERY_S", 0.1)
    async with serve(_hello) as url:
        host, port = url.removeprefix("http://").split(":")
        silent = await asyncio.open_connection(host, int(port))  # sends nothing
        partial = await asyncio.open_connection(host, int(port))
        partial[1].write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        for reader, writer in (silent, partial):
            answer = await _read_all(reader, 5)  # ends: the server closed the connection
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert "within 0.5 s" in _json_reason(answer)
            writer.close()


async def test_an_upgrade_request_is_answered_as_plain_http_and_logs_nothing(
    tmp_path: Path, processes: list[Process]
) -> None:
    # No endpoint speaks WebSocket; handed to the websockets library, the request got an
    # empty 403, and with no library two warnings per request went to the log.
    env = {
        "COLLECTOR_SPOOL_URL": f"sqlite:///{tmp_path}/spool.db",
        "COLLECTOR_API_KEYS": "k",
        "COLLECTOR_FORWARD": "false",
    }
    log = tmp_path / "collector.log"
    proc = Process(free_port(), env, log)
    processes.append(proc)
    await proc.wait_ready()
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    upgrade = (
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert orjson.loads(await reader.readexactly(length))["status"] == "ok"
    writer.close()
    proc.stop()
    text = log.read_text()
    assert "WARNING" not in text and "WebSocket" not in text, text
