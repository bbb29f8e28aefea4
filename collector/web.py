"""Browsers: the tracking script, its endpoint, anonymous visitors, the demo shop.

The endpoint (``POST {web_path}``) takes ``{"siteKey", "anonymousId"?, "batch": [events]}``
as JSON or ``text/plain`` (a "simple" request: no CORS preflight, and what `sendBeacon`
sends). Site keys are public, so each is tied to the origins allowed to use it, and CORS
is answered for those origins only.

Anonymous visitors: Yespo drops events that name no contact, but most visitors identify
only at login or checkout. An event of a visitor nobody has identified is checked like
any other (with a stand-in contact) and held in the spool under its visitor id. An
``identify`` event names the contact: the visitor's held events become Yespo events with
that contact, in their original order, in the same transaction that records who the
visitor is; later events of the visitor get the contact attached here. Held events that
outlive `anonymous_max_age_s`, or pass `anonymous_max_events` per visitor, are dropped
and counted in the metrics.

One request is one visitor, and a visitor's requests are handled one at a time (a lock
per visitor), so an event being held cannot slip past the `identify` of another tab.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .config import Settings
from .contact import identity_problem, key_value, normalize_contact
from .errors import BadRequest, FieldError, Forbidden, PayloadTooLarge, RequestError, SpoolError
from .ingest import Counters, id_factory, json_response, parse_json, read_body, rules_from
from .metrics import Metrics
from .normalize import Normalized, normalize_event
from .spool import Spool

log = logging.getLogger("collector.web")

# navigator.sendBeacon refuses bodies over 64 KB, so the script never sends more.
MAX_WEB_BODY_BYTES = 64 * 1024
# The script sends at most 20 events per request; 100 leaves room for other senders.
MAX_WEB_BATCH = 100
# An anonymousId is the script's random id (or ours): short and cookie-safe.
_ANONYMOUS_ID = re.compile(r"[A-Za-z0-9_.-]{8,100}")
# The visitor cookie lives a year; each request refreshes it.
COOKIE_MAX_AGE_S = 365 * 24 * 3600
# Browsers cache a CORS preflight answer this long.
PREFLIGHT_MAX_AGE_S = 86400
# How often held events and remembered visitors are aged out.
SWEEP_EVERY_S = 60.0
# An anonymous event is checked with this contact in place of the one it will get.
_STAND_IN_CONTACT = {"email": "anonymous@collector.invalid"}
_IDENTIFY = "identify"
_BODY_KEYS = frozenset({"siteKey", "anonymousId", "batch", "v", "sentAt"})


def find_static_dir() -> Path:
    """`static/` of a checkout (or of the Docker image's working directory)."""
    beside_package = Path(__file__).resolve().parent.parent / "static"
    return beside_package if beside_package.is_dir() else Path.cwd() / "static"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        return cls(body, gzip.compress(body, 9, mtime=0), etag, media_type)

    def response(self, request: Request, max_age: int) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": f"public, max-age={max_age}"}
        headers["Vary"] = "Accept-Encoding"
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(self.gzipped, media_type=self.media_type, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


@dataclass(frozen=True, slots=True)
class Held:
    """An anonymous visitor's event as the spool holds it: the inbound event, contact-less."""

    message_id: str
    client_id: bool
    kind: str
    key: str
    event_type: str
    event_time: int | None
    body: bytes


def visitor_key(anonymous_id: str) -> str:
    return f"visitor:{anonymous_id}"


def request_origin(request: Request) -> str | None:
    """The page's origin: the Origin header, else the Referer's scheme and host."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return origin.rstrip("/")
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return None


def origin_allowed(origin: str, allowed: tuple[str, ...], request: Request) -> bool:
    for entry in allowed:
        if entry == "*" or entry == origin:
            return True
        # "self": the collector's own host (the scheme may differ behind a TLS proxy).
        if entry == "self" and urlsplit(origin).netloc == request.headers.get("host"):
            return True
    return False


class Web:
    """The browser endpoints, bound to one spool."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        metrics: Metrics,
        on_append: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self._on_append = on_append
        self.rules = rules_from(settings)
        self.sites = settings.site_origins()
        self._new_id = id_factory()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.static_dir = Path(settings.static_dir) if settings.static_dir else find_static_dir()
        self.script = self._load_script()
        self.demo = self._load_demo() if settings.demo else {}
        self._counters = Counters(metrics, "web")

    def flush_counters(self) -> None:
        self._counters.flush()

    # -- files ---------------------------------------------------------------------------

    def _load_script(self) -> Asset | None:
        path = self.static_dir / "y.js"
        if not path.is_file():
            log.warning("no tracking script at %s: set COLLECTOR_STATIC_DIR", path)
            return None
        return Asset.of(path.read_bytes(), "text/javascript; charset=utf-8")

    def _load_demo(self) -> dict[str, Asset]:
        """The demo shop's files, with the script and endpoint paths filled in."""
        root = self.static_dir / "demo"
        pages: dict[str, Asset] = {}
        if not root.is_dir():
            log.warning("COLLECTOR_DEMO is on but %s is missing", root)
            return pages
        types = {
            ".html": "text/html; charset=utf-8",
            ".css": "text/css; charset=utf-8",
            ".js": "text/javascript; charset=utf-8",
            ".svg": "image/svg+xml",
            ".png": "image/png",
        }
        for path in sorted(root.rglob("*")):
            media_type = types.get(path.suffix)
            if media_type is None or not path.is_file():
                continue
            body = path.read_bytes()
            if path.suffix == ".html":
                body = body.replace(b"__YC_SCRIPT__", self.settings.web_path.encode() + b".js")
                body = body.replace(b"__YC_ENDPOINT__", self.settings.web_path.encode())
            pages[path.relative_to(root).as_posix()] = Asset.of(body, media_type)
        return pages

    async def serve_script(self, request: Request) -> Response:
        if self.script is None:
            return json_response({"error": "the tracking script is not installed here"}, 404)
        # Short: a new release reaches pages within minutes; the ETag makes revisits cheap.
        return self.script.response(request, 300)

    async def serve_demo(self, request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        asset = self.demo.get(name)
        if asset is None:
            return json_response({"error": f"no demo page {name!r}"}, 404)
        return asset.response(request, 0)

    # -- CORS ----------------------------------------------------------------------------

    def _allowed_anywhere(self, origin: str, request: Request) -> bool:
        return any(origin_allowed(origin, o, request) for o in self.sites.values())

    @staticmethod
    def _cors(origin: str | None) -> dict[str, str]:
        if origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    async def preflight(self, request: Request) -> Response:
        """OPTIONS: only needed for JSON bodies; text/plain (the script's) skips it."""
        origin = request_origin(request)
        if origin is None or not self._allowed_anywhere(origin, request):
            return Response(status_code=403)
        headers = self._cors(origin)
        headers["Access-Control-Allow-Methods"] = "POST"
        headers["Access-Control-Allow-Headers"] = "Content-Type"
        headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
        return Response(status_code=204, headers=headers)

    # -- the endpoint --------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        """POST {web_path}: a batch of one visitor's events from the tracking script."""
        origin = request_origin(request)
        allowed: str | None = None
        try:
            data = parse_json(await read_body(request, MAX_WEB_BODY_BYTES))
            site_key, batch, given_id = self._envelope(data)
            origins = self.sites.get(site_key)
            if origins is None:
                raise Forbidden(f"unknown site key {site_key!r}")
            if origin is None:
                raise Forbidden("no Origin or Referer: browsers send one, so this is not a page")
            if not origin_allowed(origin, origins, request):
                raise Forbidden(f"site key {site_key!r} is not allowed on {origin}")
            allowed = origin
            anonymous_id = given_id or self._cookie_id(request) or self._new_visitor_id()
            self._counters.received += len(batch)
            async with self._visitor(anonymous_id):
                reply = await self._take(batch, anonymous_id)
        except RequestError as exc:
            self.metrics.refused_requests.labels("web", str(exc.status_code)).inc()
            return json_response({"error": exc.message}, exc.status_code, self._cors(allowed))
        response = json_response(reply, 200 if reply["accepted"] else 400, self._cors(allowed))
        response.set_cookie(
            self.settings.visitor_cookie,
            anonymous_id,
            max_age=COOKIE_MAX_AGE_S,
            domain=self.settings.cookie_domain,
            secure=origin.startswith("https:"),
            samesite="lax",
        )
        return response

    @staticmethod
    def _envelope(data: Any) -> tuple[str, list[Any], str | None]:
        if not isinstance(data, dict):
            raise BadRequest('body must be {"siteKey": ..., "batch": [events]}')
        unknown = sorted(k for k in data if k not in _BODY_KEYS)
        if unknown:
            raise BadRequest(f"unexpected {unknown}; the body holds siteKey, anonymousId, batch")
        site_key = data.get("siteKey")
        if not isinstance(site_key, str) or not site_key:
            raise BadRequest("'siteKey' is required: the site key given to init")
        batch = data.get("batch")
        if not isinstance(batch, list) or not batch:
            raise BadRequest("'batch' must be a non-empty array of events")
        if len(batch) > MAX_WEB_BATCH:
            raise PayloadTooLarge(
                f"batch of {len(batch)} events is over the limit of {MAX_WEB_BATCH}"
            )
        given = data.get("anonymousId")
        if given is not None and not (isinstance(given, str) and _ANONYMOUS_ID.fullmatch(given)):
            raise BadRequest("'anonymousId' must be 8-100 letters, digits, '-', '_' or '.'")
        return site_key, batch, given

    def _cookie_id(self, request: Request) -> str | None:
        value = request.cookies.get(self.settings.visitor_cookie)
        return value if value and _ANONYMOUS_ID.fullmatch(value) else None

    def _new_visitor_id(self) -> str:
        return hashlib.sha256(self._new_id().encode()).hexdigest()[:32]

    @asynccontextmanager
    async def _visitor(self, anonymous_id: str) -> AsyncIterator[None]:
        """One request of a visitor at a time; the lock is dropped when nobody waits."""
        lock, users = self._locks.get(anonymous_id) or (asyncio.Lock(), 0)
        self._locks[anonymous_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[anonymous_id]
            if users == 1:
                del self._locks[anonymous_id]
            else:
                self._locks[anonymous_id] = (lock, users - 1)

    async def _take(self, batch: list[Any], anonymous_id: str) -> dict[str, Any]:
        """Hold, deliver or identify each event in order; the reply body."""
        s = self.settings
        now = int(time.time() * 1000)
        key = visitor_key(anonymous_id)
        found = await self.spool.contact_of(key, now - s.visitor_ttl_s * 1000)
        contact: dict[str, Any] | None = None if found is None else orjson.loads(found)
        to_hold: list[Held] = []
        to_append: list[Normalized] = []
        accepted = duplicates = held = 0
        rejected: list[dict[str, Any]] = []

        async def flush() -> None:
            nonlocal duplicates, held
            if to_hold:
                stored, dropped = await self.spool.hold(to_hold, now, s.anonymous_max_events)
                held += sum(stored)
                duplicates += len(stored) - sum(stored)
                if dropped:
                    self.metrics.anonymous_expired.labels("count").inc(dropped)
                to_hold.clear()
            if to_append:
                stored = await self.spool.append(to_append, now)
                duplicates += len(stored) - sum(stored)
                if self._on_append is not None:
                    self._on_append()
                to_append.clear()

        for index, raw in enumerate(batch):
            errors: list[FieldError] = []
            if isinstance(raw, dict) and raw.get("anonymousId", anonymous_id) != anonymous_id:
                errors.append(FieldError("anonymousId", "differs from the request's visitor"))
            elif isinstance(raw, dict) and raw.get("type") == _IDENTIFY:
                identity = self._identity(raw, errors)
                if identity is not None:
                    await flush()
                    await self._identify(key, identity, now, known=identity == contact)
                    contact = identity
                    accepted += 1
                    continue
            else:
                event = self._with_defaults(raw, now)
                if contact is not None or (isinstance(raw, dict) and raw.get("contact")):
                    if contact is not None and not event.get("contact"):
                        event["contact"] = contact
                    out = normalize_event(event, self.rules, self._new_id)
                    if isinstance(out, Normalized):
                        to_append.append(out)
                        accepted += 1
                        continue
                else:
                    hold = self._checked_anonymous(event, key)
                    if isinstance(hold, Held):
                        to_hold.append(hold)
                        accepted += 1
                        continue
                    out = hold
                errors = out
            item: dict[str, Any] = {"index": index}
            if isinstance(raw, dict) and isinstance(raw.get("messageId"), str):
                item["messageId"] = raw["messageId"]
            item["errors"] = [e.as_dict() for e in errors]
            rejected.append(item)
        await flush()
        counters = self._counters
        counters.accepted += accepted - duplicates
        counters.duplicates += duplicates
        counters.rejected += len(rejected)
        return {
            "accepted": accepted,
            "duplicates": duplicates,
            "held": held,
            "rejected": rejected,
            "anonymousId": anonymous_id,
        }

    def _with_defaults(self, raw: Any, now: int) -> Any:
        """The event with a messageId and timestamp of its own, so a held event keeps both."""
        if not isinstance(raw, dict):
            return raw
        event = dict(raw)
        event.pop("anonymousId", None)
        if event.get("messageId") is None:
            event["messageId"] = self._new_id()
        if event.get("timestamp") is None:
            event["timestamp"] = now
        return event

    def _checked_anonymous(self, event: Any, key: str) -> Held | list[FieldError]:
        """Check an anonymous event as if it named a contact; what the spool holds of it."""
        if not isinstance(event, dict):
            out = normalize_event(event, self.rules, self._new_id)
            assert not isinstance(out, Normalized)
            return out
        out = normalize_event({**event, "contact": _STAND_IN_CONTACT}, self.rules, self._new_id)
        if not isinstance(out, Normalized):
            return out
        event.pop("contact", None)
        body = orjson.dumps(event)
        return Held(out.message_id, True, "held", key, out.event_type, out.event_time, body)

    def _identity(self, raw: dict[str, Any], errors: list[FieldError]) -> dict[str, Any] | None:
        """The contact an identify event names, if Yespo can find a contact by it."""
        given = raw.get("contact")
        if not isinstance(given, dict) or not given:
            errors.append(FieldError("contact", "identify needs a contact: email, phone, ..."))
            return None
        contact = normalize_contact(given, errors)
        if errors:
            return None
        problem = identity_problem(contact, False, self.rules.identifying)
        if problem is None and key_value(contact, self.rules.key_value_order) is None:
            problem = f"has none of the keyValue fields ({', '.join(self.rules.key_value_order)})"
        if problem is not None:
            errors.append(FieldError("contact", problem))
            return None
        return {k: v for k, v in given.items() if v is not None}

    async def _identify(
        self, key: str, contact: dict[str, Any], now: int, known: bool = False
    ) -> None:
        """Remember who the visitor is; deliver what was held, in order, with the contact.

        `known`: the visitor is already remembered as this contact. Pages of logged-in
        visitors identify on every load; with nothing held there is nothing to write then
        (the visitor stays remembered from the first identify, `COLLECTOR_VISITOR_TTL`)."""
        held = await self.spool.held(key)
        self.metrics.identified.inc()
        if known and not held:
            return
        entries: list[Normalized] = []
        invalid = 0
        for record in held:
            event = orjson.loads(record.body)
            event["contact"] = contact
            out = normalize_event(event, self.rules, self._new_id)
            if isinstance(out, Normalized):
                entries.append(out)
            else:
                invalid += 1
                log.warning(
                    "held event %s is not valid with the contact given and is dropped: %s",
                    record.message_id,
                    "; ".join(f"{e.field}: {e.message}" for e in out),
                )
        seqs = [r.seq for r in held]
        await self.spool.identify(key, orjson.dumps(contact), now, seqs, entries)
        if entries:
            self.metrics.anonymous_released.inc(len(entries))
            if self._on_append is not None:
                self._on_append()
        if invalid:
            self.metrics.anonymous_expired.labels("invalid").inc(invalid)


async def sweep_held(settings: Settings, spool: Spool, metrics: Metrics) -> int:
    """Age out held events and remembered visitors; count and return what expired."""
    now = int(time.time() * 1000)
    expired = await spool.expire_held(
        now - settings.anonymous_max_age_s * 1000, now - settings.visitor_ttl_s * 1000
    )
    if expired:
        metrics.anonymous_expired.labels("age").inc(expired)
        log.info("%d anonymous events expired: their visitors did not identify in time", expired)
    return expired


async def sweep_forever(settings: Settings, spool: Spool, metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        try:
            await sweep_held(settings, spool, metrics)
        except SpoolError as exc:
            metrics.errors.labels("spool").inc()
            log.warning("could not age out held events: %s", exc)
