"""Yespo's own API, spoken by the collector: POST /api/v1/event and /api/v2/event
(Generate event) and /api/v1/orders (Add orders), Basic auth with a collector key.

A backend already wired to Yespo points its base URL here and keeps its code; it hears
refusals in Yespo's form (`message`), and precise ones where Yespo would drop silently.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequest, FieldError
from ..inspect.journal import ONE, ORDERS
from ..normalize import Normalized, normalize_order, normalize_yespo_event
from ..normalize.orders import MAX_ORDERS_PER_REQUEST
from ..normalize.values import is_json_int
from ..web.auth import ApiKeys
from ..web.http import json_response, parse_json, read_body
from .base import Counters, Source, field_errors, join_path


class YespoCompat(Source):
    """Yespo's Generate-event and Add-orders endpoints, bound to one spool."""

    def setup(self) -> None:
        s = self.settings
        self.keys = ApiKeys(s.api_keys, s.generated_key)
        self.max_body = s.max_body_bytes
        self._on_event = Counters(self.metrics, "yespo_event")
        self._on_orders = Counters(self.metrics, "yespo_orders")
        self.counters = (self._on_event, self._on_orders)

    async def event(self, request: Request) -> Response:
        """POST /api/v1/event and /api/v2/event: Yespo's Generate-event body."""
        self.keys.check_basic(request)
        body = await read_body(request, self.max_body)
        data = parse_json(body)
        self._on_event.received += 1
        out = normalize_yespo_event(data, self.rules, self._new_id)
        if self.journal.on or (type(out) is not Normalized and self.journal.live):
            self.journal.ingest("yespo", body, [out], 400, ONE)
        if not isinstance(out, Normalized):
            self._on_event.rejected += 1
            message = "; ".join(f"{e.field}: {e.message}" for e in out)
            return json_response({"message": message, "errors": field_errors(out)}, 400)
        await self._append([out], self._on_event)
        # Yespo answers an accepted event with an empty 200.
        return Response(status_code=200)

    async def orders(self, request: Request) -> Response:
        """POST /api/v1/orders: Yespo's Add-orders body, up to 1000 orders."""
        self.keys.check_basic(request)
        body = await read_body(request, self.max_body)
        data = parse_json(body)
        if not isinstance(data, dict) or not isinstance(data.get("orders"), list):
            raise BadRequest('body must be {"orders": [orders]}')
        orders = data["orders"]
        if not orders:
            raise BadRequest("'orders' is empty")
        if len(orders) > MAX_ORDERS_PER_REQUEST:
            raise BadRequest(
                f"{len(orders)} orders in one request; Yespo takes at most {MAX_ORDERS_PER_REQUEST}"
            )
        self._on_orders.received += len(orders)
        good: list[Normalized] = []
        failed: list[dict[str, Any]] = []
        outs: list[Normalized | list[FieldError]] = []
        for index, raw in enumerate(orders):
            out = normalize_order(raw, self.rules, self._new_id)
            outs.append(out)
            if isinstance(out, Normalized):
                good.append(out)
                continue
            prefix = f"orders[{index}]"
            item: dict[str, Any] = {"index": index}
            order_id = raw.get("externalOrderId") if isinstance(raw, dict) else None
            if isinstance(order_id, str) or (type(order_id) is int and is_json_int(order_id)):
                item["externalOrderId"] = order_id  # echoed only as it can be written back
            item["message"] = "; ".join(f"{join_path(prefix, e.field)}: {e.message}" for e in out)
            item["errors"] = field_errors(out, prefix)
            failed.append(item)
        self._on_orders.rejected += len(failed)
        if self.journal.on or (failed and self.journal.live):
            self.journal.ingest("yespo", body, outs, 200, ORDERS, "orders")
        # The reply is made first: once the good orders are committed, nothing may fail.
        reply = json_response({"failedOrders": failed})
        await self._append(good, self._on_orders)
        return reply
