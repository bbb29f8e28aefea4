"""`collector tail`: the inspector's stream in a terminal, one line per step.

Reads /inspect/stream over HTTP like the page does, and reconnects (with Last-Event-ID,
so nothing is shown twice or missed while the buffer holds it) when the collector
restarts, saying so on stderr."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlencode

import aiohttp
import orjson

# Between attempts to reach a collector that went away: soon enough to miss little of a
# restart, rare enough not to flood its log while it is down.
RETRY_S = 1.0


class TailError(Exception):
    """The stream cannot be read at all (wrong key, inspector off): said and exited."""


def describe(step: dict[str, Any]) -> str:
    """One step as a line: time, step, type, who, what, journey."""
    clock = time.strftime("%H:%M:%S", time.localtime(step["t"] / 1000))
    at = f"{clock}.{step['t'] % 1000:03d}"
    detail = step.get("detail") or {}
    who = step.get("keyValue") or (f"order {step['order']}" if step.get("order") else "-")
    what = ""
    name = step["step"]
    if name == "delivered":
        what = f"HTTP {detail.get('status')} {detail.get('ms')} ms"
    elif name == "retried":
        status = detail.get("status")
        what = (f"HTTP {status}" if status else "no answer") + f", attempt {detail.get('attempt')}"
        if detail.get("next"):
            what += ", next " + time.strftime("%H:%M:%S", time.localtime(detail["next"] / 1000))
    elif name == "dead":
        what = (
            f"{detail.get('reason')} HTTP {detail.get('status')}: {str(detail.get('answer'))[:80]}"
        )
    elif name == "refused":
        what = "; ".join(f"{e['field']}: {e['message']}" for e in detail.get("errors", []))
    elif name == "held":
        what = f"held for {detail.get('visitor')}"
    elif name == "normalized":
        what = f"to {detail.get('endpoint')}"
    elif name == "received":
        what = f"from {step['source']}"
    journey = step["journey"]
    short = journey if len(journey) <= 10 else journey[:8] + "…"
    return f"{at} {name:<10} {step.get('type') or '-':<16} {who}  {what}  ({short})"


@dataclass
class Tail:
    url: str
    key: str
    query: dict[str, str]
    as_json: bool
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    last_id: str | None = None

    def _say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    async def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        stream = self.url.rstrip("/") + "/inspect/stream"
        if self.query:
            stream += "?" + urlencode(self.query)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
        away = False
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not stop():
                headers = {"Authorization": f"Bearer {self.key}"}
                if self.last_id:
                    headers["Last-Event-ID"] = self.last_id
                try:
                    async with http.get(stream, headers=headers) as resp:
                        if resp.status == 401:
                            raise TailError(f"{self.url} refused the inspector key (401)")
                        if resp.status == 404:
                            raise TailError(
                                f"{self.url} has no inspector: start it with COLLECTOR_INSPECT_KEY"
                            )
                        if resp.status != 200:
                            raise aiohttp.ClientResponseError(
                                resp.request_info, (), status=resp.status
                            )
                        if away:
                            self._say(f"reconnected to {self.url}")
                            away = False
                        await self._read(resp)
                except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                    if not away:
                        since = f" after step {self.last_id}" if self.last_id else ""
                        self._say(
                            f"lost {self.url} ({exc.__class__.__name__}); reconnecting,"
                            f" to resume{since}…"
                        )
                        away = True
                    await asyncio.sleep(RETRY_S)
                    continue
                if not away:  # the collector ended the stream (it stops): go on after it
                    since = f" after step {self.last_id}" if self.last_id else ""
                    self._say(f"{self.url} closed the stream; reconnecting, to resume{since}…")
                    away = True
                await asyncio.sleep(RETRY_S)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        event, event_id, data = "message", None, b""
        async for raw in resp.content:
            line = raw.rstrip(b"\r\n")
            if not line:
                if event == "step" and data:
                    self._show(data)
                    if event_id:
                        self.last_id = event_id
                elif event == "skipped" and data:
                    info = orjson.loads(data)
                    self._say(
                        f"{info['skipped']} steps left out: over {info['limit']} a second the"
                        f" stream is a sample ({info['sample']}); filter to see them all"
                    )
                event, event_id, data = "message", None, b""
            elif line.startswith(b":"):
                continue
            else:
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if name == b"event":
                    event = value.decode()
                elif name == b"id":
                    event_id = value.decode()
                elif name == b"data":
                    data = value

    def _show(self, data: bytes) -> None:
        if self.as_json:
            print(data.decode(), file=self.out, flush=True)
        else:
            print(describe(orjson.loads(data)), file=self.out, flush=True)
