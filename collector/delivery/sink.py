"""Where the forwarder sends: Yespo's API (`yespo.YespoClient`) or, in a dry run, the log."""

from __future__ import annotations

import logging
from typing import Protocol

from .yespo import Reply

log = logging.getLogger("collector.forward")


class Sink(Protocol):
    """Where entries go: Yespo's API (`YespoClient`) or the log (`DryRunSink`)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def send_event(self, body: bytes) -> Reply: ...
    async def send_orders(self, orders: list[bytes]) -> Reply: ...


class DryRunSink:
    """No Yespo key: every entry is "delivered" to the log in its Yespo form."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send_event(self, body: bytes) -> Reply:
        log.info("dry-run: would POST /v1/event %s", body.decode())
        return Reply(200, "")

    async def send_orders(self, orders: list[bytes]) -> Reply:
        log.info("dry-run: would POST /v1/orders with %d orders", len(orders))
        return Reply(200, '{"failedOrders":[]}')
