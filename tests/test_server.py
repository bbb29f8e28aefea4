"""The corked transport: a response's writes reach the socket as one write."""

from __future__ import annotations

import asyncio
from typing import Any

from collector.server import CorkedTransport


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
