"""Overloaded, the collector answers at once: past COLLECTOR_MAX_IN_FLIGHT ingest requests
in hand, the next is refused 503 + Retry-After before its body is read; health is
answered meanwhile, and the collector takes requests again as soon as it has room."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from .conftest import API_KEY, make_settings, running

EVENT = {
    "type": "pageViewed",
    "contact": {"email": "jane@example.com"},
    "properties": {"location": "https://shop.example/"},
}


@asynccontextmanager
async def half_sent(url: str) -> AsyncIterator[asyncio.StreamWriter]:
    """A POST /v1/events whose body has not all arrived yet: the collector holds it in
    hand. The writer sends the rest; the reply's status line is checked at the end."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    body = orjson.dumps(EVENT)
    writer.write(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    try:
        yield writer
        writer.write(body[10:])
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 200"), status_line
    finally:
        writer.close()


async def test_past_the_bound_requests_are_refused_at_once_and_health_still_answers(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path, max_in_flight=2)) as c:
        async with half_sent(c.url), half_sent(c.url):
            await asyncio.sleep(0.2)  # both are in hand, waiting for their bodies
            status, body = await c.post("/v1/events", EVENT)
            assert status == 503
            assert body["error"].startswith("events not stored, try again later")

            basic = base64.b64encode(f"x:{API_KEY}".encode()).decode()
            yespo_event = {"eventTypeKey": "pageViewed", "keyValue": "a@example.com"}
            async with c.http.post(
                c.url + "/api/v1/event",
                json=yespo_event,
                headers={"Authorization": f"Basic {basic}"},
            ) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "1"
                assert "message" in await resp.json()  # Yespo's form on Yespo's endpoint

            async with c.http.get(c.url + "/healthz") as resp:
                assert resp.status == 200
            async with c.http.get(c.url + "/metrics") as resp:
                assert 'errors_total{stage="overload"} 2.0' in await resp.text()
        # Both finished: room again.
        assert (await c.post("/v1/events", EVENT))[0] == 200
        assert c.app.in_flight == 0  # type: ignore[attr-defined]
