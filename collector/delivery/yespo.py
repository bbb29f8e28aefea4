"""The Yespo side: one aiohttp session for every upstream call, and what a reply means.

`classify` is pure: it turns an HTTP status and body into one of the outcomes the
forwarder acts on. The client never raises for an upstream problem; it returns a
`Reply` whose `status` is None when no HTTP answer came (timeout, connection error).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import enum
import math
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

# Yespo's reply to a request it already has. It comes with a 4xx status, but the data is
# there: treat it as delivered.
DUPLICATE_MARKER = "duplicated request"
# How much of an upstream error body is kept with a dead letter.
MAX_DETAIL_CHARS = 2000


class Outcome(enum.Enum):
    """What the forwarder does with an entry after one attempt."""

    DELIVERED = "delivered"  # 2xx, or "Duplicated request": acknowledge and remove
    REJECTED = "rejected"  # 400 and other refusals: dead-letter, never retry blindly
    RETRY = "retry"  # 429, 5xx, timeouts, connection errors: back off and retry
    AUTH = "auth"  # 401/403: the key is wrong; pause all delivery, lose nothing


@dataclass(frozen=True, slots=True)
class Reply:
    status: int | None  # None: no HTTP answer (timeout, connection refused, reset)
    body: str
    retry_after: float | None = None  # seconds, from a Retry-After header

    @property
    def outcome(self) -> Outcome:
        return classify(self.status, self.body)


def classify(status: int | None, body: str) -> Outcome:
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (401, 403):
        return Outcome.AUTH
    if status == 429 or status == 408 or status >= 500:
        return Outcome.RETRY
    if DUPLICATE_MARKER in body.lower():
        return Outcome.DELIVERED
    return Outcome.REJECTED


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from `now` (epoch seconds, default the clock): a number of
    seconds or an HTTP date (RFC 9110). None when absent or unusable (not finite, negative,
    not a date); a date in the past is 0."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # "-0000": UTC, as RFC 5322 reads it
                when = when.replace(tzinfo=datetime.UTC)
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return seconds if 0 <= seconds < math.inf else None


def failed_order_ids(body: str) -> dict[str, str] | None:
    """From an Add-orders 200 reply, the orders Yespo refused: externalOrderId -> reason.

    None when the body cannot be read as such a reply (then no order is known to have
    failed, and none is treated as failed)."""
    try:
        data: Any = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return None
    failed = data.get("failedOrders") if isinstance(data, dict) else None
    if failed is None:
        return {}
    if isinstance(failed, dict):
        # Yespo's own plugin types it `object | object[]`: one failed order as an object,
        # or (read the same way) a map of externalOrderId to its reason.
        if "externalOrderId" in failed:
            failed = [failed]
        else:
            failed = [
                {"externalOrderId": order_id, "message": reason}
                for order_id, reason in failed.items()
            ]
    if not isinstance(failed, list):
        return None
    out: dict[str, str] = {}
    for item in failed:
        if isinstance(item, dict) and "externalOrderId" in item:
            reason = item.get("message") or item.get("error") or orjson.dumps(item).decode()
            text = reason if isinstance(reason, str) else orjson.dumps(reason).decode()
            out[str(item["externalOrderId"])] = text
    return out


class YespoClient:
    """POSTs to Yespo over one keep-alive session with a bounded connection pool."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        event_version: str = "v1",
        timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.event_url = f"{self.base_url}/{event_version}/event"
        self.orders_url = f"{self.base_url}/v1/orders"
        # Yespo's auth: HTTP Basic, any user name, the API key as the password.
        token = base64.b64encode(b"collector:" + api_key.encode("latin-1")).decode()
        self._headers = {"Content-Type": "application/json", "Authorization": f"Basic {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers=self._headers,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes) -> Reply:
        assert self._session is not None, "start() the client first"
        try:
            async with self._session.post(url, data=body) as resp:
                text = await resp.text(errors="replace")
                return Reply(
                    resp.status,
                    # A 2xx is read whole: Add orders lists its failed orders in it.
                    text if 200 <= resp.status < 300 else text[:MAX_DETAIL_CHARS],
                    retry_after_seconds(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # noqa: UP041 (aiohttp raises both)
            return Reply(None, f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS])

    async def send_event(self, body: bytes) -> Reply:
        return await self.post(self.event_url, body)

    async def send_orders(self, orders: list[bytes]) -> Reply:
        return await self.post(self.orders_url, b'{"orders":[' + b",".join(orders) + b"]}")
