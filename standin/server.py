"""A stand-in for Yespo: a real HTTP server that follows the contract, records, misbehaves.

Yespo cannot be reached from tests or benchmarks, so this server takes its place: it
answers Generate event (``POST {base}/v1/event``, ``/v2/event``) and Add orders
(``POST {base}/v1/orders``) with Yespo's checks (as its API documentation gives them),
records what it accepts, and misbehaves on demand (`standin.faults.Faults`).
Events Yespo answers 200 but silently drops (`standin.checks.ignored_reason`)
get their 200 too, and are recorded apart, with the reason, never among the events.

Control API, no auth, for tests and for people trying the collector out::

    GET    /_standin/events[?since=SEQ&limit=N]   {"events": [{path, body, at, seq}], "last_seq"}
    GET    /_standin/orders[?since=SEQ&limit=N]   the Add-orders arrival log, one record per order
    GET    /_standin/orders/latest                {"orders": {externalOrderId: order}}
    GET    /_standin/ignored[?since=SEQ&limit=N]  the events Yespo would drop, each with a reason
    DELETE /_standin/events                       forget records and stats (seq keeps counting)
    GET    /_standin/stats                        requests by path and status
    GET|POST|DELETE /_standin/faults              read, replace, clear the fault plan
    POST   /_standin/key {"key": "..."}           change the API key

Run it: ``python -m standin --port 9090`` and point the collector at
``YESPO_API_URL=http://127.0.0.1:9090/api``. In tests: ``async with StandIn() as yespo:``.
"""

from __future__ import annotations

import asyncio
import binascii
import signal
from base64 import b64decode
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click
import orjson
from aiohttp import web

from standin.checks import (
    MAX_EVENT_BODY,
    MAX_ORDERS,
    created_order,
    event_problem,
    ignored_reason,
    order_problem,
)
from standin.faults import Faults, FaultsError, RejectIf
from standin.records import Recorded, RecordLog, Row

__all__ = ["Faults", "Recorded", "StandIn", "main"]

# Add orders takes up to 1000 orders, which with items can run to megabytes; the event size
# limit is Yespo's own check (a 400), not a transport limit, so the server reads any body.
CLIENT_MAX_SIZE = 64 * 1024 * 1024
# Requests still running at stop() (delays) get this long before they are cancelled.
SHUTDOWN_TIMEOUT_S = 1.0
CONTROL = "/_standin"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What a Yespo endpoint makes of a body it got past faults and auth: the reply, and whether
# anything was recorded (only then can drop_reply lose the reply).
Accept = Callable[[str, bytes, Faults], tuple[web.Response, bool]]
_V = TypeVar("_V")


class StandIn:
    """Yespo's API on a local port: checks like Yespo, records, misbehaves on demand.

    `faults` may be replaced at any time (``standin.faults = Faults(status=503)``); a
    request uses the plan in force when it arrived.
    """

    def __init__(
        self, *, api_key: str = "yespo-key", base: str = "/api", max_records: int = 1_000_000
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.base = "/" + base.strip("/") if base.strip("/") else ""
        self.max_records = max_records
        self.faults = Faults()
        self.url = ""  # the base URL, once started: the collector's YESPO_API_URL
        self.control_url = ""
        self._api_key = api_key
        self._good_auth: set[str] = set()  # Authorization headers already checked
        self._events = RecordLog(max_records)
        self._orders = RecordLog(max_records)
        self._ignored = RecordLog(max_records)
        self._latest: dict[str, Row] = {}
        # The orders Generate event created (orderCreated, orderUpdated), oldest first: with
        # _latest, the orders Yespo has, which orderDelivered and orderCancelled need.
        self._event_orders: dict[str, None] = {}
        # How many times each event body is recorded: duplicate detection's index, kept
        # only while that fault is on.
        self._bodies: dict[bytes, int] | None = None
        self._stats: dict[tuple[str, int | str], int] = {}
        self._held: set[asyncio.BaseTransport] = set()
        self._runner: web.AppRunner | None = None

    # -- in-process API -------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        return self._api_key

    @api_key.setter
    def api_key(self, key: str) -> None:
        self._api_key = key
        self._good_auth.clear()

    @property
    def events(self) -> list[Recorded]:
        """The recorded events, oldest first (a copy)."""
        return self._events.all()

    @property
    def orders(self) -> list[Recorded]:
        """Every accepted order in arrival order, one record per order (a copy)."""
        return self._orders.all()

    @property
    def ignored(self) -> list[Recorded]:
        """Events answered 200 that Yespo would drop, oldest first, each with its reason."""
        return self._ignored.all()

    @property
    def latest_orders(self) -> dict[str, Any]:
        """The latest version of each order by externalOrderId, as Add orders upserts."""
        return {order_id: orjson.loads(row[3]) for order_id, row in self._latest.items()}

    async def wait_for_events(self, count: int, within_s: float = 5.0) -> list[Recorded]:
        """Wait until at least `count` events are recorded; TimeoutError after `within_s` s."""
        return await self._events.wait(count, within_s)

    async def wait_for_orders(self, count: int, within_s: float = 5.0) -> list[Recorded]:
        return await self._orders.wait(count, within_s)

    async def wait_for_ignored(self, count: int, within_s: float = 5.0) -> list[Recorded]:
        return await self._ignored.wait(count, within_s)

    @property
    def held(self) -> int:
        """Requests held unanswered right now (the hang and drop_reply faults)."""
        return len(self._held)

    def stats(self) -> dict[str, Any]:
        """Requests to the Yespo endpoints by path and status ("hung", "dropped" included)."""
        by_path: dict[str, dict[str, int]] = {}
        for (path, status), count in sorted(self._stats.items(), key=str):
            by_path.setdefault(path, {})[str(status)] = count
        return {
            "requests": by_path,
            "events": len(self._events),
            "orders": len(self._orders),
            "latest_orders": len(self._latest),
            "ignored": len(self._ignored),
        }

    def clear(self) -> None:
        """Forget records and stats; faults, key and sequence numbers stay."""
        self._events.clear()
        self._orders.clear()
        self._ignored.clear()
        self._latest.clear()
        self._event_orders.clear()
        self._bodies = None
        self._stats.clear()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0: any free port); return the base URL."""
        if self._runner is not None:
            raise RuntimeError("the stand-in is already running")
        runner = web.AppRunner(
            self.app(),
            handler_cancellation=True,  # a client that gives up ends its held request
            access_log=None,  # a log line per request would cost more than the request
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=1024).start()
        except BaseException:  # e.g. the port is taken: leave nothing half-open
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0][1]
        netloc = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        self.url = f"http://{netloc}{self.base}"
        self.control_url = f"http://{netloc}{CONTROL}"
        return self.url

    async def stop(self) -> None:
        """Close held connections, then stop listening and end the running requests."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for transport in list(self._held):
            transport.close()
        await runner.cleanup()

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        add = app.router.add_route
        for path, accept in (
            ("/v1/event", self._accept_event),
            ("/v2/event", self._accept_event),
            ("/v1/orders", self._accept_orders),
        ):
            add("POST", self.base + path, self._yespo(self.base + path, accept))
        add("GET", f"{CONTROL}/events", self._get_events)
        add("DELETE", f"{CONTROL}/events", self._clear)
        add("GET", f"{CONTROL}/orders", self._get_orders)
        add("GET", f"{CONTROL}/orders/latest", self._get_latest_orders)
        add("GET", f"{CONTROL}/ignored", self._get_ignored)
        add("GET", f"{CONTROL}/stats", self._get_stats)
        add("GET", f"{CONTROL}/faults", self._get_faults)
        add("POST", f"{CONTROL}/faults", self._set_faults)
        add("DELETE", f"{CONTROL}/faults", self._clear_faults)
        add("POST", f"{CONTROL}/key", self._set_key)
        return app

    # -- Yespo's endpoints ----------------------------------------------------------------

    def _yespo(self, path: str, accept: Accept) -> Handler:
        """The handler of one Yespo endpoint: faults, then auth, then `accept`."""

        async def handle(request: web.Request) -> web.StreamResponse:
            faults = self.faults
            if faults.hang and faults.roll(faults.hang):
                self._count(path, "hung")
                await self._hold(request, close=False)
            if faults.delay_ms:
                await asyncio.sleep(faults.delay_ms / 1000)
            raw = await request.read()
            status = faults.take_status()
            if status is not None:
                response, recorded = _fault_reply(status, faults.retry_after), False
            elif not self._authorized(request.headers.get("Authorization")):
                response, recorded = _unauthorized(), False
            else:
                response, recorded = accept(path, raw, faults)
            if recorded and faults.drop_reply and faults.roll(faults.drop_reply):
                self._count(path, "dropped")
                await self._hold(request, close=True)
            self._count(path, response.status)
            return response

        return handle

    def _authorized(self, header: str | None) -> bool:
        """HTTP Basic, any user name, the API key as the password."""
        if header is None:
            return False
        if header in self._good_auth:
            return True
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if decoded.partition(":")[2] != self._api_key:
            return False
        if len(self._good_auth) < 64:  # a few clients, not a memory leak under a fuzzer
            self._good_auth.add(header)
        return True

    def _accept_event(self, path: str, raw: bytes, faults: Faults) -> tuple[web.Response, bool]:
        if len(raw) > MAX_EVENT_BODY:
            return _bad(
                f"the body is {len(raw)} bytes; Generate event takes at most {MAX_EVENT_BODY}"
            ), False
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _bad(f"the body is not JSON: {exc}"), False
        problem = event_problem(body)
        if problem is not None:
            return _bad(problem), False
        reject = faults.reject_if
        if reject is not None and any(
            p["name"] == reject.param and p["value"] == reject.value for p in body["params"]
        ):
            return _json({"message": reject.message}, reject.status), False
        bodies = self._bodies
        if faults.duplicate_detection:
            if bodies is None:  # built when first needed, so the healthy path does not pay
                bodies = self._bodies = _count_bodies(self._events)
            if raw in bodies:
                return _bad("Duplicated request"), False
        elif bodies is not None:
            bodies = self._bodies = None
        reason = ignored_reason(body, self._has_order)
        if reason is not None:  # Yespo's 200 all the same: the sender is never told
            self._ignored.add(path, raw, reason)
            return web.Response(), True
        order_id = created_order(body)
        if order_id is not None:
            _remember(self._event_orders, order_id, None, self.max_records)
        _, evicted = self._events.add(path, raw)
        if bodies is not None:
            bodies[raw] = bodies.get(raw, 0) + 1
            if evicted is not None:
                left = bodies.pop(evicted[3], 1) - 1
                if left:
                    bodies[evicted[3]] = left
        return web.Response(), True

    def _accept_orders(self, path: str, raw: bytes, faults: Faults) -> tuple[web.Response, bool]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _bad(f"the body is not JSON: {exc}"), False
        orders = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(orders, list):
            return _bad('the body must be {"orders": [...]}'), False
        if not 1 <= len(orders) <= MAX_ORDERS:
            return _bad(f"{len(orders)} orders; Add orders takes 1 to {MAX_ORDERS}"), False
        failed: list[dict[str, Any]] = []
        reject = faults.reject_if
        if reject is not None and reject.whole_request:
            for order in orders:
                if _matches(order, reject):
                    message = f"{reject.message} (externalOrderId {order.get('externalOrderId')})"
                    return _json({"message": message}, reject.status), False
        for order in orders:
            problem = order_problem(order)
            if problem is None and reject is not None and _matches(order, reject):
                problem = reject.message
            if problem is not None:
                order_id = order.get("externalOrderId") if isinstance(order, dict) else None
                failed.append({"externalOrderId": order_id, "message": problem})
                continue
            row, _ = self._orders.add(path, orjson.dumps(order))
            _remember(self._latest, str(order["externalOrderId"]), row, self.max_records)
        return _json({"failedOrders": failed}), len(failed) < len(orders)

    async def _hold(self, request: web.Request, *, close: bool) -> NoReturn:
        """Never reply: the handler ends when the connection does (client, or stop())."""
        transport = request.transport
        if transport is not None:
            self._held.add(transport)
            if close:
                transport.close()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            if transport is not None:
                self._held.discard(transport)
        raise AssertionError("unreachable: only cancellation ends a held request")

    def _has_order(self, order_id: str) -> bool:
        return order_id in self._event_orders or order_id in self._latest

    def _count(self, path: str, status: int | str) -> None:
        key = (path, status)
        self._stats[key] = self._stats.get(key, 0) + 1

    # -- control API ----------------------------------------------------------------------

    async def _get_events(self, request: web.Request) -> web.Response:
        return _records(request, self._events, "events")

    async def _get_orders(self, request: web.Request) -> web.Response:
        return _records(request, self._orders, "orders")

    async def _get_ignored(self, request: web.Request) -> web.Response:
        return _records(request, self._ignored, "ignored")

    async def _get_latest_orders(self, request: web.Request) -> web.Response:
        latest = {order_id: orjson.Fragment(row[3]) for order_id, row in self._latest.items()}
        return _json({"orders": latest})

    async def _clear(self, request: web.Request) -> web.Response:
        self.clear()
        return _json({"cleared": True})

    async def _get_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _json(self.faults.to_json())

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults = Faults.from_json(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, FaultsError) as exc:
            return _bad(str(exc))
        return _json(self.faults.to_json())

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.faults = Faults()
        return _json(self.faults.to_json())

    async def _set_key(self, request: web.Request) -> web.Response:
        try:
            key = orjson.loads(await request.read()).get("key")
        except (orjson.JSONDecodeError, AttributeError):
            key = None
        if not isinstance(key, str) or not key:
            return _bad('the body must be {"key": "the new API key"}')
        self.api_key = key
        return _json({"key_changed": True})


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _bad(message: str) -> web.Response:
    return _json({"message": message}, 400)


def _unauthorized() -> web.Response:
    return web.Response(status=401, text="Unauthorized: the API key is wrong or disabled")


def _fault_reply(status: int, retry_after: int | None) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    if status == 400:
        return web.Response(
            status=400,
            headers=headers,
            body=orjson.dumps({"message": "rejected by the stand-in's status fault"}),
            content_type="application/json",
        )
    return web.Response(status=status, headers=headers, text=f"stand-in fault: {status}")


def _matches(order: Any, reject: RejectIf) -> bool:
    value = order.get(reject.param) if isinstance(order, dict) else None
    return isinstance(value, str | int | float) and str(value) == reject.value


def _remember(latest: dict[str, _V], key: str, value: _V, bound: int) -> None:
    """Set `key` as the most recent entry of `latest`, dropping the oldest past `bound`."""
    latest.pop(key, None)  # re-insert: the dict's order is recency
    latest[key] = value
    if len(latest) > bound:
        del latest[next(iter(latest))]


def _count_bodies(log: RecordLog) -> dict[bytes, int]:
    counts: dict[bytes, int] = {}
    for row in log.rows:
        counts[row[3]] = counts.get(row[3], 0) + 1
    return counts


def _records(request: web.Request, log: RecordLog, name: str) -> web.Response:
    try:
        since = int(request.query.get("since", "0"))
        limit = int(request.query["limit"]) if "limit" in request.query else None
    except ValueError:
        return _bad("since and limit must be integers")
    records = log.since(since, limit)
    return _json({name: [r.as_json() for r in records], "last_seq": log.last_seq})


async def _serve(stand_in: StandIn, host: str, port: int) -> None:
    url = await stand_in.start(host, port)
    click.echo(f"Yespo stand-in: YESPO_API_URL={url}  control: {stand_in.control_url}", err=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await stand_in.stop()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=9090, show_default=True, help="Port to listen on.")
@click.option(
    "--api-key",
    default="yespo-key",
    show_default=True,
    envvar="STANDIN_API_KEY",
    help="The password Basic auth must carry [STANDIN_API_KEY].",
)
@click.option("--base", default="/api", show_default=True, help="Path prefix of Yespo's API.")
@click.option(
    "--max-records",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Records kept of each kind; the oldest go first.",
)
@click.option(
    "--faults", "faults_json", help="A fault plan to start with, e.g. '{\"status\": 503}'."
)
def main(
    host: str, port: int, api_key: str, base: str, max_records: int, faults_json: str | None
) -> None:
    """Serve a stand-in for Yespo's API until SIGINT or SIGTERM."""
    stand_in = StandIn(api_key=api_key, base=base, max_records=max_records)
    if faults_json is not None:
        try:
            stand_in.faults = Faults.from_json(orjson.loads(faults_json))
        except (orjson.JSONDecodeError, FaultsError) as exc:
            raise click.BadParameter(str(exc), param_hint="--faults") from None
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:  # uvloop comes with uvicorn[standard]: about twice the requests per second
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(stand_in, host, port))
